"""Settings of the core, with defaults from the environment.

The IPython layer mirrors these as ``KimiMagic`` traits; plain Python passes a ``Settings``.
The API key is held here but never shown: ``repr`` hides it and nothing writes it out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from .models import DEFAULT_MODEL

DEFAULT_BASE_URL = "https://api.moonshot.ai/v1"

#: Named groups of settings, one ``%config KimiMagic.preset = NAME`` away.
#: "economy" compacts early and cheaply: past 32K tokens the oldest rounds are compressed
#: (the fact check keeps every figure, id and path; the originals stay recallable), two
#: rounds are kept verbatim, and the 1-hour prompt cache is requested so a long think between
#: cells does not resend the context at full price. See benchmarks/RESULTS.md for its cost.
PRESETS: dict[str, dict[str, Any]] = {
    "economy": {"compact_mode": "compress", "compact_at": 32_000, "keep_rounds": 2,
                "cache_ttl": "1h"},
}


@dataclass
class Settings:
    api_key: str = field(default="", repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    system: str = "You are Kimi, a helpful assistant working inside a Jupyter notebook."
    #: Output cap per call (``None``: the client's default, clamped to the window).
    max_completion_tokens: int | None = None
    think: bool | None = None
    effort: str | None = None
    #: Compact when the context passes this: a fraction of the window (<= 1) or tokens.
    compact_at: float = 0.7
    #: What compaction does: "compress" (summary + fact check), "truncate", or "off".
    compact_mode: str = "compress"
    #: Rounds kept verbatim by compress and by the rolling policy.
    keep_rounds: int = 3
    #: Longest summary compress asks for (it aims at ~4:1, capped here): a summary is resent
    #: with every later turn and written at the output price.
    summary_tokens: int = 6000
    #: Tokens the compress fact check may spend on restoring facts verbatim.
    verbatim_budget: int = 4000
    #: Total pin budget: a fraction of the window (<= 1) or tokens.
    pin_budget: float = 0.25
    #: ``None`` for Kimi's 5-minute prompt cache, "1h" to ask for the long TTL.
    cache_ttl: str | None = None
    server: str = "auto"
    timeout: float = 600.0
    max_retries: int = 4
    retry_base: float = 1.0
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Tool calls the model may make in one turn before the loop is stopped.
    tool_steps: int = 8
    #: ``--map`` requests in flight at once; tier-0 accounts allow 1.
    map_concurrency: int = 1
    #: ``--map`` requests started per 60-second window (tier 0: 3); 0 means no limit.
    map_rpm: int = 3
    #: Seconds between Batch API polls.
    batch_poll_seconds: float = 30.0

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = {
            "api_key": os.environ.get("MOONSHOT_API_KEY", ""),
            "base_url": os.environ.get("MOONSHOT_BASE_URL", DEFAULT_BASE_URL),
            "model": os.environ.get("MOONSHOT_MODEL", DEFAULT_MODEL),
        }
        return cls(**{**env, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Settings:
        """Settings from the environment with a named preset applied (``overrides`` win).

        >>> Settings.from_preset("economy").compact_mode
        'truncate'
        """
        if name not in PRESETS:
            raise ValueError(f"no preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls.from_env(**{**PRESETS[name], **overrides})

    def public(self) -> dict[str, Any]:
        """Every setting except the key (what status, exports and the store may show)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}

    def threshold(self, window: int) -> int:
        return _tokens(self.compact_at, window)

    def pin_limit(self, window: int) -> int:
        return _tokens(self.pin_budget, window)


def _tokens(value: float, window: int) -> int:
    return int(value * window) if value <= 1 else int(value)
