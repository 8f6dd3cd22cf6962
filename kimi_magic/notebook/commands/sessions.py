"""Sessions: ``%kimi sessions``, ``use``, ``export`` and ``import``."""

from __future__ import annotations

import time
from typing import Any

from IPython.display import display

from ... import export as exporter
from ...core.session import Session
from ...core.text import counted
from ..display import spent, table_bundle
from .registry import arg, command


def set_system(session: Session, text: str) -> None:
    """``--system TEXT``: set this session's own system prompt, and say so when it changed."""
    if session.set_system(text):
        print(f"System prompt of session {session.name!r} set; other sessions keep theirs.")


@command("sessions")
def sessions(magic: Any, args: Any) -> None:
    """List the stored sessions; * marks the current one."""
    rows = [[("* " if s["name"] == magic.sessions.current_name else "  ") + s["name"],
             s["model"], s["turns"], s["snapshots"],
             spent(s["cost"] or 0.0, priced=s["cost"] is not None or not s["calls"]),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(s["updated"] or 0))]
            for s in magic.sessions.store.sessions()]
    if not rows:
        print("No stored sessions yet.")
        return
    display(table_bundle(["name", "model", "turns", "snapshots", "cost", "updated"], rows,
                         f"Sessions in {magic.sessions.store.path}"), raw=True)


@command("use", arg("name", metavar="NAME", help="Session name (letters, digits, . _ -)."))
def use(magic: Any, args: Any) -> None:
    """Switch the notebook to session NAME (resumed from the store, or started)."""
    known = {s["name"] for s in magic.sessions.store.sessions()}
    s = magic.sessions.use(args.name)
    verb = "Resumed" if args.name in known else "Started"
    print(f"{verb} session {args.name!r}: {counted(len(s.context.rounds), 'round')}, "
          f"{counted(len(s.snapshots), 'snapshot')}.")


@command("export", arg("path", metavar="PATH", help="Where to write: .ipynb, .md or .json "
                       "(quote a path with spaces)."))
def export(magic: Any, args: Any) -> None:
    """Write the current session to a notebook, Markdown or a JSON file %kimi import reads."""
    written = exporter.export(magic.session, args.path)
    print(f"Exported {magic.session.name!r} to {written}.")


@command("import",
         arg("path", metavar="PATH", help="A .json file written by %kimi export."),
         arg("--as", dest="name", metavar="NAME", help="Session name (default: the exported "
             "one)."))
def import_(magic: Any, args: Any) -> None:
    """Load an exported session into the store (it does not switch to it)."""
    s = exporter.load(magic.sessions, args.path, args.name)
    print(f"Imported {args.path} as session {s.name!r}; %kimi use {s.name} to switch.")
