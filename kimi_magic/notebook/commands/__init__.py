"""The ``%kimi`` subcommands, one module per group, each declaring its commands (name,
arguments, help) in the one registry that both dispatches and documents them."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

from . import batches, branching, context, info, pins, sessions, tools  # noqa: F401 (register)
from .registry import COMMANDS, ordered

__all__ = ["COMMANDS", "dispatch", "line_help"]


def dispatch(magic: Any, line: str) -> Any:
    """Run ``%kimi LINE``: the first word names the subcommand, the rest is its arguments."""
    words = line.strip().split(None, 1)
    name, rest = (words[0], words[1] if len(words) > 1 else "") if words else ("status", "")
    found = COMMANDS.get(name)
    if found is None:
        names = ", ".join(c.name for c in ordered())
        raise UsageError(f"unknown subcommand %kimi {name}; try: {names} "
                         "(%kimi help SUBCOMMAND explains one)")
    return found.run(magic, found.grammar.parse(rest))


def line_help() -> str:
    """``%kimi?``: the overview, then every subcommand's full help."""
    parts = [info.overview()]
    parts += [c.grammar.full_help() for c in ordered()]
    return "\n\n".join(parts)
