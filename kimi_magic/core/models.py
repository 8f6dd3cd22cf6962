"""Kimi models and prices as data: one table with its date, overridable at run time.

Windows come from ``GET /v1/models`` when the server reports them; this table is the fallback
and the only place model ids and prices live. Override any entry with
``%config KimiMagic.model_overrides = {"kimi-k3": {"output": 14.0}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import SessionError

#: When the figures below were last checked against Moonshot's published pages.
TABLE_DATE = "2026-12-01"

#: Batch API jobs are billed at this fraction of the on-demand price.
BATCH_DISCOUNT = 0.60

#: Dollars per builtin ``$web_search`` call.
WEB_SEARCH_USD = 0.005

#: Kimi's prompt cache forgets an entry this many seconds after its last hit.
CACHE_TTL_SECONDS = 300.0
#: ... or this many with ``prompt_cache_options`` asking for the long TTL.
CACHE_TTL_LONG_SECONDS = 3600.0


@dataclass(frozen=True)
class Model:
    """What the client needs to know about one model id.

    ``thinking`` is ``"default"`` (on unless disabled), ``"always"`` or ``"never"``.
    Prices are USD per million tokens; ``None`` means unknown (self-hosted servers).
    """

    id: str
    context_length: int
    thinking: str = "never"
    effort: bool = False
    batch: bool = False
    images: bool = True
    cache_hit: float | None = None
    cache_miss: float | None = None
    output: float | None = None
    cache_write: float | None = None
    cache_write_long: float | None = None
    context_from_server: bool = False
    #: Default auto-compaction threshold in tokens (None: 0.7 of the window). A context
    #: resent whole each turn costs more than it is worth past ~100K tokens: with the mask
    #: stage first (pastes become stubs, prose stays, nothing is lost unrecallably) the
    #: benchmark's strategy run puts 100K at 0.70 of seed 000's cost on kimi-k2.6 and 0.52 of
    #: the full history on kimi-k3; 0.7 of kimi-k2.6's window (183K) cost more than seed 000,
    #: and 128K on kimi-k3 0.64 of the full history.
    compact_at: int | None = None

    @property
    def priced(self) -> bool:
        return self.cache_miss is not None and self.output is not None

    def cost(
        self,
        prompt_tokens: int,
        cached_tokens: int = 0,
        completion_tokens: int = 0,
        cache_write_tokens: int = 0,
        *,
        long_ttl: bool = False,
        batch: bool = False,
    ) -> float | None:
        """Dollars for one call; ``prompt_tokens`` includes cached and cache-write tokens."""
        if not self.priced:
            return None
        hit = self.cache_hit if self.cache_hit is not None else self.cache_miss
        write = (self.cache_write_long if long_ttl else self.cache_write) or self.cache_miss
        fresh = max(prompt_tokens - cached_tokens - cache_write_tokens, 0)
        usd = (
            cached_tokens * hit
            + cache_write_tokens * write
            + fresh * self.cache_miss
            + completion_tokens * self.output
        ) / 1e6
        return usd * (BATCH_DISCOUNT if batch else 1.0)


#: The default auto-compaction threshold of today's Kimi models (see ``Model.compact_at``).
COMPACT_AT = 100_000

MODELS: dict[str, Model] = {
    m.id: m
    for m in (
        Model("kimi-k2.6", 262_144, thinking="default", batch=True, compact_at=COMPACT_AT,
              cache_hit=0.16, cache_miss=0.95, output=4.00),
        Model("kimi-k2.7-code", 262_144, thinking="always", batch=True,
              compact_at=COMPACT_AT, cache_hit=0.19, cache_miss=0.95, output=4.00),
        Model("kimi-k2.7-code-highspeed", 262_144, thinking="always", compact_at=COMPACT_AT,
              cache_hit=0.38, cache_miss=1.90, output=8.00),
        Model("kimi-k3", 1_048_576, thinking="always", effort=True, compact_at=COMPACT_AT,
              cache_hit=0.30, cache_miss=3.00, output=15.00,
              cache_write=3.00, cache_write_long=6.00),
        # The K3.1 family bills cache writes the way kimi-k3 does. Moonshot gives the
        # highspeed tier's miss and output prices; its hit and write prices are taken as
        # twice pro's, as every other highspeed tier is priced.
        Model("kimi-k3.1-pro", 1_048_576, thinking="always", effort=True, compact_at=COMPACT_AT,
              cache_hit=0.20, cache_miss=2.00, output=10.00,
              cache_write=2.00, cache_write_long=4.00),
        Model("kimi-k3.1-pro-highspeed", 1_048_576, thinking="always", effort=True,
              compact_at=COMPACT_AT,
              cache_hit=0.40, cache_miss=4.00, output=20.00,
              cache_write=4.00, cache_write_long=8.00),
    )
}

DEFAULT_MODEL = "kimi-k2.6"

#: Ids Moonshot has retired (they answer 404); matched by prefix.
RETIRED_PREFIXES = ("kimi-k2-", "kimi-k2.5", "kimi-latest", "moonshot-v1-")
#: Retired ids users still type from old notebooks (what the refusal is checked with).
RETIRED_EXAMPLES = ("kimi-k2-0905-preview", "moonshot-v1-8k")

#: A window assumed for an unknown model on a server that does not say (self-hosted).
UNKNOWN_CONTEXT_LENGTH = 8_192

EFFORTS = ("low", "high", "max")

#: What ``Model.thinking`` may be.
THINKING = ("default", "always", "never")


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``model_overrides`` as ``resolve`` applies them, or ``ValueError`` naming what is wrong.

    >>> check_overrides({"kimi-k2.6": {"bogus": 1}})
    Traceback (most recent call last):
    ...
    ValueError: ['kimi-k2.6'] has no field 'bogus'; fields: context_length, thinking, \
effort, batch, images, cache_hit, cache_miss, output, cache_write, cache_write_long, \
context_from_server, compact_at
    """
    names = [f.name for f in fields(Model) if f.name != "id"]
    checked: dict[str, dict[str, Any]] = {}
    for model_id, extra in overrides.items():
        where = f"[{model_id!r}]"
        if not isinstance(model_id, str) or not model_id.strip():
            raise ValueError(f"keys must be model ids, not {model_id!r}")
        if not isinstance(extra, Mapping):
            raise ValueError(f"{where} must be a dict of Model fields, e.g. "
                             f"{{'output': 14.0}}, not {extra!r}")
        for key, value in extra.items():
            if key not in names:
                raise ValueError(f"{where} has no field {key!r}; fields: {', '.join(names)}")
            _check_field(f"{where}[{key!r}]", key, value)
        checked[model_id] = dict(extra)
    return checked


def _check_field(where: str, key: str, value: Any) -> None:
    default = next(f.default for f in fields(Model) if f.name == key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "context_length":
        ok, want = number and int(value) == value and value > 0, "a positive whole number"
    elif key == "compact_at":
        ok = value is None or (number and int(value) == value and value > 0)
        want = "a positive whole number of tokens, or None"
    elif key == "thinking":
        ok, want = value in THINKING, " or ".join(map(repr, THINKING))
    elif isinstance(default, bool):
        ok, want = isinstance(value, bool), "True or False"
    else:  # prices in USD per million tokens
        ok, want = value is None or (number and value >= 0), "a price of 0 or more, or None"
    if not ok:
        raise ValueError(f"{where} must be {want}, not {value!r}")


def is_retired(model_id: str) -> bool:
    return model_id.startswith(RETIRED_PREFIXES)


def resolve(
    model_id: str,
    server: Mapping[str, Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Model:
    """The effective ``Model`` for an id: table, then what the server said, then user overrides.

    >>> resolve("kimi-k3").context_length
    1048576
    """
    model = MODELS.get(model_id) or Model(model_id, UNKNOWN_CONTEXT_LENGTH)
    info = (server or {}).get(model_id) or {}
    if info.get("context_length"):
        model = replace(model, context_length=int(info["context_length"]), context_from_server=True)
    if "supports_reasoning" in info and model_id not in MODELS:
        # A reasoning model the table does not know is taken to always think: the one model
        # whose thinking can be switched off is in the table, and sending
        # ``thinking: disabled`` to a model that cannot stop is a request it may refuse.
        model = replace(model, thinking="always" if info["supports_reasoning"] else "never")
    extra = (overrides or {}).get(model_id)
    if extra:
        model = replace(model, **dict(extra))
    return model


def turn_thinking(model: Model, think: bool | None, web: bool) -> tuple[bool | None, str | None]:
    """The thinking switch one turn sends, with a notice when it had to be changed.

    ``think`` is what the cell asked for (``None``: the default); ``web`` says whether the turn
    offers ``$web_search``, which Kimi serves only with thinking disabled. What no model can
    do raises ``SessionError`` before anything is sent.

    >>> turn_thinking(MODELS["kimi-k2.6"], None, web=True)[0]
    False
    """
    if think is False and model.thinking == "always":
        raise SessionError(f"--no-think: {model.id} always thinks; use -m {DEFAULT_MODEL} "
                           "to turn thinking off")
    if not web:
        return think, None
    if model.thinking == "always":
        raise SessionError(f"--web needs thinking disabled ($web_search), but {model.id} "
                           f"always thinks; use -m {DEFAULT_MODEL}")
    if think is True:
        raise SessionError("--web needs thinking disabled ($web_search): drop --think")
    if model.thinking == "default" and think is None:
        return False, (f"--web: Kimi's web search needs thinking off, so {model.id} answers "
                       "this cell without thinking")
    return think, None
