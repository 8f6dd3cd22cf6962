"""Saved contexts and the way back to them: ``SnapshotTree``.

A snapshot is a reference to an immutable ``Context`` (O(1) to take). Each one remembers the
snapshot the session was at when it was taken, so rollbacks and the turns after them grow a
tree; the store keeps where the session is in it across kernel restarts.
"""

from __future__ import annotations

from typing import Any

from . import hints
from .context import Snapshot
from .conversation import Conversation
from .errors import SessionError

__all__ = ["Snapshot", "SnapshotTree"]


class SnapshotTree:
    """The snapshots of one conversation, oldest first, and the one it is at."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.saved: list[Snapshot] = []
        #: The snapshot the conversation is at (its next snapshot's parent).
        self.current: int | None = None

    def load(self, current: int | None) -> None:
        """Read the conversation's snapshots back from the store."""
        c = self.conversation
        self.current = current
        self.saved = [self.from_row(r) for r in c.store.snapshots(c.name)]

    def from_row(self, row: dict[str, Any]) -> Snapshot:
        return Snapshot(row["id"], row["label"], row["time"], row["turns"], row["tokens"],
                        self.conversation.store.context_loader(row["context"]),
                        row["parent"], bool(row["auto"]))

    def take(self, label: str | None = None, *, auto: bool = False) -> Snapshot:
        """Save the current context; O(1): the snapshot shares its immutable messages."""
        c = self.conversation
        with c.lock:
            if label and not auto and any(s.label == label for s in self.saved):
                raise SessionError(f"a snapshot is already labelled {label!r}")
            ctx = c.context
            rounds = len(ctx.rounds)
            held = c.tokens()
            label = label or f"#{len(self.saved) + 1}"
            with c.store.transaction() as conn:
                if ctx.history and ctx.node is None:
                    ctx = c.store.ensure_chain(conn, ctx)
                    c.context = ctx
                parent = self.current
                sid = c.store.add_snapshot(conn, c.name, label, ctx, rounds, held, parent, auto)
                # The session row remembers where we are in the snapshot tree (a restarted
                # kernel links its next snapshot to this one).
                self.current = sid
                try:
                    c.store.save_head(conn, c.name, c.context, c.settings.model, c.state())
                except BaseException:
                    self.current = parent
                    raise
            snap = Snapshot(sid, label, c.clock(), rounds, held, ctx, parent, auto)
            self.saved.append(snap)
            c.events.notify("snapshot", snap)
            return snap

    def here(self) -> Snapshot | None:
        """The snapshot whose context is the live one: where the session is, as every view
        marks it. After a new turn, a compress or a truncate, none is (the snapshot taken
        before a compress holds what it replaced)."""
        ctx = self.conversation.context
        return next((s for s in reversed(self.saved) if s.holds(ctx)), None)

    def tokens(self, snap: Snapshot) -> int:
        """Tokens of ``snap``: for the one the session is at, the live figure (the headline
        and its row must agree as the server's counts refine it), else the recorded one."""
        if snap.holds(self.conversation.context):
            return self.conversation.tokens()
        return snap.tokens

    def find(self, target: int | str | None = None) -> Snapshot:
        """The snapshot with this id or label (default: the latest), or a one-line error."""
        if not self.saved:
            take = hints.command("snapshot", "[LABEL]")
            raise SessionError(f"there are no snapshots yet: {take} takes one")
        if target is None or target == "":
            return self.saved[-1]
        for s in reversed(self.saved):
            if s.label == str(target) or str(s.id) == str(target).lstrip("#"):
                return s
        known = ", ".join(f"{s.id} ({s.label})" for s in self.saved[-5:])
        raise SessionError(f"no snapshot {target!r}; recent ones: {known}")

    def rollback(self, target: int | str | None = None) -> Snapshot:
        """Restore the context of a snapshot (default: the latest).

        The state left behind is snapshotted first (unless a snapshot already holds it), so a
        rollback can itself be undone; new turns then grow a new branch.
        """
        c = self.conversation
        with c.lock:
            snap = self.find(target)
            if not any(s.holds(c.context) for s in self.saved):
                left = self.take(f"before rollback to {snap.label}", auto=True)
                snap = next(s for s in self.saved if s.id == snap.id) if left else snap
            self.current = snap.id
            c.commit(snap.context)
            c.events.notify("rollback", snap)
            return snap
