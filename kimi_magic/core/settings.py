"""Settings of the core: each declared once, with its type, default, environment variable,
help and validation.

Plain Python passes a ``Settings``; the notebook layer generates the ``KimiMagic`` traits that
``%config KimiMagic`` lists from the same declarations (``SETTINGS``), so a value refused here
is refused there with the same one-line message, and nothing changes. The API key is held
here but never shown: ``repr`` hides it and nothing writes it out.
"""

from __future__ import annotations

import copy
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from dataclasses import replace as _replace
from typing import Any

from . import models
from .errors import SettingError
from .models import DEFAULT_MODEL

DEFAULT_BASE_URL = "https://api.moonshot.ai/v1"
DEFAULT_SYSTEM = "You are Kimi, a helpful assistant working inside a Jupyter notebook."

#: Named groups of settings, one ``%config KimiMagic.preset = NAME`` away.
#: "economy" compacts early and cheaply: past 32K tokens large pastes and tool results in
#: older rounds become stubs, then if needed the oldest rounds are compressed (the fact
#: check keeps every figure, id and path; the originals stay recallable), two rounds are
#: kept verbatim, and the 1-hour prompt cache is requested so a long think between
#: cells does not resend the context at full price. See benchmarks/RESULTS.md for its cost.
PRESETS: dict[str, dict[str, Any]] = {
    "economy": {"compact_mode": "compress", "compact_at": 32_000, "keep_rounds": 2,
                "cache_ttl": "1h"},
}


@dataclass(frozen=True)
class Setting:
    """One setting's declaration; ``Settings`` and the ``%config`` traits are made from it.

    ``kind`` is the value's type (``str``, ``int``, ``float``, ``bool`` or ``dict``) and
    ``optional`` whether ``None`` is allowed; both come from the field's annotation.
    ``check`` adds a rule of its own: it returns the value or raises ``ValueError`` with the
    reason, phrased to follow the setting's name.
    """

    name: str = ""
    kind: type = str
    optional: bool = False
    default: Any = None
    help: str = ""
    env: str | None = None
    choices: tuple[Any, ...] = ()
    at_least: float | None = None
    more_than: float | None = None
    check: Callable[[Any], Any] | None = None
    #: Never shown (``%config`` prints ``<set, hidden>``, ``repr`` leaves it out).
    secret: bool = False
    #: Changing it drops the HTTP clients (they were built with the old value).
    reconnect: bool = False

    def validate(self, value: Any) -> Any:
        """The value as stored, or ``SettingError`` saying in one line what is allowed.

        >>> SETTINGS_BY_NAME["tool_steps"].validate(-3)
        Traceback (most recent call last):
        ...
        kimi_magic.core.errors.SettingError: tool_steps must be 1 or more, not -3
        """
        if value is None:
            if self.optional:
                return None
            raise SettingError(f"{self.name} cannot be None")
        if self.choices:
            if value not in self.choices:
                allowed = " or ".join([", ".join(map(repr, self.choices))]
                                      + (["None"] if self.optional else []))
                raise SettingError(f"{self.name} must be {allowed}, not {value!r}")
            return value
        value = self._typed(value)
        if self.at_least is not None and value < self.at_least:
            raise SettingError(f"{self.name} must be {self.at_least:g} or more, not {value!r}")
        if self.more_than is not None and value <= self.more_than:
            raise SettingError(f"{self.name} must be more than {self.more_than:g}, "
                               f"not {value!r}")
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as err:
                raise SettingError(f"{self.name} {err}") from None
        return value

    def _typed(self, value: Any) -> Any:
        kind = self.kind
        if isinstance(value, bool) and kind is not bool:
            ok = False
        elif kind is float:
            ok = isinstance(value, (int, float))
            value = float(value) if ok else value
        else:
            ok = isinstance(value, kind)
            value = str(value) if kind is str and ok else value
        if not ok:
            what = {str: "a string", int: "a whole number", float: "a number",
                    bool: "True or False", dict: "a dict"}[kind]
            shown = "<hidden>" if self.secret else repr(value)
            raise SettingError(f"{self.name} must be {what}"
                               f"{' or None' if self.optional else ''}, not {shown}")
        return value

    def initial(self, environ: typing.Mapping[str, str] | None = None) -> Any:
        """The default: from ``environ`` (e.g. ``os.environ``) when set there, else declared."""
        if self.env and environ is not None and environ.get(self.env):
            try:
                return self.validate(environ[self.env])
            except SettingError as err:
                raise SettingError(f"${self.env}: {err}") from None
        return copy.deepcopy(self.default)


def setting(default: Any, help: str, **declared: Any) -> Any:
    """Declare a ``Settings`` field: its default, help and rules (see ``Setting``)."""
    spec = Setting(default=default, help=help, **declared)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), repr=not spec.secret,
                     metadata={"setting": spec})
    return field(default=default, repr=not spec.secret, metadata={"setting": spec})


def _base_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, not {value!r}")
    return value


def _model_id(value: str) -> str:
    if not value.strip() or value != value.strip():
        raise ValueError(f"must be a model id or 'auto', not {value!r}")
    if models.is_retired(value):
        raise ValueError(f"{value!r} is retired (Moonshot answers 404); today's models: "
                         f"{', '.join(models.MODELS)} or 'auto'")
    return value


@dataclass
class Settings:
    """What a session needs to talk to Kimi and manage its context.

    Every assignment is checked against the declaration below: a bad value raises
    ``SettingError`` and leaves the old one in place.

    >>> Settings(keep_rounds=2).keep_rounds
    2
    """

    api_key: str = setting(
        "", "Moonshot API key (default: $MOONSHOT_API_KEY). Never shown, logged or stored.",
        env="MOONSHOT_API_KEY", secret=True, reconnect=True)
    base_url: str = setting(
        DEFAULT_BASE_URL, "OpenAI-compatible base URL (default: $MOONSHOT_BASE_URL or "
        f"{DEFAULT_BASE_URL}).", env="MOONSHOT_BASE_URL", check=_base_url, reconnect=True)
    model: str = setting(
        DEFAULT_MODEL, "Model id, or 'auto' for the cheapest whose window fits (default: "
        f"$MOONSHOT_MODEL or {DEFAULT_MODEL}).", env="MOONSHOT_MODEL", check=_model_id)
    system: str = setting(
        DEFAULT_SYSTEM, "System prompt of new sessions (and of open ones with no turn yet); "
        "sessions that have started keep theirs (a cell's --system TEXT sets one session's "
        "own).")
    max_completion_tokens: int | None = setting(
        None, "Output cap per call (None: 32768, clamped so input + output fit the window).",
        at_least=1)
    think: bool | None = setting(None, "Thinking on kimi-k2.6 (None: the model's default).")
    effort: str | None = setting(
        None, "kimi-k3 reasoning effort: low, high or max (None: the server's default).",
        choices=models.EFFORTS)
    compact_at: float | None = setting(
        None, "Auto-compact past this fraction of the window (<= 1) or this many tokens (> 1); "
        "None: the model's default, 100K tokens on today's Kimi models (the benchmark: with "
        "the mask stage first, compacting there costs less than seed 000's rolling snapshot "
        "and keeps every fact), else 0.7 of the window.",
        more_than=0)
    compact_model: str | None = setting(
        None, "Model that writes compress summaries (None: the session's own, which reads the "
        "conversation from the prompt cache at the hit price; a cheaper model reads it all "
        "at its miss price and may keep fewer facts).", check=_model_id)
    compact_mode: str = setting(
        "compress", "What auto-compaction does: compress (summary + fact check), truncate, "
        "or off.", choices=("compress", "truncate", "off"))
    keep_rounds: int = setting(3, "Rounds kept verbatim when compacting.", at_least=0)
    mask_tokens: int | None = setting(
        1000, "Compaction's first stage (no model call): in rounds older than keep_rounds, a "
        "tool result or pasted block (log, data dump, code listing) of at least this many "
        "tokens becomes a one-line stub naming its archive id for recall; prose stays. "
        "1000 tokens is about 40 log lines or 80 lines of code: smaller blocks save too "
        "little to be worth a recall. None: never mask.", at_least=1)
    summary_tokens: int = setting(
        6000, "Longest summary compress asks for (it aims at ~4:1; a summary is resent with "
        "every later turn).", at_least=1)
    verbatim_budget: int = setting(
        4000, "Tokens the compress fact check may spend restoring facts verbatim.", at_least=0)
    pin_budget: float = setting(
        0.25, "Total pin budget: a fraction of the window (<= 1) or tokens.", more_than=0)
    cache_ttl: str | None = setting(
        None, "None for Kimi's 5-minute prompt cache, '1h' to request the 1-hour TTL.",
        choices=("1h",))
    server: str = setting(
        "auto", "Server dialect (decides e.g. max_tokens vs max_completion_tokens); 'auto' "
        "detects it.", choices=("auto", "moonshot", "vllm", "llama.cpp", "openai"),
        reconnect=True)
    timeout: float = setting(600.0, "Seconds to wait for a reply.", more_than=0,
                             reconnect=True)
    max_retries: int = setting(4, "Retries for rate limits, overload and 5xx.", at_least=0,
                               reconnect=True)
    retry_base: float = setting(1.0, "First backoff in seconds (doubles, with jitter).",
                                at_least=0, reconnect=True)
    model_overrides: dict[str, dict[str, Any]] = setting(
        {}, "Per-model overrides of the model table, e.g. {'kimi-k3': {'output': 14.0}}; "
        "keys are model ids, values set fields of the table's Model.",
        check=models.check_overrides)
    tool_steps: int = setting(8, "Tool calls the model may make in one turn (--tools).",
                              at_least=1)
    map_concurrency: int = setting(
        1, "--map requests in flight at once (tier-0 accounts: 1).", at_least=1)
    map_rpm: int = setting(
        3, "--map requests started per 60 s (tier 0: 3; 0: no limit).", at_least=0)
    max_call_usd: float | None = setting(
        1.0, "Refuse a call whose worst case (input at the cache-miss price + the output cap) "
        "costs more than this many dollars (None: no limit; --max-cost USD allows one cell).",
        at_least=0)
    budget_usd: float | None = setting(
        None, "Session budget in dollars: a call that could take the session's spending past "
        "it is refused (None: no budget).", at_least=0)
    batch_poll_seconds: float = setting(
        30.0, "Seconds between Batch API polls (--batch).", at_least=0)

    def __setattr__(self, name: str, value: Any) -> None:
        spec = SETTINGS_BY_NAME.get(name)
        if spec is None:
            raise AttributeError(f"no setting {name!r}; settings: {', '.join(SETTINGS_BY_NAME)}")
        super().__setattr__(name, spec.validate(value))

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings whose defaults come from the environment (``MOONSHOT_API_KEY`` and so on).

        >>> Settings.from_env(model="auto").model
        'auto'
        """
        env = {s.name: s.initial(os.environ) for s in SETTINGS if s.env}
        return cls(**{**env, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Settings:
        """Settings from the environment with a named preset applied (``overrides`` win).

        >>> Settings.from_preset("economy").compact_at
        32000.0
        """
        if name not in PRESETS:
            raise SettingError(f"no preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls.from_env(**{**PRESETS[name], **overrides})

    def public(self) -> dict[str, Any]:
        """Every setting except the key (what status, exports and the store may show)."""
        return {s.name: getattr(self, s.name) for s in SETTINGS if not s.secret}

    def threshold(self, window: int, model_default: int | None = None) -> int:
        """Tokens past which auto-compaction fires (``model_default``: the model's own)."""
        if self.compact_at is None:
            # The model's token default, but never past 0.7 of a window overridden small.
            fraction = _tokens(0.7, window)
            return fraction if model_default is None else min(model_default, fraction)
        return _tokens(self.compact_at, window)

    def pin_limit(self, window: int) -> int:
        return _tokens(self.pin_budget, window)


def _declared(cls: type) -> tuple[Setting, ...]:
    """The declarations of ``cls``'s fields, with kind and optional read from the annotations."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        optional = type(None) in args
        kind = next((a for a in args if a is not type(None)), hint)
        out.append(_replace(f.metadata["setting"], name=f.name, optional=optional,
                            kind=typing.get_origin(kind) or kind))
    return tuple(out)


#: Every setting of ``Settings``, in declaration order.
SETTINGS: tuple[Setting, ...] = _declared(Settings)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def _tokens(value: float, window: int) -> int:
    return int(value * window) if value <= 1 else int(value)
