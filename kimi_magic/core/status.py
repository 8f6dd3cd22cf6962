"""The figures the status line and the widget show, as plain data: ``report``.

One place reads them off a conversation (model and window, tokens by layer, fill and the
compaction threshold, spend against the budget, the prompt cache), so every view shows the
same number for the same thing.
"""

from __future__ import annotations

from typing import Any

from .conversation import Conversation
from .tokens import source as tokenizer_source


def report(c: Conversation, *, snapshots: int) -> dict[str, Any]:
    """Everything ``Session.status()`` returns; ``snapshots`` is how many are saved."""
    model = c.model()
    window = model.context_length
    calls = c.accounting.summary()
    held = c.tokens()
    left = c.cache_seconds_left()
    spent = calls["cost_total"]
    return {
        "session": c.name, "model": model.id, "window": window,
        "requested": c.settings.model,
        "model_label": f"auto → {model.id}" if c.settings.model == "auto" else model.id,
        "budget": c.settings.budget_usd, "max_call": c.settings.max_call_usd,
        "budget_left": (None if c.settings.budget_usd is None
                        else c.settings.budget_usd - spent),
        "window_source": "server" if model.context_from_server else "table",
        "tokens": held, "exact": c.accounting.is_exact(c.context),
        "layers": c.accounting.layers(c.context),
        "fill": held / window if window else 0.0,
        "threshold": c.settings.threshold(window, model.compact_at),
        "rounds": len(c.context.rounds), "turns": calls["turns"],
        "pins": [(p.name, p.kind, c.accounting.pin_tokens(p)) for p in c.context.pins],
        "snapshots": snapshots, "summary": c.context.summary is not None,
        "cost_total": calls["cost_total"], "cost_last": calls["cost_last"],
        "priced": model.priced,
        "cache_hit_rate": calls["cache_hit_rate"],
        "cache_seconds_left": left, "cache_warm": left > 0,
        "next_turn_warm": model.cost(held, cached_tokens=held),
        "next_turn_cold": model.cost(held),
        "tokenizer": tokenizer_source(),
    }
