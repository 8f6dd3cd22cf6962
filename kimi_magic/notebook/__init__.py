"""The notebook layer: the extension hooks, the magics, what cells display, the dashboard
widget and progress bars. The only code that imports IPython or ipywidgets."""
