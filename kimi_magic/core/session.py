"""A conversation with Kimi that the kernel keeps: ``Session``.

The API is stateless, so the session holds the context (system prompt, pins, summary,
history), sends it whole every turn, records what each turn cost, and manages the window:
snapshots and rollback, truncate, compress with a fact check, an archive to recall from, and
a rolling policy that compacts in large steps when the context nears the window.

``Session`` is the façade; each job is a part of its own: ``turn.Ask`` (one turn and its
tool loop), ``accounting.Accounting`` (usage, cost, call rows, calibration),
``choice.ModelChoice`` (which model, ``auto`` included), ``compaction.Compaction`` (the
rolling policy, compress, truncate), ``pinning.Pinning`` (pins and their budget),
``snapshots.SnapshotTree``, ``guard.Guard`` (estimates and spending limits),
``status.report`` (the figures views show), ``head.Head`` (the stored head and call
rows), ``connection.Connection`` (the client) and ``events.Events``.

>>> s = Session("demo", Settings(base_url=sim.url, api_key="sk-test"), store=Store(":memory:"))
>>> s.ask("My favourite number is 42.").text
'Noted. (simulated kimi reply #1 to: "My favourite number is 42.")'
>>> turn = s.ask("What is my favourite number?")
>>> "42" in turn.text, len(s.context.rounds), s.cost()["turns"]
(True, 2, 2)
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ..wire.client import KimiClient
from ..wire.errors import KimiError
from ..wire.events import OnEvent
from ..wire.request import Options
from . import branching, hints, status
from .accounting import Accounting, layered
from .choice import ModelChoice
from .compaction import Compaction, CompressResult
from .connection import Connection, connect
from .context import Context, Message, Pin, Snapshot, block
from .errors import SessionError
from .events import Events, Observer
from .guard import Estimate, Guard
from .head import Head
from .models import CACHE_TTL_LONG_SECONDS, CACHE_TTL_SECONDS, Model
from .notebook_context import with_note
from .pinning import Pinning
from .settings import Settings
from .snapshots import SnapshotTree
from .store import Store
from .turn import Ask, Tools, Turn

__all__ = ["CompressResult", "Observer", "Session", "SessionError", "Snapshot", "Tools", "Turn",
           "connect"]


class Session:
    """One conversation: context, snapshots, archive and accounting, persisted in a ``Store``."""

    def __init__(self, name: str = "default", settings: Settings | None = None, *,
                 store: Store | None = None, client: KimiClient | None = None,
                 client_provider: Callable[[], KimiClient] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.settings = settings or Settings.from_env()
        self.store = store if store is not None else Store()
        self.link = Connection(self.settings, client, client_provider)
        self.clock = clock
        self.lock = threading.RLock()
        self.events = Events()
        #: Called before each request to re-render live pins: (context) -> (context, notices).
        self.refresh_pins: Callable[[Context], tuple[Context, list[str]]] | None = None
        #: Makes a progress display ``(total, label)`` for fan-outs and batch waits; the
        #: notebook layer sets one (a widget in a kernel), plain Python shows none.
        self.progress: Callable[[int, str], Any] | None = None
        self.accounting = Accounting(self.settings, clock=clock)
        self.choice = ModelChoice(self.settings, lambda: self.client.models(),
                                  lambda: self.link.ready, lambda: self.tokens())
        self.compaction = Compaction(self)
        self.tree = SnapshotTree(self)
        self.guard = Guard(self)
        self.pinning = Pinning(self)
        self.head = Head(self)
        self.last_call: float | None = None
        self.context: Context
        state = self.head.load()
        if state is not None:
            self.tree.load(state.get("current_snapshot"))

    def __repr__(self) -> str:
        return (f"Session({self.name!r}, model={self.settings.model!r}, "
                f"rounds={len(self.context.rounds)}, tokens={self.tokens():,})")

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def client(self) -> KimiClient:
        return self.link.client

    def drop_client(self) -> None:
        """Forget the HTTP client (after the key, URL or server changed); the next call asks
        the provider again."""
        self.link.drop()

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event, detail)`` after every change; returns an unsubscribe."""
        return self.events.subscribe(observer)

    def model(self, model_id: str | None = None) -> Model:
        """The effective ``Model`` (table, server's ``/v1/models``, overrides)."""
        return self.choice.model(model_id)

    def commit(self, ctx: Context, *, call: dict[str, Any] | None = None,
               archive: tuple[str, list[list[Message]]] | None = None,
               new_history: bool = False) -> Context:
        """Persist ``ctx`` as the head (plus a call row and archive rows) in one transaction."""
        return self.head.commit(ctx, call=call, archive=archive, new_history=new_history)

    def state(self) -> dict[str, Any]:
        """What the store keeps of the session beside its context."""
        return self.head.state()

    # -- tokens and cost ----------------------------------------------------------------------
    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every recorded call, oldest first: chat turns, compress calls, fan-out items."""
        return self.accounting.calls

    @property
    def snapshots(self) -> list[Snapshot]:
        """The saved snapshots, oldest first."""
        return self.tree.saved

    @property
    def current_snapshot(self) -> int | None:
        """The id of the snapshot the session is at in the tree."""
        return self.tree.current

    def tokens(self) -> int:
        """Tokens the context holds: exact if the server counted this very context."""
        return self.accounting.tokens(self.context)

    def layers(self) -> dict[str, int]:
        """Tokens per layer of the context; they sum to ``tokens()``."""
        return self.accounting.layers(self.context)

    def message_tokens(self, m: Message, layer: str = "history") -> int:
        """Tokens of one message, as the layers and the total count it."""
        return self.accounting.message_tokens(m, layer)

    def pin_tokens(self, pin: Pin) -> int:
        """Tokens of one pin, as the pins layer counts it."""
        return self.accounting.pin_tokens(pin)

    def snapshot_tokens(self, snap: Snapshot) -> int:
        """Tokens of a snapshot: the live figure for the one the session is at."""
        return self.tree.tokens(snap)

    def here(self) -> Snapshot | None:
        """The snapshot whose context is the session's now (none after a new turn)."""
        return self.tree.here()

    def count_prefix(self) -> None:
        """After a new pin, summary or system prompt: have the server count the stable
        prefix (system, pins, summary) when it holds a message it has not counted. Free on
        Moonshot; skipped without a key, and left to the next turn's usage when the server
        cannot count (vLLM, llama.cpp)."""
        prefix = [(layer, m) for layer, m in layered(self.context) if layer != "history"]
        if not prefix or all(self.accounting.counted(m) for _, m in prefix):
            return
        if not self.link.ready:
            return
        try:
            n = self.client.count_tokens(self.model().id, [m.data for _, m in prefix])
        except KimiError:
            return
        self.accounting.learn(prefix, n)

    def cache_ttl(self) -> float:
        return CACHE_TTL_LONG_SECONDS if self.settings.cache_ttl else CACHE_TTL_SECONDS

    def cache_seconds_left(self) -> float:
        """Seconds until Kimi's prompt cache probably forgets this context (0 if cold)."""
        if self.last_call is None:
            return 0.0
        return max(0.0, self.last_call + self.cache_ttl() - self.clock())

    def status(self) -> dict[str, Any]:
        """Everything the status line and the widget show, as plain data."""
        return status.report(self, snapshots=len(self.snapshots))

    def cost(self) -> dict[str, Any]:
        """Dollars spent, by model, and the number of recorded calls."""
        return self.accounting.totals()

    def estimate(self, prompt: str = "", *, model: str | None = None,
                 options: Options | None = None, note: str = "") -> Estimate:
        """What ``ask(prompt)`` would send and cost now, by layer, warm and cold; nothing sent.

        With no prompt: the next turn's context alone. ``model`` may be ``auto`` (resolved).
        """
        with self.lock:
            return self.guard.estimate(prompt, model=model, options=options, note=note)

    # -- asking -------------------------------------------------------------------------------
    def ask(self, prompt: str | list[dict[str, Any]], *, model: str | None = None,
            options: Options | None = None, once: bool = False, cell_id: str | None = None,
            on_delta: OnEvent | None = None,
            tools: Tools | None = None, note: str = "",
            max_cost: float | None = None) -> Turn:
        """Send ``prompt`` with the whole context and record the turn (unless ``once``).

        A failed call records nothing: the context is exactly as before. With ``cell_id``,
        a turn that came from the same notebook cell is replaced rather than duplicated.
        ``note`` (what ran in the notebook since the last turn) goes in front of the prompt,
        inside the new user message, so the cached prefix is unchanged. ``max_cost`` raises
        the per-call limit (``settings.max_call_usd``) for this turn and its compaction.
        """
        if note and not (isinstance(prompt, str) and not prompt.strip()):
            prompt = with_note(prompt, note)
        turn = Ask(self, self.compaction, prompt, model=model, options=options, once=once,
                   cell_id=cell_id, on_delta=on_delta, tools=tools)
        with self.lock, self.guard.allowing(max_cost):
            return turn.run()

    def choose_model(self, requested: str | None, base: Context, prompt: str,
                     opts: Options, notices: list[str]) -> Model:
        """The model for ``prompt`` on top of ``base`` (``auto``: the cheapest that fits)."""
        need = self.accounting.tokens(base, Message.of("user", prompt))
        return self.choice.choose(requested, need, opts, notices)

    def request_options(self, opts: Options, model: Model) -> Options:
        """``opts`` with this session's defaults (output cap, thinking, effort, cache TTL)."""
        return self.choice.options(opts, model)

    def record_calls(self, calls: Iterable[dict[str, Any]], *, event: str = "map",
                     detail: Any = None, owner: str | None = None,
                     also: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Record call rows made outside a turn (``accounting.call`` builds them): see
        ``Head.record_calls``."""
        self.head.record_calls(calls, event=event, detail=detail, owner=owner, also=also)

    # -- lifecycle ------------------------------------------------------------------------------
    def compact(self, model: Model | None = None, reason: str = "") -> str:
        """Snapshot, then compress or truncate per ``settings.compact_mode``; one line back."""
        return self.compaction.compact(model, reason)

    def truncate(self, keep_rounds: int | None = None, keep_tokens: int | None = None) -> int:
        """Drop the oldest rounds (archived, recallable); system prompt and pins stay."""
        return self.compaction.truncate(keep_rounds, keep_tokens)

    def compress(self, keep_rounds: int | None = None, *, model: str | None = None,
                 on_delta: OnEvent | None = None,
                 auto: bool = False, max_cost: float | None = None) -> CompressResult:
        """Summarise all but the last ``keep_rounds`` rounds, then restore lost facts."""
        with self.guard.allowing(max_cost):
            return self.compaction.compress(keep_rounds, model=model, on_delta=on_delta,
                                            auto=auto)

    def snapshot(self, label: str | None = None, *, auto: bool = False) -> Snapshot:
        """Save the current context; O(1): the snapshot shares its immutable messages."""
        return self.tree.take(label, auto=auto)

    def find_snapshot(self, target: int | str | None = None) -> Snapshot:
        return self.tree.find(target)

    def rollback(self, target: int | str | None = None) -> Snapshot:
        """Restore the context of a snapshot (default: the latest); itself undoable."""
        return self.tree.rollback(target)

    # -- branching ----------------------------------------------------------------------------
    def fork(self, name: str, snapshot: int | str | None = None) -> Session:
        """A new stored session ``name`` starting from this context (or a snapshot's); this
        session is untouched and the fork shares its stored messages."""
        with self.lock:
            ctx = self.context if snapshot is None else self.tree.find(snapshot).context
            branching.fork(self, name, ctx)
        return Session(name, self.settings, store=self.store, client=self.link.current,
                       client_provider=self.link.provider, clock=self.clock)

    def round(self, n: int) -> list[Message]:
        """Round ``n`` of the history (1-based), every message in full."""
        return branching.round_at(self.context, n)

    def drop(self, n: int) -> list[Message]:
        """Remove round ``n`` (1-based): snapshotted first so rollback undoes it, and archived
        so recall finds it. Returns the dropped round."""
        return branching.drop(self, n)

    def diff(self, a: str, b: str) -> branching.Diff:
        """Compare two snapshots of this session or stored sessions (by id, label or name)."""
        return branching.diff(branching.side(self, a, self.tree.find),
                              branching.side(self, b, self.tree.find))

    def recall(self, query: str, limit: int = 5, *, pin: bool = False) -> list[dict[str, Any]]:
        """Archived rounds (compressed, truncated or replaced away) that best match ``query``."""
        if not query.strip():
            example = hints.command("recall", "learning rate")
            raise SessionError(f"recall needs a query, e.g. {example}")
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
            self.commit(replace(self.context, history=(), summary=None, node=None),
                        archive=("reset", dropped) if dropped else None)
            self.events.notify("reset")

    def set_system(self, text: str) -> bool:
        """Set this session's own system prompt, stored with it; ``""`` removes it.

        Other sessions and the default for new ones (``settings.system``, shared by every
        session of a kernel) keep theirs. Returns whether the prompt changed.
        """
        with self.lock:
            if text == (self.context.system.text if self.context.system else ""):
                return False
            self.commit(replace(self.context, system=Message.of("system", text) if text else None))
            self.count_prefix()
            return True

    # -- pins -------------------------------------------------------------------------------------
    def set_pin(self, pin: Pin) -> None:
        """Add or replace a pin (in place, so the order and the cache prefix stay stable)."""
        self.pinning.set(pin)

    def unpin(self, name: str | None = None, *, all: bool = False) -> list[str]:
        """Remove the pin ``name`` (or every pin with ``all``); the names removed."""
        return self.pinning.drop(name, all=all)

    def history(self) -> list[Message]:
        return list(self.context.messages())

    def history_tokens(self) -> list[int]:
        """Tokens of each message of ``history()``, as the layers count them."""
        return [self.accounting.message_tokens(m, layer) for layer, m in layered(self.context)]

