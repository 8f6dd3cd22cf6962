"""The core: conversation state and its management, with no IPython and no wire format.

Context and messages, the session façade, snapshots, compaction, accounting, the store,
settings, the model table, token estimates and compression live here; every behaviour is
usable and testable from plain Python.
"""
