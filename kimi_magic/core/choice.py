"""Which model answers: ``ModelChoice`` (a named model, or ``auto``: the cheapest that fits).

``auto`` is resolved by ``pick`` from a token count alone, so anything that knows how big a
request will be (a turn, a status line, a compress) can ask which model ``auto`` means now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..wire.errors import KimiError
from ..wire.messages import is_web_search
from ..wire.request import DEFAULT_COMPLETION_TOKENS, Options
from . import hints
from . import models as model_table
from .errors import SessionError
from .models import Model
from .settings import Settings


def offers_web(opts: Options) -> bool:
    """Whether the request offers Kimi's builtin ``$web_search``."""
    return any(is_web_search(t) for t in opts.tools or ())


class ModelChoice:
    """Resolves model ids against the table, the server's ``/v1/models`` and the overrides.

    ``server_models`` returns the server's model list (it may raise ``KimiError``);
    ``can_ask`` says whether asking would not need a key the user has not given.

    >>> choice = ModelChoice(Settings(), lambda: {}, lambda: False)
    >>> choice.model("kimi-k3").context_length
    1048576
    >>> biggest = max(m.context_length for m in model_table.MODELS.values())
    >>> choice.pick(2 * biggest, 1000)[0].context_length == biggest
    True
    """

    def __init__(self, settings: Settings, server_models: Callable[[], Mapping[str, Any]],
                 can_ask: Callable[[], bool],
                 context_tokens: Callable[[], int] = lambda: 0) -> None:
        self.settings = settings
        self.server_models = server_models
        self.can_ask = can_ask
        #: Tokens the context holds now: what ``auto`` must fit when no prompt is known.
        self.context_tokens = context_tokens

    def model(self, model_id: str | None = None) -> Model:
        """The effective ``Model`` (table, server's ``/v1/models``, overrides).

        ``auto`` is the model it would pick now, for the context as it stands: windows,
        thresholds, pin budgets, prices and compress calls then follow that model.
        """
        model_id = model_id or self.settings.model
        if model_id == "auto":
            return self.pick(self.context_tokens(), self.output_reservation())[0]
        return model_table.resolve(model_id, self._server(), self.settings.model_overrides)

    def _server(self) -> Mapping[str, Any]:
        if not self.can_ask():
            return {}
        try:
            return self.server_models()
        except KimiError:
            return {}

    def output_reservation(self, opts: Options | None = None) -> int:
        """The output cap a request with ``opts`` asks for: ``--max-tokens``, else the
        setting, else the default. ``options`` puts it in every request, and ``auto`` plans
        for it, so the room a notice reserves is the ``max_completion_tokens`` sent (less
        only where the window clamps it)."""
        return ((opts.max_completion_tokens if opts else None)
                or self.settings.max_completion_tokens or DEFAULT_COMPLETION_TOKENS)

    def pick(self, need: int, out: int) -> tuple[Model, str]:
        """What ``auto`` means for ``need`` prompt tokens and ``out`` output: model and why."""
        available = set(self._server()) or set(model_table.MODELS)
        candidates = sorted(
            (self.model(m) for m in model_table.MODELS if m in available),
            key=lambda m: (m.cache_miss or 0, m.output or 0))
        for m in candidates:
            if need + out <= m.context_length:
                return m, (f"--model auto picked {m.id}: ~{need:,} + {out:,} tokens fit its "
                           f"{m.context_length:,}-token window at the lowest price")
        biggest = max(candidates, key=lambda m: m.context_length)
        return biggest, (f"--model auto picked {biggest.id}: no window fits ~{need:,} tokens; "
                         "the context will be compacted")

    def choose(self, requested: str | None, need: int, opts: Options,
               notices: list[str]) -> Model:
        """The model for a request of ``need`` tokens, or a one-line ``SessionError``."""
        requested = requested or self.settings.model
        if requested == "auto":
            model, why = self.pick(need, self.output_reservation(opts))
            notices.append(why)
        elif model_table.is_retired(requested):
            raise SessionError(f"model {requested!r} is retired (Moonshot answers 404); "
                               f"{hints.command('models')} lists today's models")
        else:
            model = self.model(requested)
        if opts.effort and not model.effort:
            raise SessionError(f"--effort works only on models with a reasoning-effort "
                               f"setting (kimi-k3); {model.id} has none")
        # Thinking the model cannot do (or stop doing) is refused here, before any request.
        model_table.turn_thinking(model, opts.think, offers_web(opts))
        return model

    def thinking(self, model: Model, opts: Options, notices: list[str]) -> Options:
        """``opts`` with the thinking switch ``model`` needs for them (``--web``: off)."""
        think, notice = model_table.turn_thinking(model, opts.think, offers_web(opts))
        if notice:
            notices.append(notice)
        return replace(opts, think=think)

    def options(self, opts: Options, model: Model) -> Options:
        """``opts`` with the settings' defaults filled in for ``model``."""
        s = self.settings
        return replace(
            opts,
            max_completion_tokens=self.output_reservation(opts),
            think=opts.think if opts.think is not None else s.think,
            effort=(opts.effort or s.effort) if model.effort else opts.effort,
            cache_ttl=opts.cache_ttl or s.cache_ttl,
        )
