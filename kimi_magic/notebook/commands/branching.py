"""Branching: ``%kimi fork``, ``show``, ``drop`` and ``diff``."""

from __future__ import annotations

from typing import Any

from ...core.text import counted
from .registry import arg, command


@command("fork",
         arg("name", metavar="NAME", help="The new session's name (letters, digits, . _ -)."),
         arg("snapshot", nargs="?", metavar="SNAPSHOT",
             help="Snapshot id or label to start from (default: the current context)."))
def fork(magic: Any, args: Any) -> None:
    """Start a new session NAME from the current context or a snapshot, and switch to it.

    The session you fork from is left as it is (%kimi use switches back); the fork shares its
    stored messages, so forking costs no tokens and no copy.

    Example: %kimi fork try-sql "before big change"
    """
    source = magic.session.name
    s = magic.sessions.fork(args.name, args.snapshot or None)
    start = f"snapshot {args.snapshot!r} of {source!r}" if args.snapshot else repr(source)
    print(f"Forked {start} into session {s.name!r} ({counted(len(s.context.rounds), 'round')}, "
          f"~{s.tokens():,} tokens) and switched to it; {source!r} is unchanged "
          f"(%kimi use {source} goes back).")


def _round_arg(help: str) -> Any:
    return arg("round", type=int, metavar="N", help=help)


@command("show", _round_arg("Round number, 1 for the oldest (as notices number them)."))
def show(magic: Any, args: Any) -> None:
    """Print round N of the context in full: the prompt, the reply and any tool calls."""
    for m in magic.session.round(args.round):
        print(f"── {m.role} (~{magic.session.message_tokens(m):,} tokens)")
        if m.reasoning:
            print(f"[reasoning]\n{m.reasoning}\n[/reasoning]")
        if m.text:
            print(m.text)
        for call in m.tool_calls:
            fn = call.get("function", {})
            print(f"[tool call {fn.get('name')}] {fn.get('arguments', '')}")
    print(f"── end of round {args.round}")


@command("drop", _round_arg("Round number, 1 for the oldest (%kimi show N prints it)."))
def drop(magic: Any, args: Any) -> None:
    """Remove round N from the context; later turns no longer see it.

    A snapshot is taken first (%kimi rollback undoes the drop) and the round is archived
    (%kimi recall finds it).
    """
    gone = magic.session.drop(args.round)
    first = " ".join(gone[0].text.split())[:60]
    held = sum(map(magic.session.message_tokens, gone))
    print(f"Dropped round {args.round} ({first!r}, ~{held:,} tokens): "
          "archived for %kimi recall; %kimi rollback undoes it.")


@command("diff",
         arg("a", metavar="A", help="A snapshot id or label, or a session name."),
         arg("b", metavar="B", help="Another snapshot or session."))
def diff(magic: Any, args: Any) -> None:
    """Compare two snapshots or sessions: rounds only in one, rounds in both, tokens, spend.

    Example: %kimi diff main try-sql
    """
    print("\n".join(magic.session.diff(args.a, args.b).lines()))
