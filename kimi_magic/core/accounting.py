"""What calls cost and how many tokens the context holds: ``Accounting``.

One path records every call, whatever made it (a turn, a compress, a fan-out item, a batch
line): usage (the server's, or a calibrated local estimate when it sent none) → cost at the
model's price → a call row → the store. The calibration factor (server's count over the local
estimate, learnt from each exact turn) corrects every later estimate.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from ..wire.reply import Reply, Usage
from . import tokens
from .context import Context
from .models import Model
from .settings import Settings
from .store import Store

#: Calibration stays within these bounds: one odd count must not skew every estimate.
CALIBRATION_BOUNDS = (0.3, 3.0)


class Accounting:
    """Call rows, cost and token counts of one session.

    >>> from kimi_magic.core.models import resolve
    >>> acc = Accounting(Settings(), clock=lambda: 0.0)
    >>> u = Usage(prompt_tokens=1000, completion_tokens=10, exact=True)
    >>> row = acc.call("chat", "kimi-k3", u, acc.cost(resolve("kimi-k3"), u), 1.0)
    >>> (row["kind"], row["prompt_tokens"], row["exact"])
    ('chat', 1000, 1)
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float],
                 calls: list[dict[str, Any]] | None = None, calibration: float = 1.0) -> None:
        self.settings = settings
        self.clock = clock
        #: Every recorded call of the session, oldest first (chat, compress and map rows).
        self.calls: list[dict[str, Any]] = calls if calls is not None else []
        #: Server-counted prompt tokens over the local estimate (1.0 until an exact turn).
        self.calibration = calibration
        self.exact: tuple[Context, int] | None = None

    # -- tokens ---------------------------------------------------------------------------------
    def estimate(self, local_tokens: int) -> int:
        """A local token estimate corrected by the calibration factor."""
        return int(local_tokens * self.calibration)

    def tokens(self, ctx: Context) -> int:
        """Tokens ``ctx`` holds: exact if the server counted this very context."""
        if self.is_exact(ctx):
            return self.exact[1]  # type: ignore[index]
        return self.estimate(ctx.tokens)

    def is_exact(self, ctx: Context) -> bool:
        return bool(self.exact and self.exact[0] is ctx)

    def layers(self, ctx: Context) -> dict[str, int]:
        return {k: self.estimate(v) for k, v in ctx.layers.items()}

    def counted(self, ctx: Context, n: int) -> None:
        """The server counted ``n`` tokens for exactly ``ctx``."""
        self.exact = (ctx, n)

    def calibrate(self, prompt_tokens: int, local_tokens: int) -> None:
        """Learn from an exact count of a prompt estimated locally at ``local_tokens``."""
        if prompt_tokens and local_tokens > 0:
            low, high = CALIBRATION_BOUNDS
            self.calibration = min(high, max(low, prompt_tokens / local_tokens))

    # -- usage and cost ---------------------------------------------------------------------------
    def usage(self, reply: Reply, sent: int) -> Usage:
        """The reply's usage, or (when the server sent none) local estimates marked as such."""
        if reply.usage is not None:
            return reply.usage
        return Usage(prompt_tokens=self.estimate(sent),
                     completion_tokens=tokens.count_message(reply.message), exact=False)

    def cost(self, model: Model, u: Usage, *, batch: bool = False) -> float | None:
        """Dollars for ``u`` on ``model``; the Batch API price with ``batch``."""
        if batch:
            return model.cost(u.prompt_tokens, u.cached_tokens, u.completion_tokens,
                              u.cache_write_tokens, batch=True)
        return model.cost(u.prompt_tokens, u.cached_tokens, u.completion_tokens,
                          u.cache_write_tokens, long_ttl=bool(self.settings.cache_ttl))

    def call(self, kind: str, model: str, u: Usage, cost: float | None, seconds: float,
             cell_id: str | None = None) -> dict[str, Any]:
        """The call row the store keeps for one call (or one turn's calls, summed)."""
        return {"time": self.clock(), "kind": kind, "model": model,
                "prompt_tokens": u.prompt_tokens, "cached_tokens": u.cached_tokens,
                "cache_write_tokens": u.cache_write_tokens,
                "completion_tokens": u.completion_tokens, "cost": cost, "seconds": seconds,
                "exact": int(u.exact), "context_tokens": 0, "cell_id": cell_id}

    # -- recording --------------------------------------------------------------------------------
    def write(self, store: Store, conn: sqlite3.Connection, session: str,
              rows: Iterable[dict[str, Any]]) -> None:
        """Write call rows inside the caller's transaction."""
        for row in rows:
            store.record_turn(conn, session, row)

    def remember(self, session: str, rows: Iterable[dict[str, Any]]) -> None:
        """Keep rows (already committed) in ``calls``."""
        self.calls.extend({"session": session, **row} for row in rows)

    # -- totals -----------------------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """Cost by model and the number of recorded calls."""
        by_model: dict[str, float] = {}
        for t in self.calls:
            if t.get("cost") is not None:
                by_model[t["model"]] = by_model.get(t["model"], 0.0) + t["cost"]
        return {"total": sum(by_model.values()), "by_model": by_model, "turns": len(self.calls)}

    def summary(self) -> dict[str, Any]:
        """What the status shows of the calls: chat turns, cache hit rate, costs."""
        prompt = sum(t["prompt_tokens"] or 0 for t in self.calls)
        cached = sum(t["cached_tokens"] or 0 for t in self.calls)
        costs = [t["cost"] for t in self.calls if t.get("cost") is not None]
        return {"turns": sum(1 for t in self.calls if t.get("kind") == "chat"),
                "cost_total": sum(costs), "cost_last": costs[-1] if costs else None,
                "cache_hit_rate": cached / prompt if prompt else 0.0}
