"""A conversation with Kimi that the kernel keeps: ``Session``.

The API is stateless, so the session holds the context (system prompt, pins, summary,
history), sends it whole every turn, records what each turn cost, and manages the window:
snapshots and rollback, truncate, compress with a fact check, an archive to recall from, and
a rolling policy that compacts in large steps when the context nears the window.

>>> s = Session("demo", Settings(base_url=sim.url, api_key="sk-test"), store=Store(":memory:"))
>>> s.ask("My favourite number is 42.").text
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from ..wire.client import KimiClient
from ..wire.errors import KimiError
from ..wire.reply import Reply, Usage
from ..wire.request import Options, build_request
from . import compress as compression
from . import models as model_table
from . import tokens
from .context import Context, Message, Pin, block
from .errors import SessionError
from .models import Model
from .settings import Settings
from .store import Store

#: Receives (event, detail) after every change: "turn", "pin", "snapshot", "rollback",
#: "compact", "reset", "notice".
Observer = Callable[[str, Any], None]


class Tools(Protocol):
    """What ``ask(tools=...)`` needs: schemas to send and a way to run one call."""

    specs: list[dict[str, Any]]
    max_steps: int

    def run(self, call: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class Snapshot:
    """A saved context: a reference to immutable messages, so taking one is O(1)."""

    id: int
    label: str
    time: float
    turns: int
    tokens: int
    context: Context = field(repr=False)
    parent: int | None = None
    auto: bool = False


@dataclass
class Turn:
    """What one ``ask`` produced and cost."""

    text: str
    reasoning: str
    model: str
    usage: Usage
    cost: float | None
    seconds: float
    context_tokens: int
    window: int
    recorded: bool = True
    replaced: int | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def exact(self) -> bool:
        return self.usage.exact

    @property
    def fill(self) -> float:
        return self.context_tokens / self.window if self.window else 0.0

    def line(self) -> str:
        """The compact status line shown under a reply."""
        u = self.usage
        mark = "" if u.exact else "~"
        cached = f" ({mark}{u.cached_tokens:,} cached)" if u.cached_tokens else ""
        cost = f"${self.cost:.4f}" if self.cost is not None else "cost unknown"
        kind = "exact" if u.exact else "estimated"
        return (f"{self.model} · in {mark}{u.prompt_tokens:,}{cached} / out "
                f"{mark}{u.completion_tokens:,} tokens · {mark}{cost} · context "
                f"{self.fill:.{1 if self.fill < 0.1 else 0}%} of {self.window:,} · {kind} · "
                f"{self.seconds:.1f}s")


@dataclass
class CompressResult:
    tokens_before: int
    tokens_after: int
    rounds: int
    check: compression.CheckResult
    snapshot: Snapshot
    cost: float | None

    def line(self) -> str:
        restored = len(self.check.restored)
        return (f"Compressed {self.rounds} rounds: {self.tokens_before:,} → "
                f"{self.tokens_after:,} tokens; of {self.check.facts} facts (numbers, ids, "
                f"paths, errors) the summary lacked {len(self.check.missing)}, and the fact "
                f"check restored {restored} verbatim"
                + (f", {len(self.check.dropped)} over budget (recallable)"
                   if self.check.dropped else "")
                + f"; snapshot #{self.snapshot.id} taken before.")


@dataclass
class _Exchange:
    """One turn's calls in flight: what it adds to ``base`` and what it has cost so far."""

    base: Context
    new: list[Message]
    usage: Usage = field(default_factory=lambda: Usage(exact=True))
    cost: float | None = 0.0
    seconds: float = 0.0
    tool_log: list[dict[str, Any]] = field(default_factory=list)
    reply: Reply = field(default=None)  # type: ignore[assignment]  # set by the first call


class Session:
    """One conversation: context, snapshots, archive and accounting, persisted in a ``Store``."""

    def __init__(self, name: str = "default", settings: Settings | None = None, *,
                 store: Store | None = None, client: KimiClient | None = None,
                 client_provider: Callable[[], KimiClient] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.settings = settings or Settings.from_env()
        self.store = store if store is not None else Store()
        self._client = client
        self._client_provider = client_provider
        self.clock = clock
        self.lock = threading.RLock()
        self._observers: list[Observer] = []
        #: Called before each request to re-render live pins: (context) -> (context, notices).
        self.refresh_pins: Callable[[Context], tuple[Context, list[str]]] | None = None
        #: Makes a progress display ``(total, label)`` for fan-outs and batch waits; the
        #: notebook layer sets one (a widget in a kernel), plain Python shows none.
        self.progress: Callable[[int, str], Any] | None = None
        self.snapshots: list[Snapshot] = []
        self.turns: list[dict[str, Any]] = []
        self._exact: tuple[Context, int] | None = None
        self._calibration = 1.0
        self.last_call: float | None = None
        self.current_snapshot: int | None = None
        loaded = self.store.load_session(name)
        if loaded:
            self.context, _model, state = loaded
            self.last_call = state.get("last_call")
            self._calibration = state.get("calibration", 1.0)
            self.current_snapshot = state.get("current_snapshot")
            self.snapshots = [self._snapshot_from_row(r) for r in self.store.snapshots(name)]
            self.turns = self.store.turns(name)
        else:
            system = Message.of("system", self.settings.system) if self.settings.system else None
            self.context = Context(system=system)

    def __repr__(self) -> str:
        return (f"Session({self.name!r}, model={self.settings.model!r}, "
                f"rounds={len(self.context.rounds)}, tokens={self.tokens():,})")

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def client(self) -> KimiClient:
        if self._client is None and self._client_provider is not None:
            self._client = self._client_provider()
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event, detail)`` after every change; returns an unsubscribe."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def _notify(self, event: str, detail: Any = None) -> None:
        for observer in list(self._observers):
            try:
                observer(event, detail)
            except Exception:  # a broken view must never break the conversation
                pass

    def model(self, model_id: str | None = None) -> Model:
        """The effective ``Model`` (table, server's ``/v1/models``, overrides)."""
        model_id = model_id or self.settings.model
        server = {}
        if self._client is not None or self.settings.api_key:
            try:
                server = self.client.models()
            except KimiError:
                server = {}
        return model_table.resolve(model_id, server, self.settings.model_overrides)

    def _commit(self, ctx: Context, *, turn: dict[str, Any] | None = None,
                archive: tuple[str, list[list[Message]]] | None = None,
                new_history: bool = False) -> Context:
        """Persist ``ctx`` as the head (plus a turn and archive rows) in one transaction."""
        with self.store.transaction() as conn:
            if new_history:
                ctx = replace(ctx, node=None)
                ctx = self.store.ensure_chain(conn, ctx)
            if archive:
                self.store.archive(conn, self.name, archive[0], archive[1])
            if turn:
                self.store.record_turn(conn, self.name, turn)
            self.store.save_head(conn, self.name, ctx, self.settings.model, self._state())
        self.context = ctx
        if turn:
            self.turns.append({"session": self.name, **turn})
        return ctx

    def _state(self) -> dict[str, Any]:
        return {"model": self.settings.model, "last_call": self.last_call,
                "calibration": self._calibration, "current_snapshot": self.current_snapshot}

    # -- tokens and cost ----------------------------------------------------------------------
    def tokens(self) -> int:
        """Tokens the context holds: exact if the server counted this very context."""
        if self._exact and self._exact[0] is self.context:
            return self._exact[1]
        return int(self.context.tokens * self._calibration)

    @property
    def tokens_exact(self) -> bool:
        return bool(self._exact and self._exact[0] is self.context)

    def layers(self) -> dict[str, int]:
        return {k: int(v * self._calibration) for k, v in self.context.layers.items()}

    def cache_ttl(self) -> float:
        return (model_table.CACHE_TTL_LONG_SECONDS if self.settings.cache_ttl
                else model_table.CACHE_TTL_SECONDS)

    def cache_seconds_left(self) -> float:
        """Seconds until Kimi's prompt cache probably forgets this context (0 if cold)."""
        if self.last_call is None:
            return 0.0
        return max(0.0, self.last_call + self.cache_ttl() - self.clock())

    def status(self) -> dict[str, Any]:
        """Everything the status line and the widget show, as plain data."""
        model = self.model()
        window = model.context_length
        chat = [t for t in self.turns if t.get("kind") == "chat"]
        prompt = sum(t["prompt_tokens"] or 0 for t in self.turns)
        cached = sum(t["cached_tokens"] or 0 for t in self.turns)
        costs = [t["cost"] for t in self.turns if t.get("cost") is not None]
        held = self.tokens()
        warm_cost = model.cost(held, cached_tokens=held)
        cold_cost = model.cost(held)
        return {
            "session": self.name, "model": model.id, "window": window,
            "window_source": "server" if model.context_from_server else "table",
            "tokens": held, "exact": self.tokens_exact, "layers": self.layers(),
            "fill": held / window if window else 0.0,
            "threshold": self.settings.threshold(window),
            "rounds": len(self.context.rounds), "turns": len(chat),
            "pins": [(p.name, p.kind, p.tokens) for p in self.context.pins],
            "snapshots": len(self.snapshots), "summary": self.context.summary is not None,
            "cost_total": sum(costs), "cost_last": costs[-1] if costs else None,
            "priced": model.priced,
            "cache_hit_rate": cached / prompt if prompt else 0.0,
            "cache_seconds_left": self.cache_seconds_left(),
            "cache_warm": self.cache_seconds_left() > 0,
            "next_turn_warm": warm_cost, "next_turn_cold": cold_cost,
            "tokenizer": tokens.source(),
        }

    # -- asking -------------------------------------------------------------------------------
    def ask(self, prompt: str | list[dict[str, Any]], *, model: str | None = None,
            options: Options | None = None, once: bool = False, cell_id: str | None = None,
            on_delta: Callable[[str, str], None] | None = None,
            tools: Tools | None = None) -> Turn:
        """Send ``prompt`` with the whole context and record the turn (unless ``once``).

        A failed call records nothing: the context is exactly as before. With ``cell_id``,
        a turn that came from the same notebook cell is replaced rather than duplicated.
        """
        if isinstance(prompt, str) and not prompt.strip():
            raise SessionError("the prompt is empty: write it in the cell body")
        opts = replace(options) if options else Options()
        with self.lock:
            notices: list[str] = []
            base, replaced, replaced_rounds = self._base_for(cell_id)
            if self.refresh_pins is not None:
                refreshed, pin_notices = self.refresh_pins(base)
                notices += pin_notices
                if refreshed is not base and base is self.context:
                    # Re-rendered pins describe the data, not the conversation: persist them
                    # now (a failed call or --once keeps them too) and go on building on the
                    # live context, so compacting before sending still applies.
                    refreshed = self._commit(refreshed)
                    self._notify("pin", None)
                base = refreshed
            meta = {"cell_id": cell_id} if cell_id else {}
            user = Message({"role": "user", "content": prompt}, meta)
            chosen = self._choose_model(model, base, user, opts, notices)
            if opts.effort and not chosen.effort:
                raise SessionError(f"--effort works only on models with a reasoning-effort "
                                   f"setting (kimi-k3); {chosen.id} has none")
            base = self._fit(base, user, chosen, opts, notices)
            ex = self._converse(chosen, base, user, opts, on_delta, tools, notices)
            turn = Turn(text=ex.new[-1].text, reasoning=ex.new[-1].reasoning, model=chosen.id,
                        usage=ex.usage, cost=ex.cost, seconds=ex.seconds, context_tokens=0,
                        window=chosen.context_length, recorded=not once, replaced=replaced,
                        tool_calls=ex.tool_log, notices=notices,
                        finish_reason=ex.reply.finish_reason)
            self.last_call = self.clock()
            if not once:
                self._record(ex, cell_id, replaced_rounds)
            turn.context_tokens = self.tokens()
            if not once:
                self._after_turn(chosen, turn)
            self._notify("turn", turn)
            return turn

    def _converse(self, chosen: Model, base: Context, user: Message, opts: Options,
                  on_delta: Callable[[str, str], None] | None, tools: Tools | None,
                  notices: list[str]) -> _Exchange:
        """Call the model (and run its tools, step by step) until it gives a final answer."""
        ex = _Exchange(base=base, new=[user])
        messages = list(base.wire()) + [user.data]
        steps = 0
        while True:
            sent = ex.base.tokens + sum(m.tokens for m in ex.new)
            was_current = ex.base is self.context
            reply = self._call(chosen, messages, opts, on_delta, ex.base, ex.new, notices, sent)
            if was_current and ex.base is not self.context:
                # The server refused the length and _call compacted and retried: the turn
                # now extends the compacted context, not the one we started from.
                ex.base = self.context
            usage = reply.usage or self._estimated_usage(sent, reply)
            cost = self._cost(chosen, usage)
            ex.usage.add(usage)
            ex.cost = None if cost is None or ex.cost is None else ex.cost + cost
            ex.seconds += reply.seconds
            ex.reply = reply
            assistant = dict(reply.message)
            if opts.prefix is not None:
                # Partial mode: the reply excludes the prefix; keep them joined, and never
                # keep the "partial" flag in history.
                assistant["content"] = opts.prefix + (assistant.get("content") or "")
            # Usage rides in meta (never sent) so exports can show what each reply cost.
            ex.new.append(Message(assistant, {"model": chosen.id, "cost": cost,
                                              "usage": asdict(usage)}))
            messages.append(assistant)
            if not (tools and reply.tool_calls and reply.finish_reason == "tool_calls"):
                break
            steps += 1
            if steps > tools.max_steps:
                raise SessionError(f"the tool loop passed its limit of {tools.max_steps} "
                                   "steps; nothing was recorded")
            opts = replace(opts, prefix=None)
            for call in reply.tool_calls:
                result = tools.run(call)
                ex.tool_log.append({"call": call, "result": result})
                msg = {"role": "tool", "tool_call_id": call.get("id", ""),
                       "name": call["function"]["name"], "content": result}
                ex.new.append(Message(msg))
                messages.append(msg)
                if on_delta:
                    on_delta("tool_result", json.dumps({"name": msg["name"],
                                                        "result": result[:200]}))
        searches = sum(1 for t in ex.tool_log
                       if t["call"].get("function", {}).get("name") == "$web_search")
        if searches:
            # Billed per call on top of tokens; kept in the turn's cost.
            web_usd = searches * model_table.WEB_SEARCH_USD
            ex.cost = None if ex.cost is None else ex.cost + web_usd
            notices.append(f"$web_search: {searches} call{'s' if searches > 1 else ''}, "
                           f"billed ${model_table.WEB_SEARCH_USD} each (${web_usd:.3f}, "
                           "included in the cost)")
        return ex

    def _record(self, ex: _Exchange, cell_id: str | None,
                replaced_rounds: list[list[Message]]) -> None:
        """Commit the turn — messages, turn row, archive of a replaced round, head — at once."""
        row = self._turn_row("chat", ex.reply.model, ex.usage, ex.cost, ex.seconds, cell_id)
        exact_tokens = None
        if ex.reply.usage is not None and ex.usage.exact:
            exact_tokens = ex.reply.usage.prompt_tokens + ex.reply.usage.completion_tokens
        with self.store.transaction() as conn:
            base = self.store.ensure_chain(conn, ex.base)
            node = self.store.append(conn, base.node if base.history else None, ex.new)
            after = replace(base.append(*ex.new), node=node)
            if replaced_rounds:
                self.store.archive(conn, self.name, "replaced", replaced_rounds)
            row["context_tokens"] = exact_tokens or int(after.tokens * self._calibration)
            self.store.record_turn(conn, self.name, row)
            self.context = after
            self.store.save_head(conn, self.name, after, self.settings.model, self._state())
        self.turns.append({"session": self.name, **row})
        if exact_tokens is not None:
            self._exact = (after, exact_tokens)

    def _base_for(self, cell_id: str | None
                  ) -> tuple[Context, int | None, list[list[Message]]]:
        """The context to build on, without the round an earlier run of this cell produced.

        Returns the context, the replaced round's number (1-based) and that round.
        """
        ctx = self.context
        if not cell_id:
            return ctx, None, []
        rs = ctx.rounds
        for i, r in enumerate(rs):
            if r[0].meta.get("cell_id") == cell_id:
                kept = tuple(m for j, rr in enumerate(rs) if j != i for m in rr)
                # Re-running the last cell (the usual case) keeps the stored chain and the
                # cached prefix; replacing an earlier round starts a new chain.
                node = self._node_before(ctx, len(kept)) if i == len(rs) - 1 else None
                return replace(ctx, history=kept, node=node), i + 1, [r]
        return ctx, None, []

    def _node_before(self, ctx: Context, keep: int) -> int | None:
        if keep == 0 or ctx.node is None:
            return None
        node = ctx.node
        for _ in range(len(ctx.history) - keep):
            row = self.store.conn.execute("SELECT parent FROM nodes WHERE id = ?",
                                          (node,)).fetchone()
            node = row[0] if row else None
        return node

    def _choose_model(self, requested: str | None, base: Context, user: Message,
                      opts: Options, notices: list[str]) -> Model:
        requested = requested or self.settings.model
        if requested != "auto":
            if model_table.is_retired(requested):
                raise SessionError(f"model {requested!r} is retired (Moonshot answers 404); "
                                   "%kimi models lists today's models")
            return self.model(requested)
        need = int((base.tokens + user.tokens) * self._calibration)
        out = opts.max_completion_tokens or 16_384
        available = set(self.client.models()) or set(model_table.MODELS)
        candidates = sorted(
            (self.model(m) for m in model_table.MODELS if m in available),
            key=lambda m: (m.cache_miss or 0, m.output or 0))
        for m in candidates:
            if need + out <= m.context_length:
                notices.append(f"--model auto picked {m.id}: ~{need:,} + {out:,} tokens fit its "
                               f"{m.context_length:,}-token window at the lowest price")
                return m
        biggest = max(candidates, key=lambda m: m.context_length)
        notices.append(f"--model auto picked {biggest.id}: no window fits ~{need:,} tokens; "
                       "the context will be compacted")
        return biggest

    def _fit(self, base: Context, user: Message, model: Model, opts: Options,
             notices: list[str]) -> Context:
        """Compact before sending if estimate + output cap would not fit the window."""
        need = int((base.tokens + user.tokens) * self._calibration)
        cap = opts.max_completion_tokens or self.settings.max_completion_tokens or 4096
        floor = min(cap, model.context_length // 4)
        if need + floor <= model.context_length or self.settings.compact_mode == "off":
            return base
        if base is not self.context:
            return base
        notices.append(f"The context (~{need:,} tokens) would not fit {model.id}'s window "
                       f"with room to answer; compacting first.")
        self.compact(model, reason="before sending: would not fit")
        return self.context

    def _call(self, model: Model, messages: list[dict[str, Any]], opts: Options,
              on_delta: Callable[[str, str], None] | None, base: Context,
              new: list[Message], notices: list[str], sent: int) -> Reply:
        est = int(sent * self._calibration)
        body = build_request(model, messages, self._with_defaults(opts, model), est,
                             self.client.detect_server())
        try:
            return self.client.chat(body, on_delta)
        except KimiError as err:
            if err.kind != "token_limit" or self.settings.compact_mode == "off" or len(new) > 1:
                raise
            if not base.history or base is not self.context:
                raise
        # The server counted more than we estimated: compact once and try again.
        notices.append("The server said the context is too long; compacted and retried once.")
        self.compact(model, reason="token limit from the server")
        messages[:] = list(self.context.wire()) + [new[0].data]
        est = int((self.context.tokens + new[0].tokens) * self._calibration)
        body = build_request(model, messages, self._with_defaults(opts, model), est,
                             self.client.detect_server())
        return self.client.chat(body, on_delta)

    def _with_defaults(self, opts: Options, model: Model) -> Options:
        s = self.settings
        return replace(
            opts,
            max_completion_tokens=opts.max_completion_tokens or s.max_completion_tokens,
            think=opts.think if opts.think is not None else s.think,
            effort=(opts.effort or s.effort) if model.effort else opts.effort,
            cache_ttl=opts.cache_ttl or s.cache_ttl,
        )

    def _cost(self, model: Model, u: Usage) -> float | None:
        return model.cost(u.prompt_tokens, u.cached_tokens, u.completion_tokens,
                          u.cache_write_tokens, long_ttl=bool(self.settings.cache_ttl))

    def _estimated_usage(self, sent: int, reply: Reply) -> Usage:
        """Usage when the server sent none: local estimates, marked as such."""
        return Usage(prompt_tokens=int(sent * self._calibration),
                     completion_tokens=tokens.count_message(reply.message), exact=False)

    def _turn_row(self, kind: str, model: str, u: Usage, cost: float | None, seconds: float,
                  cell_id: str | None = None) -> dict[str, Any]:
        return {"time": self.clock(), "kind": kind, "model": model,
                "prompt_tokens": u.prompt_tokens, "cached_tokens": u.cached_tokens,
                "cache_write_tokens": u.cache_write_tokens,
                "completion_tokens": u.completion_tokens, "cost": cost, "seconds": seconds,
                "exact": int(u.exact), "context_tokens": 0, "cell_id": cell_id}

    def _after_turn(self, model: Model, turn: Turn) -> None:
        """The rolling policy: past the threshold, snapshot and compact in one large step."""
        if turn.usage.exact and turn.usage.prompt_tokens:
            sent = self.context.tokens - self.context.history[-1].tokens
            if sent > 0:
                self._calibration = min(3.0, max(0.3, turn.usage.prompt_tokens / sent))
        threshold = self.settings.threshold(model.context_length)
        if self.settings.compact_mode == "off" or self.tokens() < threshold:
            return
        line = self.compact(model, reason=f"context passed {threshold:,} tokens")
        turn.notices.append(line)

    # -- lifecycle ------------------------------------------------------------------------------
    def compact(self, model: Model | None = None, reason: str = "") -> str:
        """Snapshot, then compress or truncate per ``settings.compact_mode``; one line back."""
        with self.lock:
            before = self.tokens()
            model = model or self.model()
            rs = self.context.rounds
            if not rs:
                line = (f"The context (~{before:,} tokens) is over the threshold but holds no "
                        "history to compact: only the system prompt, pins and summary.")
                self._notify("notice", line)
                return line
            keep = self._rounds_to_keep(rs, self.settings.threshold(model.context_length))
            if self.settings.compact_mode == "truncate":
                self.snapshot(f"auto: before truncate ({reason})" if reason else None, auto=True)
                dropped = self.truncate(keep)
                line = (f"Auto-truncated {dropped} rounds ({reason}): {before:,} → "
                        f"{self.tokens():,} tokens; archived for %kimi recall.")
            else:
                try:
                    result = self.compress(keep, model=model.id, auto=True)
                except (KimiError, SessionError) as err:
                    self.snapshot("auto: before truncate (compress failed)", auto=True)
                    self.truncate(keep)
                    line = (f"Auto-compress failed ({err}); truncated instead: {before:,} → "
                            f"{self.tokens():,} tokens.")
                else:
                    line = f"Auto-compacted ({reason}). " + result.line()
            self._notify("notice", line)
            return line

    def _rounds_to_keep(self, rs: list[list[Message]], threshold: int) -> int:
        """``keep_rounds``, fewer if those rounds alone would fill half the threshold.

        At least one round is always compacted, or compaction would change nothing.
        """
        keep = min(self.settings.keep_rounds, len(rs) - 1)
        while keep > 0 and sum(m.tokens for r in rs[-keep:] for m in r) > threshold // 2:
            keep -= 1
        return keep

    def snapshot(self, label: str | None = None, *, auto: bool = False) -> Snapshot:
        """Save the current context; O(1): the snapshot shares its immutable messages."""
        with self.lock:
            if label and not auto and any(s.label == label for s in self.snapshots):
                raise SessionError(f"a snapshot is already labelled {label!r}")
            ctx = self.context
            turns = len(ctx.rounds)
            held = self.tokens()
            label = label or f"#{len(self.snapshots) + 1}"
            with self.store.transaction() as conn:
                if ctx.history and ctx.node is None:
                    ctx = self.store.ensure_chain(conn, ctx)
                    self.context = ctx
                parent = self.current_snapshot
                sid = self.store.add_snapshot(conn, self.name, label, ctx, turns, held,
                                              parent, auto)
                # The session row remembers where we are in the snapshot tree (a restarted
                # kernel links its next snapshot to this one).
                self.current_snapshot = sid
                try:
                    self.store.save_head(conn, self.name, self.context, self.settings.model,
                                         self._state())
                except BaseException:
                    self.current_snapshot = parent
                    raise
            snap = Snapshot(sid, label, self.clock(), turns, held, ctx, parent, auto)
            self.snapshots.append(snap)
            self._notify("snapshot", snap)
            return snap

    def find_snapshot(self, target: int | str | None = None) -> Snapshot:
        if not self.snapshots:
            raise SessionError("there are no snapshots yet: %kimi snapshot [LABEL] takes one")
        if target is None or target == "":
            return self.snapshots[-1]
        for s in reversed(self.snapshots):
            if s.label == str(target) or str(s.id) == str(target).lstrip("#"):
                return s
        known = ", ".join(f"{s.id} ({s.label})" for s in self.snapshots[-5:])
        raise SessionError(f"no snapshot {target!r}; recent ones: {known}")

    def rollback(self, target: int | str | None = None) -> Snapshot:
        """Restore the context of a snapshot (default: the latest).

        The state left behind is snapshotted first (unless a snapshot already holds it), so a
        rollback can itself be undone; new turns then grow a new branch.
        """
        with self.lock:
            snap = self.find_snapshot(target)
            if not any(s.context is self.context for s in self.snapshots):
                left = self.snapshot(f"before rollback to {snap.label}", auto=True)
                snap = next(s for s in self.snapshots if s.id == snap.id) if left else snap
            self.current_snapshot = snap.id
            self._commit(snap.context)
            self._notify("rollback", snap)
            return snap

    def truncate(self, keep_rounds: int | None = None, keep_tokens: int | None = None) -> int:
        """Drop the oldest rounds (archived, recallable); system prompt and pins stay."""
        if keep_rounds is not None and keep_rounds < 0:
            raise SessionError("--keep-rounds must be 0 or more")
        if keep_tokens is not None and keep_tokens < 0:
            raise SessionError("--keep-tokens must be 0 or more")
        with self.lock:
            rs = self.context.rounds
            if keep_tokens is not None:
                keep, total = 0, 0
                for r in reversed(rs):
                    total += sum(m.tokens for m in r)
                    if total > keep_tokens:
                        break
                    keep += 1
            else:
                keep = self.settings.keep_rounds if keep_rounds is None else keep_rounds
            keep = min(keep, len(rs))
            dropped = rs[: len(rs) - keep]
            if not dropped:
                return 0
            history = tuple(m for r in rs[len(rs) - keep:] for m in r)
            self._commit(replace(self.context, history=history), archive=("truncated", dropped),
                         new_history=True)
            self._notify("compact", {"dropped": len(dropped)})
            return len(dropped)

    def compress(self, keep_rounds: int | None = None, *, model: str | None = None,
                 on_delta: Callable[[str, str], None] | None = None,
                 auto: bool = False) -> CompressResult:
        """Summarise all but the last ``keep_rounds`` rounds, then restore lost facts.

        A snapshot is taken first; a failed call leaves the context untouched.
        """
        keep = self.settings.keep_rounds if keep_rounds is None else keep_rounds
        if keep < 0:
            raise SessionError("--keep-rounds must be 0 or more")
        with self.lock:
            rs = self.context.rounds
            old = rs[: max(len(rs) - keep, 0)]
            if not old:
                raise SessionError(f"nothing to compress: {len(rs)} rounds, keeping the last "
                                   f"{keep}")
            ctx = self.context
            before = self.tokens()
            chosen = self.model(model)
            old_messages = [m for r in old for m in r]
            source = compression.source(ctx.summary, old_messages)
            replaced = sum(m.tokens for m in old_messages) + (
                ctx.summary.tokens if ctx.summary else 0)
            target = compression.target_tokens(replaced, self.settings.summary_tokens)
            cap = compression.output_cap(target, chosen.thinking == "always")
            messages = compression.in_context(ctx.wire(), len(rs) - len(old), target)
            sent = ctx.tokens + tokens.count_message(messages[-1])
            if sent * self._calibration + cap > chosen.context_length:
                # The whole context plus a summary would not fit: send just what it replaces.
                messages = compression.standalone(source, target)
                sent = sum(tokens.count_message(m) for m in messages)
            opts = Options(think=False if chosen.thinking == "default" else None,
                           max_completion_tokens=cap)
            body = build_request(chosen, messages, opts, sent, self.client.detect_server())
            reply = self.client.chat(body, on_delta)
            u = reply.usage or self._estimated_usage(sent, reply)
            budget = self.settings.verbatim_budget
            text, result = compression.check(source, reply.content, budget)
            summary = compression.summary_message(text)
            history = tuple(m for r in rs[len(old):] for m in r)
            snap = self.snapshot("auto: before compress" if auto else None, auto=auto)
            cost = self._cost(chosen, u)
            row = self._turn_row("compress", chosen.id, u, cost, reply.seconds)
            self._commit(replace(ctx, summary=summary, history=history),
                         turn=row, archive=("compressed", old), new_history=True)
            res = CompressResult(before, self.tokens(), len(old), result, snap, cost)
            self._notify("compact", res)
            return res

    def recall(self, query: str, limit: int = 5, *, pin: bool = False) -> list[dict[str, Any]]:
        """Archived rounds (compressed, truncated or replaced away) that best match ``query``."""
        if not query.strip():
            raise SessionError("recall needs a query, e.g. %kimi recall learning rate")
        hits = self.store.search(self.name, query, limit)
        if pin and hits:
            text = "\n\n---\n\n".join(h["text"] for h in hits)
            name = "recall: " + query[:40]
            self.set_pin(Pin(name, "recall", f"archive search {query!r}",
                             Message.of("system", block(name, "recall", query, text)),
                             frozen=True, updated=self.clock()))
        return hits

    def reset(self) -> None:
        """Start afresh: history and summary cleared (archived); system prompt and pins kept."""
        with self.lock:
            dropped = self.context.rounds
            if self.context.summary is not None:
                dropped = [[self.context.summary], *dropped]
            self._commit(replace(self.context, history=(), summary=None, node=None),
                         archive=("reset", dropped) if dropped else None)
            self._notify("reset")

    def set_system(self, text: str) -> bool:
        """Set this session's own system prompt, stored with it; ``""`` removes it.

        Other sessions and the default for new ones (``settings.system``, shared by every
        session of a kernel) keep theirs. Returns whether the prompt changed.
        """
        with self.lock:
            if text == (self.context.system.text if self.context.system else ""):
                return False
            self._commit(replace(self.context, system=Message.of("system", text) if text else None))
            return True

    # -- pins -------------------------------------------------------------------------------------
    def set_pin(self, pin: Pin) -> None:
        """Add or replace a pin (in place, so the order and the cache prefix stay stable)."""
        with self.lock:
            pins = list(self.context.pins)
            for i, p in enumerate(pins):
                if p.name == pin.name:
                    pins[i] = pin
                    break
            else:
                pins.append(pin)
            self._check_pin_budget(pins)
            self._commit(replace(self.context, pins=tuple(pins)))
            self._notify("pin", pin)

    def _check_pin_budget(self, pins: list[Pin]) -> None:
        limit = self.settings.pin_limit(self.model().context_length)
        total = sum(p.tokens for p in pins)
        if total > limit:
            biggest = ", ".join(f"{p.name} ({p.tokens:,})"
                                for p in sorted(pins, key=lambda p: -p.tokens)[:3])
            raise SessionError(f"pins would take ~{total:,} tokens, over the pin budget of "
                               f"{limit:,} (%config KimiMagic.pin_budget); biggest: {biggest}")

    def unpin(self, name: str | None = None, *, all: bool = False) -> list[str]:
        with self.lock:
            if all:
                names = [p.name for p in self.context.pins]
                pins: tuple[Pin, ...] = ()
            else:
                if self.context.pin(name or "") is None:
                    known = ", ".join(p.name for p in self.context.pins) or "none"
                    raise SessionError(f"no pin named {name!r} (pins: {known})")
                names = [name or ""]
                pins = tuple(p for p in self.context.pins if p.name != name)
            self._commit(replace(self.context, pins=pins))
            self._notify("pin", None)
            return names

    # -- history ----------------------------------------------------------------------------
    def history(self) -> list[Message]:
        return list(self.context.messages())

    def cost(self) -> dict[str, Any]:
        by_model: dict[str, float] = {}
        for t in self.turns:
            if t.get("cost") is not None:
                by_model[t["model"]] = by_model.get(t["model"], 0.0) + t["cost"]
        return {"total": sum(by_model.values()), "by_model": by_model, "turns": len(self.turns)}

    def _snapshot_from_row(self, row: dict[str, Any]) -> Snapshot:
        return Snapshot(row["id"], row["label"], row["time"], row["turns"], row["tokens"],
                        self.store.load_context(row["context"]), row["parent"], bool(row["auto"]))


def connect(s: Settings) -> KimiClient:
    """A client for the configured server; a clear error when there is no key."""
    if not s.api_key:
        raise KimiError("no_key", "set MOONSHOT_API_KEY in the environment or "
                        "%config KimiMagic.api_key = '...' (it is never shown or stored)")
    return KimiClient(s.base_url, s.api_key, timeout=s.timeout, max_retries=s.max_retries,
                      retry_base=s.retry_base, server=s.server)
