"""The figures the status line and the widget show, as plain data: ``report``.

One place reads them off a conversation (model and window, tokens by layer, fill and the
compaction threshold, spend against the budget, the prompt cache), so every view shows the
same number for the same thing.
"""

from __future__ import annotations

from typing import Any

from .conversation import Conversation
from .models import MODELS
from .tokens import source as tokenizer_source

#: How the status and the dashboard say where the window size came from.
WINDOW_NOTES = {
    "server": "from the server",
    "table": "from the table",
    "assumed": "assumed: unknown to the table and the server; "
               "KimiMagic.model_overrides can set it",
}


def report(c: Conversation, *, snapshots: int) -> dict[str, Any]:
    """Everything ``Session.status()`` returns; ``snapshots`` is how many are saved."""
    model = c.model()
    window = model.context_length
    # A model neither the table, the server's /v1/models nor an override describes gets a
    # small assumed window: say so, rather than credit the table with a number it lacks.
    source = ("server" if model.context_from_server
              else "table" if model.id in MODELS
              or "context_length" in (c.settings.model_overrides.get(model.id) or {})
              else "assumed")
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
        "window_source": source,
        "window_note": WINDOW_NOTES[source],
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
