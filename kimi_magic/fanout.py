"""Fan-out: one prompt per item of a list, Series or column (``%%kimi --map VAR``).

Each item runs in a throw-away sub-context that shares the session's system prompt and pins
(so the cached prefix is shared) but not its history. Requests run concurrently on the
client's async SDK within two limits (in flight, started per minute; tier-0 safe by
default), retried on 429 by the client's own policy. Results come back in input order; a
failed item is a ``MapFailure`` (a string saying why) and never sinks the rest. Costs are
recorded as turns of kind "map", outside the conversation's history.

>>> map_prompts(session, "Translate to French: {item}", ["cat", "dog"])  # doctest: +ELLIPSIS
['Noted. (... to: "Translate to French: cat")', 'Noted. (... to: "Translate to French: dog")']
>>> [t["kind"] for t in session.calls], session.context.history
(['map', 'map'], ())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .core.context import Context, Message, Pin, block
from .core.errors import SessionError
from .core.interpolate import interpolate
from .core.models import Model
from .core.session import Session
from .core.text import clip
from .wire.errors import KimiError
from .wire.reply import Reply, Usage
from .wire.request import Options, build_request

#: Seconds a rate-limit window lasts (Moonshot counts requests per minute).
WINDOW_SECONDS = 60.0


class MapFailure(str):
    """A failed item's result: reads as an error line and keeps what failed and why."""

    index: int
    item: Any
    kind: str

    def __new__(cls, index: int, item: Any, reason: str, kind: str = "error") -> MapFailure:
        obj = super().__new__(cls, f"[failed] {reason}")
        obj.index, obj.item, obj.kind = index, item, kind
        return obj

    def __repr__(self) -> str:
        return f"MapFailure(#{self.index}: {str(self)!r})"


def fill(prompt: str, item: Any) -> str:
    """The prompt for one item: ``{item}`` (and ``{item.attr}``) replaced, other braces kept.

    A prompt without ``{item}`` gets the item appended, so every request differs.
    """
    if "{item" not in prompt:
        return f"{prompt}\n\n{item}"
    return interpolate(prompt, {"item": item})


def as_items(obj: Any, label: str = "the items") -> tuple[list[Any], Any]:
    """The items to map, and the pandas index to give results (None for a plain list)."""
    kind = type(obj).__name__
    module = type(obj).__module__.split(".")[0]
    if module == "pandas" and kind == "Series":
        return list(obj), obj.index
    if module == "pandas" and kind == "DataFrame":
        raise SessionError(f"{label} is a DataFrame: map one column, e.g. --map df.col or "
                           "--map df['col']")
    if isinstance(obj, (str, bytes, Mapping)) or not isinstance(obj, Iterable):
        raise SessionError(f"{label} is a {kind}: --map needs a list, tuple, Series or "
                           "DataFrame column")
    items = list(obj)
    if not items:
        raise SessionError(f"nothing to map: {label} is empty")
    return items, None


def _shaped(results: list[Any], index: Any, name: str | None) -> Any:
    if index is None:
        return results
    import pandas as pd

    return pd.Series(results, index=index, name=name, dtype=object)


class RateLimit:
    """At most ``per_window`` starts in any ``window`` seconds (0: no limit); async."""

    def __init__(self, per_window: int, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_window = per_window
        self.window = window
        self.clock = clock
        self.starts: deque[float] = deque()
        self._lock: asyncio.Lock | None = None

    async def wait(self) -> None:
        if self.per_window <= 0:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self.clock()
                while self.starts and now - self.starts[0] >= self.window:
                    self.starts.popleft()
                if len(self.starts) < self.per_window:
                    self.starts.append(now)
                    return
                await asyncio.sleep(self.starts[0] + self.window - now)


class TextProgress:
    """Progress as text lines, at most one every ``every`` seconds (terminals, logs)."""

    def __init__(self, total: int, label: str, every: float = 2.0) -> None:
        self.total = total
        self.label = label
        self.every = every
        self._last = 0.0
        self._shown = ""

    def update(self, done: int, failed: int = 0, note: str = "", force: bool = False) -> None:
        text = progress_text(self.total, done, failed, note)
        if text == self._shown:
            return
        now = time.monotonic()
        if force or now - self._last >= self.every:
            print(f"{self.label}: {text}", file=sys.stdout, flush=True)
            self._last, self._shown = now, text

    def close(self, done: int, failed: int = 0, note: str = "") -> None:
        self.update(done, failed, note, force=True)


class _NoProgress:
    def update(self, done: int, failed: int = 0, note: str = "", force: bool = False) -> None:
        pass

    def close(self, done: int, failed: int = 0, note: str = "") -> None:
        pass


def progress_text(total: int, done: int, failed: int = 0, note: str = "") -> str:
    """``"3/10, 1 failed · note"``: what every progress display says."""
    return (f"{done}/{total}" + (f", {failed} failed" if failed else "")
            + (f" · {note}" if note else ""))


def progress_bar(session: Session, total: int, label: str, show: bool | None) -> Any:
    """The progress display of a fan-out or batch wait.

    ``show=None`` uses the session's own ``progress`` factory (the notebook layer sets one:
    a widget in a kernel, text in a terminal) and shows nothing in plain Python; ``True``
    falls back to text lines; ``False`` shows nothing.
    """
    if show is False:
        return _NoProgress()
    if session.progress is not None:
        return session.progress(total, label)
    return TextProgress(total, label) if show else _NoProgress()


def sub_context(session: Session) -> tuple[Context, list[str]]:
    """The session's system prompt and (refreshed) pins, without summary or history."""
    base = session.context
    notices: list[str] = []
    if session.refresh_pins is not None:
        base, notices = session.refresh_pins(base)
    return Context(system=base.system, pins=base.pins), notices


def choose_model(session: Session, requested: str | None, sub: Context, prompts: list[str],
                 opts: Options, notices: list[str]) -> Model:
    """The model for every item (``auto``: by the longest prompt), or a one-line error."""
    return session.choose_model(requested, sub, max(prompts, key=len), opts, notices)


@dataclass
class ItemRequests:
    """The chat request of every item (``build_request`` keyword arguments), one model."""

    model: Model
    bodies: list[dict[str, Any]]
    #: The estimated prompt tokens of each request, for usage the server does not report.
    sent: list[int]
    #: The options every request was built with (the session's defaults filled in).
    options: Options


def item_requests(session: Session, requested: str | None, prompts: list[str], opts: Options,
                  notices: list[str], choose: Callable[..., Model] = choose_model
                  ) -> ItemRequests:
    """Each prompt as a user message after the sub-context, with the session's defaults.

    ``choose`` picks the model (same arguments as ``choose_model``); fan-out and batch
    differ only there.
    """
    sub, refreshed = sub_context(session)
    notices += refreshed
    model = choose(session, requested, sub, prompts, opts, notices)
    prefix = sub.wire()
    full = session.request_options(opts, model)
    server = session.client.detect_server()
    bodies, sent = [], []
    for text in prompts:
        user = Message.of("user", text)
        sent.append(sub.tokens + user.tokens)
        bodies.append(build_request(model, [*prefix, user.data], full, sent[-1], server))
    return ItemRequests(model, bodies, sent, full)


def item_value(i: int, item: Any, reply: Reply, prefix: str | None, as_json: bool) -> Any:
    """An answered item's result: its text (the prefix put back) or, with ``as_json``, the
    parsed value; a ``MapFailure`` when that text is not JSON."""
    text = (prefix or "") + reply.content
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return MapFailure(i, item, f"the reply is not valid JSON: {text[:80]!r}", "json")


class Fanout:
    """One ``--map`` run: builds the requests, runs them within the limits, records costs.

    >>> fan = Fanout(session, "Summarise: {item}", texts); results = fan.run()
    >>> print(fan.line())  # doctest: +ELLIPSIS
    --map on kimi-k2.6: 2 of 2 items answered · in ... · recorded as 'map' turns, not in the history
    """

    def __init__(self, session: Session, prompt: str, items: Any, *, model: str | None = None,
                 options: Options | None = None, concurrency: int | None = None,
                 rpm: int | None = None, progress: bool | None = None,
                 name: str | None = None) -> None:
        if not prompt.strip():
            raise SessionError("the prompt is empty: write it in the cell body")
        self.session = session
        self.items, self.index = as_items(items)
        self.name = name or getattr(items, "name", None)
        self.prompts = [fill(prompt, item) for item in self.items]
        self.options = replace(options or Options(), stream=False, tools=None)
        s = session.settings
        self.concurrency = max(1, concurrency or getattr(s, "map_concurrency", 1))
        self.rpm = getattr(s, "map_rpm", 3) if rpm is None else rpm
        self.show_progress = progress
        self.notices: list[str] = []
        self.replies: list[Reply | None] = [None] * len(self.items)
        self.results: Any = None
        self.failures: list[MapFailure] = []
        self.usage = Usage()
        self.cost: float | None = 0.0
        self.seconds = 0.0
        self.model: Model | None = None
        self._requested = model
        self._sent: list[int] = []

    def requests(self) -> list[dict[str, Any]]:
        """The chat request of every item (``build_request`` keyword arguments)."""
        built = item_requests(self.session, self._requested, self.prompts, self.options,
                              self.notices)
        self.model, self._sent = built.model, built.sent
        # The whole fan-out is checked before its first request, not item by item.
        self.session.guard.check_many("--map", self.model,
                                      [self.session.accounting.estimate(n) for n in self._sent],
                                      built.options)
        return built.bodies

    def run(self) -> Any:
        """Run every item; results in input order (a Series when the items were one)."""
        bodies = self.requests()
        assert self.model is not None
        client = self.session.client
        total = len(bodies)
        progress = progress_bar(self.session, total, f"--map {self.model.id}",
                                self.show_progress)
        state = {"done": 0, "failed": 0}
        outcomes: list[Reply | KimiError | None] = [None] * total
        started = time.perf_counter()

        async def run_all() -> None:
            gate = asyncio.Semaphore(self.concurrency)
            limit = RateLimit(self.rpm)

            async def one(i: int) -> None:
                async with gate:
                    try:
                        outcomes[i] = await client.achat(bodies[i], before_attempt=limit.wait)
                    except KimiError as err:
                        outcomes[i] = err
                        state["failed"] += 1
                    state["done"] += 1

            await asyncio.gather(*(one(i) for i in range(total)))

        future = client.submit(run_all())
        interrupted = False
        try:
            while not future.done():
                concurrent.futures.wait([future], timeout=0.2)
                progress.update(state["done"], state["failed"])
            future.result()
        except KeyboardInterrupt:
            interrupted = True
            future.cancel()
            concurrent.futures.wait([future], timeout=5)
        self.seconds = time.perf_counter() - started
        results = self._collect(outcomes, interrupted)
        progress.close(state["done"], len(self.failures))
        self.results = _shaped(results, self.index, self.name)
        return self.results

    def _collect(self, outcomes: list[Reply | KimiError | None], interrupted: bool) -> list[Any]:
        model = self.model
        assert model is not None
        accounting = self.session.accounting
        results: list[Any] = []
        rows = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, Reply):
                u = accounting.usage(outcome, self._sent[i])
                cost = accounting.cost(model, u)
                self.usage.add(u)
                self.cost = None if cost is None or self.cost is None else self.cost + cost
                rows.append(accounting.call("map", model.id, u, cost, outcome.seconds))
                self.replies[i] = outcome
                results.append(self._value(i, outcome))
            elif isinstance(outcome, KimiError):
                results.append(self._fail(i, outcome.line(), outcome.kind))
            else:
                why = "interrupted before it ran" if interrupted else "no result"
                results.append(self._fail(i, why, "interrupted"))
        if rows:
            self.session.record_calls(rows, detail=self)
        if interrupted:
            self.notices.append(f"Interrupted: {len(rows)} of {len(outcomes)} items finished; "
                                "the rest are marked as failures.")
        return results

    def _value(self, i: int, reply: Reply) -> Any:
        if reply.cut:
            self.notices.append(f"item {i} was cut off at the output cap (--max-tokens)")
        value = item_value(i, self.items[i], reply, self.options.prefix, bool(self.options.json))
        if isinstance(value, MapFailure):
            self.failures.append(value)
        return value

    def _fail(self, i: int, reason: str, kind: str) -> MapFailure:
        failure = MapFailure(i, self.items[i], reason, kind)
        self.failures.append(failure)
        return failure

    def line(self) -> str:
        """One line under the cell: counts, tokens, cost, time."""
        n = len(self.items)
        ok = n - len(self.failures)
        u = self.usage
        cost = f"${self.cost:.4f}" if self.cost is not None else "unpriced"
        mark = "" if u.exact else "~"
        return (f"--map on {self.model.id if self.model else '?'}: {ok} of {n} items answered"
                f"{f', {len(self.failures)} failed' if self.failures else ''} · in "
                f"{mark}{u.prompt_tokens:,} ({mark}{u.cached_tokens:,} cached) / out "
                f"{mark}{u.completion_tokens:,} tokens · {mark}{cost} · {self.seconds:.1f}s "
                "· recorded as 'map' turns, not in the history")



def map_prompts(session: Session, prompt: str, items: Any, *, model: str | None = None,
                options: Options | None = None, concurrency: int | None = None,
                rpm: int | None = None, progress: bool | None = None) -> Any:
    """Run ``prompt`` once per item (``{item}`` filled in); results in input order.

    A list for a list, a Series with the same index for a Series. Failed items are
    ``MapFailure`` strings. ``concurrency``/``rpm`` default to the session's settings.
    """
    return Fanout(session, prompt, items, model=model, options=options,
                  concurrency=concurrency, rpm=rpm, progress=progress).run()


def pin_results(session: Session, items: Any, results: Any, name: str) -> Pin:
    """Pin ``item → result`` pairs into the session in one step (frozen: they do not re-run)."""
    if not name.strip():
        raise SessionError("the pin needs a name: --pin-results NAME")
    item_list = list(items) if not hasattr(items, "tolist") else items.tolist()
    result_list = list(results) if not hasattr(results, "tolist") else results.tolist()
    if len(item_list) != len(result_list):
        raise SessionError(f"{len(item_list)} items but {len(result_list)} results")
    keys = list(results.index) if hasattr(results, "index") and not isinstance(
        results, list) else list(range(len(result_list)))
    body = "\n\n".join(f"[{k}] {clip(item, 300)}\n→ {_as_text(r)}"
                       for k, item, r in zip(keys, item_list, result_list, strict=True))
    source = f"--map results ({len(result_list)} items)"
    pin = Pin(name, "map", source,
              Message.of("system", block(name, "map", source, body)), frozen=True,
              updated=session.clock())
    session.set_pin(pin)
    return pin


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
