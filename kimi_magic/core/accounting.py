"""What calls cost and how many tokens the context holds: ``Accounting``.

One path records every call, whatever made it (a turn, a compress, a fan-out item, a batch
line): usage (the server's, or a calibrated local estimate when it sent none) → cost at the
model's price → a call row → the store. Token figures come from one place, ``message_tokens``:
the server's count of each message it has seen (learnt from every call), else a local
estimate corrected by its layer's calibration factor.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..wire.reply import Reply, Usage
from . import tokens
from .context import Context, Message, Pin
from .models import Model
from .settings import Settings
from .store import Store

#: Calibration stays within these bounds: one odd count must not skew every estimate.
CALIBRATION_BOUNDS = (0.3, 3.0)
#: A count teaches a layer's calibration when that layer holds this share of what was new
#: in it (a pin and a one-line prompt teach the pins'; a pin and a long reply teach nothing).
DOMINANT = 0.9
#: The context's layers, in the order a request sends them.
LAYERS = ("system", "pins", "summary", "history")


def layered(ctx: Context) -> Iterator[tuple[str, Message]]:
    """``(layer, message)`` for every message of ``ctx``, in the order they are sent."""
    if ctx.system is not None:
        yield "system", ctx.system
    for pin in ctx.pins:
        yield "pins", pin.message
    if ctx.summary is not None:
        yield "summary", ctx.summary
    for m in ctx.history:
        yield "history", m


def _tools_key(tools: Any) -> str:
    return hashlib.sha256(json.dumps(tools, sort_keys=True).encode()).hexdigest()


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
        #: Server tokens per local token, per layer (history's is the default factor).
        self.factors: dict[str, float] = {"history": calibration}
        #: The weighted counts each factor was learnt from: layer → (server, local).
        self.seen: dict[str, tuple[float, float]] = {}
        #: Server-counted tokens per message (by content hash), learnt from every call.
        self.known: dict[str, int] = {}
        #: Server-counted tokens of a set of tools schemas (by hash): never in the context.
        self.tools_known: dict[str, int] = {}
        #: Replies counted as generated (``completion_tokens``), until a prompt counts them.
        self.generated: dict[str, int] = {}

    # -- tokens ---------------------------------------------------------------------------------
    # Every token figure a view shows comes from ``message_tokens``: a message the server has
    # counted (its share of a prompt's ``prompt_tokens``) shows that count, any other its local
    # estimate times the calibration factor of its layer. Layers are sums of messages, the
    # total is the sum of the layers, a pin's size is its message's: so they always agree.
    def estimate(self, local_tokens: int, layer: str = "history") -> int:
        """A local token estimate corrected by the calibration factor of ``layer``."""
        return int(local_tokens * self.factor(layer))

    def factor(self, layer: str = "history") -> float:
        """Server tokens per local token for ``layer`` (the history's until it has its own)."""
        return self.factors.get(layer) or self.factors.get("history") or 1.0

    @property
    def calibration(self) -> float:
        """The history's calibration factor (the one persisted and shown)."""
        return self.factor("history")

    @calibration.setter
    def calibration(self, value: float) -> None:
        self.factors["history"] = value

    def message_tokens(self, m: Message, layer: str = "history") -> int:
        """Tokens of one message: the server's count if it counted it, else an estimate."""
        known = self.known.get(m.hash, self.generated.get(m.hash))
        return known if known is not None else self.estimate(m.tokens, layer)

    def layers(self, ctx: Context) -> dict[str, int]:
        """Tokens per layer (system, pins, summary, history); their sum is ``tokens(ctx)``."""
        out = dict.fromkeys(LAYERS, 0)
        for layer, m in layered(ctx):
            out[layer] += self.message_tokens(m, layer)
        return out

    def tokens(self, ctx: Context, *extra: Message) -> int:
        """Tokens ``ctx`` holds (plus ``extra`` messages after it, e.g. the next prompt)."""
        return (sum(self.layers(ctx).values())
                + sum(self.message_tokens(m) for m in extra))

    def tools_tokens(self, tools: Any) -> int:
        """Tokens the server counts for the tools schemas of a request (none without)."""
        if not tools:
            return 0
        known = self.tools_known.get(_tools_key(tools))
        if known is not None:
            return known
        return self.estimate(tokens.count(json.dumps(tools, ensure_ascii=False)))

    def pin_tokens(self, pin: Pin) -> int:
        """Tokens of one pin, as its layer counts it."""
        return self.message_tokens(pin.message, "pins")

    def is_exact(self, ctx: Context) -> bool:
        """Whether the server counted every message of ``ctx``."""
        return all(self.counted(m) for m in ctx.messages())

    def counted(self, m: Message) -> bool:
        """Whether the server has counted ``m`` (in a prompt, or as the reply it generated)."""
        return m.hash in self.known or m.hash in self.generated

    def learn(self, sent: Sequence[tuple[str, Message]], server_tokens: int,
              tools: Any = None) -> None:
        """The server counted ``server_tokens`` for the messages ``sent`` (``(layer,
        message)`` pairs, in order) plus the ``tools`` schemas sent with them.

        What it counted beyond the messages it had counted in earlier prompts is shared
        among the others (by their local estimates, or, when a layer is new to the
        calibration, all to it). A layer's calibration learns only from a count whose new
        messages (nearly) all belong to it, so a CSV pin does not skew prose, and tools
        schemas, which never enter the context, keep a count of their own (learnt once
        per set of schemas), so a tool turn compares like with like.
        """
        if server_tokens <= 0:
            return
        new = list({m.hash: (layer, m) for layer, m in sent if m.hash not in self.known}
                   .values())
        rest = server_tokens - sum(self.known[m.hash] for _, m in sent if m.hash in self.known)
        if tools:
            key = _tools_key(tools)
            if key not in self.tools_known:
                # The messages are text the calibration knows; the schemas take the rest.
                guess = sum(self.message_tokens(m, layer) for layer, m in new)
                self.tools_known[key] = max(0, rest - guess)
            rest -= self.tools_known[key]
        if not new or rest <= 0:
            return
        # A layer whose calibration is not learnt yet (a first pin, a summary) floats: the
        # other new messages keep the figure they had (a reply's generated count, prose at
        # the history's factor) and the floating layer takes what the server counted beyond
        # them, which is what its calibration learns from.
        floating = [(layer, m) for layer, m in new if layer != "history"
                    and layer not in self.seen and m.hash not in self.generated]
        anchored = [(layer, m) for layer, m in new if (layer, m) not in floating]
        held = sum(self.message_tokens(m, layer) for layer, m in anchored)
        if floating and anchored and rest - held > 0:
            for layer, m in anchored:
                self._keep(m, self.message_tokens(m, layer))
            new, rest = floating, rest - held
        local = sum(m.tokens for _, m in new) or 1
        given = 0
        for i, (_, m) in enumerate(new):
            n = rest - given if i == len(new) - 1 else min(rest - given,
                                                            round(rest * m.tokens / local))
            self._keep(m, n)
            given += n
        weight: dict[str, int] = {}
        for layer, m in new:
            weight[layer] = weight.get(layer, 0) + m.tokens
        layer, most = max(weight.items(), key=lambda kv: kv[1])
        if most >= DOMINANT * local and not tools:
            self.calibrate(rest, local, layer)

    def _keep(self, m: Message, n: int) -> None:
        self.known[m.hash] = n
        self.generated.pop(m.hash, None)

    def generated_reply(self, m: Message, completion_tokens: int) -> None:
        """The server generated ``m`` in ``completion_tokens``: its count until the next
        prompt counts it (a reply costs about what it took to generate, plus the message's
        own overhead)."""
        if completion_tokens > 0 and m.hash not in self.known:
            self.generated[m.hash] = completion_tokens + tokens.MESSAGE_OVERHEAD

    def calibrate(self, server_tokens: int, local_tokens: int, layer: str = "history") -> None:
        """Learn from a server count of messages estimated locally at ``local_tokens``.

        Earlier counts keep half their weight at each new one: one odd count moves the factor
        but cannot swing it, and small messages (whose overhead dominates) weigh little.
        """
        if server_tokens <= 0 or local_tokens <= 0:
            return
        seen_server, seen_local = self.seen.get(layer, (0.0, 0.0))
        seen_server = seen_server / 2 + server_tokens
        seen_local = seen_local / 2 + local_tokens
        self.seen[layer] = (seen_server, seen_local)
        low, high = CALIBRATION_BOUNDS
        self.factors[layer] = min(high, max(low, seen_server / seen_local))

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
