"""Advice in the reader's own terms: magics once the notebook layer is loaded, Python otherwise.

Core and wire messages that tell the user what to run name a setting or a command through
``setting`` and ``command``; ``%load_ext kimi_magic`` switches the dialect to the notebook's
and ``%unload_ext`` back, so a plain-Python user is never told to type ``%kimi compress``.
"""

from __future__ import annotations

import re

NOTEBOOK = "notebook"
PYTHON = "python"

#: How a command reads from Python: the call, and whether its argument is a string.
_CALLS = {
    "compress": ("session.compress", False),
    "truncate": ("session.truncate", False),
    "recall": ("session.recall", True),
    "rollback": ("session.rollback", False),
    "snapshot": ("session.snapshot", True),
    "snapshots": ("session.snapshots", False),
    "sessions": ("session.store.sessions", False),
    "use": ("Session", True),
    "models": ("session.client.models", False),
}
#: An argument written as a placeholder (``[LABEL]``): optional, left out of a Python call.
_OPTIONAL = re.compile(r"^\[\w+\]$")

_state = {"dialect": PYTHON}


def use(dialect: str) -> None:
    """Speak ``NOTEBOOK`` or ``PYTHON`` from now on (the extension hooks call this)."""
    if dialect not in (NOTEBOOK, PYTHON):
        raise ValueError(f"no dialect {dialect!r}; dialects: {NOTEBOOK}, {PYTHON}")
    _state["dialect"] = dialect


def dialect() -> str:
    """The dialect advice is written in now."""
    return _state["dialect"]


def setting(name: str, value: str | None = None) -> str:
    """How to set (with ``value``, already written as code) or name the setting ``name``.

    >>> use(PYTHON); setting("max_call_usd", "2")
    'session.settings.max_call_usd = 2'
    """
    where = (f"%config KimiMagic.{name}" if dialect() == NOTEBOOK
             else f"session.settings.{name}")
    return where if value is None else f"{where} = {value}"


def option(name: str, value: str) -> str:
    """How to pass the per-call option ``name`` (``max_cost``: ``--max-cost`` on a cell).

    >>> use(PYTHON); option("max_cost", "0.5")
    'max_cost=0.5 on the call'
    """
    if dialect() == NOTEBOOK:
        return f"--{name.replace('_', '-')} {value} on the cell"
    return f"{name}={value} on the call"


def command(name: str, args: str | int = "") -> str:
    """How to run the command ``name`` (a ``%kimi`` subcommand) with ``args``.

    >>> use(PYTHON); command("recall", "learning rate")
    "session.recall('learning rate')"
    """
    args = str(args)
    if dialect() == NOTEBOOK:
        return f"%kimi {name} {args}".rstrip()
    call, quoted = _CALLS[name]
    if _OPTIONAL.match(args):
        args = ""
    return f"{call}({repr(args) if quoted and args else args})"
