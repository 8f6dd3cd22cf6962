"""Where a session is kept: ``Head`` reads the stored session back and writes to it.

The head is the session's current context plus the state kept beside it (model, last call,
calibration, the snapshot it is at). A change that is not a turn goes through ``commit``:
the context, a call row and archive rows in one transaction, so a crash leaves the last head.
Calls made outside a turn (fan-out items, batch lines) go through ``record_calls``, the one
path for their rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .context import Context, Message
from .conversation import Conversation


class Head:
    """The stored head of one conversation."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation

    def load(self) -> dict[str, Any] | None:
        """Set the conversation's context, last call, calibration and calls from the store
        (a new one gets the default system prompt); the stored state, or None if new."""
        c = self.conversation
        loaded = c.store.load_session(c.name)
        if not loaded:
            system = Message.of("system", c.settings.system) if c.settings.system else None
            c.context = Context(system=system)
            return None
        c.context, _model, state = loaded
        c.last_call = state.get("last_call")
        c.accounting.calibration = state.get("calibration", 1.0)
        c.accounting.factors.update(state.get("calibration_layers") or {})
        c.accounting.calls = c.store.turns(c.name)
        return state

    def state(self) -> dict[str, Any]:
        """What the store keeps of the session beside its context."""
        c = self.conversation
        return {"model": c.settings.model, "last_call": c.last_call,
                "calibration": c.accounting.calibration,
                "calibration_layers": dict(c.accounting.factors),
                "current_snapshot": c.current_snapshot}

    def commit(self, ctx: Context, *, call: dict[str, Any] | None = None,
               archive: tuple[str, list[list[Message]]] | None = None,
               new_history: bool = False) -> Context:
        """Persist ``ctx`` as the head (plus a call row and archive rows) in one transaction."""
        c = self.conversation
        with c.store.transaction() as conn:
            if new_history:
                ctx = replace(ctx, node=None)
                ctx = c.store.ensure_chain(conn, ctx)
            if archive:
                c.store.archive(conn, c.name, archive[0], archive[1])
            if call:
                c.accounting.write(c.store, conn, c.name, [call])
            c.store.save_head(conn, c.name, ctx, c.settings.model, self.state())
        c.context = ctx
        if call:
            c.accounting.remember(c.name, [call])
        return ctx

    def record_calls(self, calls: Iterable[dict[str, Any]], *, event: str = "map",
                     detail: Any = None, owner: str | None = None,
                     also: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Record call rows made outside a turn (``accounting.call`` builds them).

        The rows go to the store under ``owner`` (default: this session) in one transaction,
        with ``also`` run inside it; observers hear ``event`` when ``detail`` is given.
        """
        c = self.conversation
        rows = list(calls)
        owner = owner or c.name
        with c.lock:
            with c.store.transaction() as conn:
                c.accounting.write(c.store, conn, owner, rows)
                if also is not None:
                    also(conn)
            if owner == c.name:
                c.accounting.remember(owner, rows)
        if detail is not None:
            c.events.notify(event, detail)
