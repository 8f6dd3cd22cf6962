"""The context's lifecycle: snapshots, rollback, compress, truncate, reset, history, recall."""

from __future__ import annotations

import time
from typing import Any

from IPython.display import display

from ...core import masking
from ...core.text import clip, counted
from ..display import StreamView, history_bundle, snapshot_line, table_bundle
from .registry import arg, command, one_of


@command("history")
def history(magic: Any, args: Any) -> None:
    """List the messages the next turn sends: role, the start of the text, tokens."""
    s = magic.session
    display(history_bundle(s.name, s.history(), s.history_tokens()), raw=True)


@command("reset")
def reset(magic: Any, args: Any) -> None:
    """Clear the history and summary (archived for %kimi recall); keep system prompt and pins."""
    magic.session.reset()
    print(f"Session {magic.session.name!r} reset: history and summary cleared (archived "
          "for %kimi recall); system prompt and pins kept.")


@command("snapshot", arg("label", nargs="?", metavar="LABEL",
                         help="A name for it (quote it to use spaces)."))
def snapshot(magic: Any, args: Any) -> None:
    """Save the context as it is now (instant); %kimi rollback returns to it.

    Example: %kimi snapshot "before big change"
    """
    snap = magic.session.snapshot(args.label or None)
    print(snapshot_line(magic.session, snap))


@command("snapshots")
def snapshots(magic: Any, args: Any) -> None:
    """List the snapshots: id, label, time, rounds, tokens, parent; → marks the current one."""
    s = magic.session
    if not s.snapshots:
        print("No snapshots yet: %kimi snapshot [LABEL] takes one.")
        return
    here = s.here()
    rows = [[("→ " if snap is here else "  ") + str(snap.id), snap.label,
             time.strftime("%H:%M:%S", time.localtime(snap.time)), snap.rounds,
             f"{s.snapshot_tokens(snap):,}", snap.parent or "", "auto" if snap.auto else ""]
            for snap in s.snapshots]
    display(table_bundle(["id", "label", "time", "rounds", "tokens", "parent", ""], rows,
                         f"Snapshots of {s.name}"), raw=True)


@command("rollback", arg("target", nargs="?", metavar="ID|LABEL",
                         help="Snapshot id or label (default: the latest snapshot)."))
def rollback(magic: Any, args: Any) -> None:
    """Go back to a snapshot; the state you leave is kept as a snapshot too."""
    snap = magic.session.rollback(args.target or None)
    print(snapshot_line(magic.session, snap, rolled_back=True) + " The state you left is kept "
          "as a snapshot too. "
          "This restores the conversation, not the kernel's variables: code that ran "
          "(yours or --agent's) has left them as they are.")


@command("compress", arg("--keep-rounds", type=int, dest="keep_rounds", metavar="N",
                         help="Rounds kept verbatim (default: KimiMagic.keep_rounds)."))
def compress(magic: Any, args: Any) -> None:
    """Summarise older rounds with the model, keeping the last rounds verbatim.

    The same policy as auto-compaction: first, with no model call, large pasted blocks and
    tool results of those rounds become stubs (KimiMagic.mask_tokens); then the summary. A
    snapshot is taken before each; the originals are archived for %kimi recall, and facts
    the summary lost are restored from them. A summary not smaller than the rounds it would
    replace is not used: the rounds stay.
    """
    view = StreamView(fmt="markdown")
    with view.unrecorded_on_failure():
        res = magic.session.compress(args.keep_rounds, on_delta=view)
    view.close()
    print(res.line())


@command("truncate", one_of(
    arg("--keep-rounds", type=int, dest="keep_rounds", metavar="N",
        help="Keep the last N rounds (default: KimiMagic.keep_rounds)."),
    arg("--keep-tokens", type=int, dest="keep_tokens", metavar="N",
        help="Keep as many recent rounds as fit in N tokens.")))
def truncate(magic: Any, args: Any) -> None:
    """Drop older rounds without a model call (archived for %kimi recall)."""
    before = magic.session.tokens()
    n = magic.session.truncate(args.keep_rounds, args.keep_tokens)
    print(f"Truncated {counted(n, 'round')}: ~{before:,} → ~{magic.session.tokens():,} tokens "
          "(archived for %kimi recall).")


@command("recall",
         arg("query", nargs="+", metavar="QUERY", help="The query: words to search the "
             "archive for."),
         arg("--limit", type=int, default=5, metavar="N", help="Most matches shown (5)."),
         arg("--pin", action="store_true", help="Pin the matches back into the context."))
def recall(magic: Any, args: Any) -> None:
    """Search the rounds that compress, truncate and reset archived, and the blocks the mask
    stage moved out (a query naming a stub's id, e.g. mask-3f9a2c0d1e, prints it in full).

    Example: %kimi recall "revenue by region" --pin
    """
    query = " ".join(args.query)
    hits = magic.session.recall(query, args.limit, pin=args.pin)
    if not hits:
        print(f"Nothing in the archive matches {query!r}.")
        return
    rows = [[h["id"], h["reason"], clip(h["text"], 160)] for h in hits]
    display(table_bundle(["archive id", "why archived", "text"], rows,
                         f"Recalled for {query!r}"), raw=True)
    for h in hits:
        if masking.names(query, h["text"]):
            # A stub named this block: give it back whole, not clipped like a search hit.
            print(h["text"])
    if args.pin:
        print(f"Pinned {len(hits)} recalled rounds as 'recall: {query[:40]}'.")
