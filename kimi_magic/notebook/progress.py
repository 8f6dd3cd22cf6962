"""Progress bars for fan-outs and batch waits: an ipywidgets ``IntProgress`` in a kernel,
text lines in a terminal IPython. Sessions opened by the magic get ``bar`` as their
``progress`` factory."""

from __future__ import annotations

from typing import Any

from ..fanout import TextProgress, progress_text


class WidgetProgress:
    """An ``IntProgress`` with a counts label beside it, coloured by outcome when closed."""

    def __init__(self, total: int, label: str) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.total = total
        self._bar = widgets.IntProgress(value=0, min=0, max=max(total, 1),
                                        description=label[:20])
        self._note = widgets.Label(value=f"0/{total}")
        display(widgets.HBox([self._bar, self._note]))

    def update(self, done: int, failed: int = 0, note: str = "", force: bool = False) -> None:
        self._bar.value = done
        self._bar.bar_style = "warning" if failed else ""
        self._note.value = progress_text(self.total, done, failed, note)

    def close(self, done: int, failed: int = 0, note: str = "") -> None:
        self.update(done, failed, note)
        self._bar.bar_style = "danger" if failed == self.total else (
            "warning" if failed else "success")


def bar(total: int, label: str) -> Any:
    """A widget inside a kernel, text lines in a terminal IPython."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        return WidgetProgress(total, label)
    return TextProgress(total, label)
