"""Branching a conversation: fork it into a new session, look at or drop one round, and
compare two contexts (snapshots or sessions).

A fork writes only a head row: the store is content-addressed and histories are node chains,
so the new session shares every message with the one it came from, and the original is left
exactly as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import hints
from .context import Context, Message, Snapshot
from .conversation import Conversation
from .errors import SessionError
from .store import Store
from .text import counted

#: What a session name may be (it names a row in the store and a ``%kimi use`` argument).
SESSION_NAME = re.compile(r"^[\w.\-]{1,64}$")


def check_name(name: str) -> str:
    """``name`` if it is a valid session name, else a one-line error."""
    if not SESSION_NAME.match(name):
        raise SessionError(f"invalid session name {name!r}: use letters, digits, . _ -")
    return name


def fork(c: Conversation, name: str, ctx: Context) -> Context:
    """Store a new session ``name`` holding ``ctx`` (``c``'s context or one of its snapshots').

    Refuses a name already stored; the new session starts with no snapshots and no spend.
    Returns the context the fork holds.
    """
    check_name(name)
    if name == c.name or any(s["name"] == name for s in c.store.sessions()):
        raise SessionError(f"a session named {name!r} already exists: fork needs a new name "
                           f"({hints.command('use', name)} switches to it)")
    with c.lock:
        with c.store.transaction() as conn:
            ctx = c.store.ensure_chain(conn, ctx)
            state = {"model": c.settings.model, "last_call": None,
                     "calibration": c.accounting.calibration, "current_snapshot": None,
                     "forked_from": c.name}
            c.store.save_head(conn, name, ctx, c.settings.model, state)
        c.events.notify("fork", {"name": name})
        return ctx


def round_at(ctx: Context, n: int) -> list[Message]:
    """Round ``n`` (1-based, as notices and ``%kimi show`` number them) or a one-line error."""
    rs = ctx.rounds
    if not rs:
        raise SessionError("the context has no rounds yet")
    if not 1 <= n <= len(rs):
        raise SessionError(f"no round {n}: the context has rounds 1 to {len(rs)}")
    return rs[n - 1]


def drop(c: Conversation, n: int) -> list[Message]:
    """Remove round ``n`` from the context: snapshotted first (rollback undoes it) and
    archived (``recall`` finds it). Returns the dropped round."""
    with c.lock:
        gone = round_at(c.context, n)
        c.snapshot(f"before drop of round {n}", auto=True)
        rs = c.context.rounds
        history = tuple(m for i, r in enumerate(rs) if i != n - 1 for m in r)
        c.commit(replace(c.context, history=history), archive=("dropped", [gone]),
                 new_history=True)
        c.events.notify("compact", {"dropped": 1})
        return gone


@dataclass(frozen=True)
class Side:
    """One side of a diff: what it is called, its context, its tokens (as the status and the
    snapshots table count them) and what it has cost so far."""

    label: str
    context: Context
    tokens: int
    spent: float | None = None


@dataclass(frozen=True)
class Diff:
    """Two contexts compared round by round (a round is the same when its messages are)."""

    a: Side
    b: Side
    common: int
    only_a: list[tuple[int, list[Message]]]
    only_b: list[tuple[int, list[Message]]]

    def lines(self) -> list[str]:
        """The comparison as plain lines: sizes, spend, then the rounds only one side has."""
        out = []
        for tag, side, only in (("A", self.a, self.only_a), ("B", self.b, self.only_b)):
            spent = "" if side.spent is None else f", ${side.spent:.4f} spent"
            out.append(f"{tag} {side.label}: {counted(len(side.context.rounds), 'round')}, "
                       f"~{side.tokens:,} tokens{spent}; {len(only)} only in {tag}")
        out.append(f"{counted(self.common, 'round')} in both")
        for tag, only in (("A", self.only_a), ("B", self.only_b)):
            for n, r in only:
                out.append(f"only in {tag}: round {n}: {' '.join(r[0].text.split())[:100]}")
        return out


def _key(r: list[Message]) -> tuple[str, ...]:
    return tuple(m.hash for m in r)


def diff(a: Side, b: Side) -> Diff:
    """Compare two contexts: rounds in both, rounds only in one (numbered as in that one)."""
    keys_a = {_key(r) for r in a.context.rounds}
    keys_b = {_key(r) for r in b.context.rounds}
    only_a = [(i, r) for i, r in enumerate(a.context.rounds, 1) if _key(r) not in keys_b]
    only_b = [(i, r) for i, r in enumerate(b.context.rounds, 1) if _key(r) not in keys_a]
    return Diff(a, b, len(keys_a & keys_b), only_a, only_b)


def side(c: Conversation, target: str, find: Callable[[str], Snapshot]) -> Side:
    """A snapshot of ``c`` (id or label, looked up with ``find``) or a stored session, by name,
    as a side of a diff."""
    try:
        snap = find(target)
        held = c.tokens() if snap.holds(c.context) else snap.tokens
        return Side(f"snapshot #{snap.id} {snap.label!r}", snap.context, held)
    except SessionError:
        pass
    store: Store = c.store
    spent = {s["name"]: s["cost"] for s in store.sessions()}
    if target == c.name:
        return Side(f"session {target!r}", c.context, c.tokens(), spent.get(target, 0.0))
    loaded = store.load_session(target)
    if loaded is None:
        raise SessionError(f"{target!r} is neither a snapshot of {c.name!r} nor a stored "
                           f"session ({hints.command('snapshots')} and {hints.command('sessions')} "
                           "list them)")
    # Counted with this session's figures: a fork shares its messages, so the server's counts
    # of them apply; the rest is estimated at this session's calibration.
    return Side(f"session {target!r}", loaded[0], c.accounting.tokens(loaded[0]),
                spent.get(target, 0.0))
