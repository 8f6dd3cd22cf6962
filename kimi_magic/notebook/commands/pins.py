"""Pins: ``%kimi pin``, ``unpin``, ``pins`` and the ``%%kimi_pin NAME`` cell."""

from __future__ import annotations

import inspect
import time
from typing import Any

from IPython.display import display

from ... import pins
from ...core.errors import SessionError
from ...core.session import Session
from ..display import table_bundle
from .registry import Grammar, arg, command


def pin_and_say(magic: Any, session: Session, target: str, name: str | None = None,
                max_tokens: int | None = None, frozen: bool = False) -> None:
    """Pin a variable, expression or file into ``session`` and say what it cost."""
    pin = pins.pin(session, target, magic.shell.user_ns, name=name, max_tokens=max_tokens,
                   frozen=frozen)
    print(f"Pinned {pin.name!r} ({pin.kind}, ~{session.pin_tokens(pin):,} tokens"
          f"{', frozen' if pin.frozen else ''}).")


@command("pin",
         arg("target", metavar="EXPR_OR_PATH", help="The target: a variable or "
             "expression (df, df.head()), or a file path (text, code, an image)."),
         arg("--as", dest="name", metavar="NAME", help="Name of the pin (default: the target)."),
         arg("--max-tokens", type=int, dest="max_tokens", metavar="N",
             help="Cap this pin at N tokens (default: its share of the pin budget)."),
         arg("--frozen", action="store_true", help="Keep the value as pinned now instead of "
             "refreshing it from the variable before each turn."))
def pin(magic: Any, args: Any) -> None:
    """Pin a variable or file into the context: sent with every turn, refreshed when it changes.

    Pins sit at the front of the prompt (cached by Kimi) and are never compressed away.
    Example: %kimi pin df --as "sales frame" --max-tokens 2000
    """
    pin_and_say(magic, magic.session, args.target, args.name, args.max_tokens, args.frozen)


@command("unpin",
         arg("name", nargs="?", metavar="NAME", help="The pin to remove."),
         arg("--all", action="store_true", help="Remove every pin."))
def unpin(magic: Any, args: Any) -> None:
    """Remove a pin (or every pin with --all) from the context."""
    if (args.name is None) == (not args.all):
        raise SessionError("usage: %kimi unpin NAME or %kimi unpin --all")
    names = (magic.session.unpin(all=True) if args.all else magic.session.unpin(args.name))
    print(f"Unpinned {', '.join(names) or 'nothing'}.")


@command("pins")
def list_pins(magic: Any, args: Any) -> None:
    """List the pins: kind, tokens, source, last refresh, live or frozen."""
    s = magic.session
    current = s.context.pins
    if not current:
        print("No pins: %kimi pin VARIABLE_OR_PATH adds one.")
        return
    rows = [[p.name, p.kind, f"~{s.pin_tokens(p):,}", p.source,
             time.strftime("%H:%M:%S", time.localtime(p.updated)) if p.updated else "",
             "frozen" if p.frozen else "live"] for p in current]
    display(table_bundle(["name", "kind", "tokens", "source", "updated", ""], rows, "Pins"),
            raw=True)


PIN_CELL = Grammar("%%kimi_pin", [
    arg("name", metavar="NAME", help="Name of the pin (%kimi unpin NAME removes it)."),
], inspect.cleandoc("""
    Pin the cell's text into the current session's context under NAME: conventions, a
    glossary, a schema — anything every later turn should see.

    The text is sent as typed (no {name} substitution), kept at the front of the prompt
    where Kimi caches it, and never compressed away. Running the cell again replaces it.

    Example:
        %%kimi_pin conventions
        Use pathlib, type hints and SI units.
    """))


def pin_cell(magic: Any, args: Any, cell: str) -> None:
    """``%%kimi_pin NAME``: pin the cell body as text."""
    made = pins.pin_text(magic.session, args.name, cell)
    print(f"Pinned {made.name!r} (text, ~{magic.session.pin_tokens(made):,} tokens).")
