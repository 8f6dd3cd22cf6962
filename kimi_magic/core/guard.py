"""Knowing before spending: ``Estimate`` (what the next call would send and cost) and
``Guard`` (refuses a call over the per-call limit or the session's budget).

Both work from local token counts (calibrated by the server's earlier counts), so nothing is
sent to find out what sending would cost. The worst case a guard checks is the whole input at
the cache-miss price plus the output cap at the output price: the most the call can cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..wire.request import DEFAULT_COMPLETION_TOKENS, Options
from . import hints
from .context import Message
from .errors import SessionError
from .models import BATCH_DISCOUNT, Model
from .notebook_context import with_note


class CostRefused(SessionError):
    """A call refused by the per-call limit or the budget; nothing was sent."""


def output_cap(model: Model, opts: Options, input_tokens: int) -> int:
    """The output cap the request would carry (as ``build_request`` clamps it)."""
    room = max(model.context_length - input_tokens, 1)
    return max(1, min(opts.max_completion_tokens or DEFAULT_COMPLETION_TOKENS, room))


def worst_cost(model: Model, input_tokens: int, cap: int) -> float | None:
    """Input at the cache-miss price plus the whole output cap; ``None`` when unpriced."""
    return model.cost(input_tokens, 0, cap)


def usd(value: float | None) -> str:
    """Dollars for a one-line message ("unpriced" when unknown)."""
    return "unpriced" if value is None else f"${value:.4f}"


@dataclass
class Estimate:
    """What the next call would send and cost, as plain data."""

    requested: str
    model: str
    window: int
    priced: bool
    layers: dict[str, int]
    input_tokens: int
    cached_tokens: int
    cache_warm: bool
    cache_seconds_left: float
    output_cap: int
    cost_warm: float | None
    cost_cold: float | None
    compacts_first: bool
    threshold: int
    compacts_after: bool
    compact_model: str
    spent: float
    budget: float | None
    max_call: float | None
    notices: list[str] = field(default_factory=list)

    @property
    def worst(self) -> float | None:
        """The most the call can cost: ``cost_cold`` (every input token a cache miss)."""
        return self.cost_cold

    @property
    def model_label(self) -> str:
        """``auto → kimi-k2.6`` when auto chose, else the model id."""
        return f"{self.requested} → {self.model}" if self.requested != self.model else self.model


class Guard:
    """The per-call limit (``max_call_usd``) and the session budget (``budget_usd``).

    ``allowing(usd)`` raises the per-call limit for the calls made inside it (``--max-cost``
    on a cell covers that cell's compress calls too).
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.allow: float | None = None

    @contextmanager
    def allowing(self, limit: float | None) -> Iterator[None]:
        before, self.allow = self.allow, limit if limit is not None else self.allow
        try:
            yield
        finally:
            self.allow = before

    def limit(self) -> float | None:
        return self.allow if self.allow is not None else self.session.settings.max_call_usd

    def spent(self) -> float:
        return float(self.session.accounting.summary()["cost_total"] or 0.0)

    def check(self, what: str, model: Model, worst: float | None, detail: str = "", *,
              total: float | None = None, pending: float = 0.0) -> None:
        """Refuse (``CostRefused``, one line, nothing sent) a call of cost ``worst`` over
        the per-call limit, or calls of cost ``total`` (default: ``worst``) that would take
        the session past its budget. ``pending`` is spent but not recorded yet (the earlier
        requests of a tool loop). Unpriced models are never refused."""
        if worst is None:
            return
        total = worst if total is None else total
        limit = self.limit()
        about = f"{what} on {model.id}" + (f" ({detail})" if detail else "")
        if limit is not None and worst > limit:
            each = " each" if total != worst else ""
            shown, cap = _apart(worst, limit)
            raise CostRefused(
                f"refused: {about} could cost up to {shown}{each}, over the per-call "
                f"limit of {cap}; nothing was sent. Allow it with "
                f"{hints.option('max_cost', _up(worst))} or "
                f"{hints.setting('max_call_usd', _up(worst))}")
        budget = self.session.settings.budget_usd
        spent = self.spent() + pending
        if budget is not None and spent + total > budget:
            raise CostRefused(
                f"refused: {about} could cost up to {usd(total)}, and {usd(spent)} of the "
                f"session budget of {usd(budget)} is spent; nothing was sent. Raise it with "
                f"{hints.setting('budget_usd', _up(spent + total))} (None: no budget)")

    def check_many(self, what: str, model: Model, inputs: list[int], opts: Options, *,
                   batch: bool = False) -> None:
        """Check a fan-out whole, before its first request: each item against the per-call
        limit, their sum against the budget (at the Batch API's price with ``batch``)."""
        scale = BATCH_DISCOUNT if batch else 1.0
        worsts = [worst_cost(model, n, output_cap(model, opts, n)) for n in inputs]
        if not worsts or any(w is None for w in worsts):
            return
        priced = [w * scale for w in worsts if w is not None]
        self.check(what, model, max(priced), f"{len(inputs)} requests", total=sum(priced))

    def estimate(self, prompt: str = "", *, model: str | None = None,
                 options: Options | None = None, note: str = "") -> Estimate:
        """What ``ask(prompt)`` would send and cost now, without sending anything."""
        s = self.session
        if note and prompt.strip():
            prompt = with_note(prompt, note)
        opts = options or Options()
        ctx = s.context
        user = Message.of("user", prompt) if prompt else None
        notices: list[str] = []
        tools = s.accounting.tools_tokens(opts.tools)
        chosen = s.choice.choose(model, s.accounting.tokens(ctx, *([user] if user else []))
                                 + tools, opts, notices)
        full = s.choice.options(opts, chosen)
        layers = s.layers()
        layers["prompt"] = s.accounting.message_tokens(user) if user else 0
        if tools:
            # Sent with the request and counted by the server, never kept in the context.
            layers["tools"] = tools
        total = sum(layers.values())
        cap = output_cap(chosen, full, total)
        left = s.cache_seconds_left()
        prefix = total - layers["prompt"] - tools
        floor = min(opts.max_completion_tokens or s.settings.max_completion_tokens or 4096,
                    chosen.context_length // 4)
        compacts_first = (s.settings.compact_mode != "off"
                          and total + floor > chosen.context_length)
        threshold = s.settings.threshold(chosen.context_length, chosen.compact_at)
        long_ttl = bool(s.settings.cache_ttl)
        return Estimate(
            requested=model or s.settings.model, model=chosen.id,
            window=chosen.context_length, priced=chosen.priced, layers=layers,
            input_tokens=total, cached_tokens=prefix if left > 0 else 0, cache_warm=left > 0,
            cache_seconds_left=left, output_cap=cap,
            cost_warm=chosen.cost(total, prefix, cap, long_ttl=long_ttl),
            cost_cold=worst_cost(chosen, total, cap), compacts_first=compacts_first,
            threshold=threshold,
            compacts_after=s.settings.compact_mode != "off" and total > threshold,
            compact_model=s.settings.compact_model or chosen.id,
            spent=self.spent(), budget=s.settings.budget_usd, max_call=self.limit(),
            notices=notices)


def _apart(worst: float, limit: float) -> tuple[str, str]:
    """``worst`` and the ``limit`` it passes, with enough decimals to tell them apart.

    >>> _apart(0.00061, 0.0006)
    ('$0.00061', '$0.00060')
    >>> _apart(0.1312, 0.05)
    ('$0.1312', '$0.0500')
    """
    digits = 4
    while f"{worst:.{digits}f}" == f"{limit:.{digits}f}" and digits < 8:
        digits += 1
    return f"${worst:.{digits}f}", f"${limit:.{digits}f}"


def _up(value: float) -> str:
    """The next whole cent above ``value``, to suggest as a limit."""
    return f"{math.floor(value * 100 + 1) / 100:.2f}"
