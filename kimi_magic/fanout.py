"""Fan-out: one prompt per item of a list, Series or column (``%%kimi --map VAR``).

Each item runs in a throw-away sub-context that shares the session's system prompt and pins
(so the cached prefix is shared) but not its history. Requests run concurrently on the
client's async SDK within two limits (in flight, started per minute; tier-0 safe by
default), retried on 429 by the client's own policy. Results come back in input order; a
failed item is a ``MapFailure`` (a string saying why) and never sinks the rest. Costs are
recorded as turns of kind "map", outside the conversation's history.

>>> results = map_prompts(session, "Translate to French: {item}", ["cat", "dog"])
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from .client import KimiError, Options, Reply, Usage, build_request
from .context import Context, Message, Pin
from .interpolate import interpolate
from .models import Model
from .pins import block
from .session import Session, SessionError

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


class Progress:
    """A progress bar: an ipywidgets ``IntProgress`` in a kernel, text lines elsewhere.

    ``show=None`` picks: widget in a kernel, text in a terminal IPython, nothing in plain
    Python; ``True`` forces text outside a kernel; ``False`` shows nothing.
    """

    def __init__(self, total: int, label: str, show: bool | None = None,
                 every: float = 2.0) -> None:
        self.total = total
        self.label = label
        self.every = every
        self._last = 0.0
        self._shown = ""
        self._bar: Any = None
        self._text_mode = False
        shell = _shell()
        if show is False or (show is None and shell is None):
            return
        if shell is not None and getattr(shell, "kernel", None) is not None:
            import ipywidgets as widgets
            from IPython.display import display

            self._bar = widgets.IntProgress(value=0, min=0, max=max(total, 1),
                                            description=label[:20])
            self._note = widgets.Label(value=f"0/{total}")
            display(widgets.HBox([self._bar, self._note]))
        else:
            self._text_mode = True

    def update(self, done: int, failed: int = 0, note: str = "", force: bool = False) -> None:
        text = f"{done}/{self.total}" + (f", {failed} failed" if failed else "") + (
            f" · {note}" if note else "")
        if self._bar is not None:
            self._bar.value = done
            self._bar.bar_style = "warning" if failed else ""
            self._note.value = text
        elif self._text_mode and text != self._shown:
            now = time.monotonic()
            if force or now - self._last >= self.every:
                print(f"{self.label}: {text}", file=sys.stdout, flush=True)
                self._last, self._shown = now, text

    def close(self, done: int, failed: int = 0, note: str = "") -> None:
        self.update(done, failed, note, force=True)
        if self._bar is not None:
            self._bar.bar_style = "danger" if failed == self.total else (
                "warning" if failed else "success")


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


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
    longest = max(prompts, key=len)
    model = session._choose_model(requested, sub, Message.of("user", longest), opts, notices)
    if opts.effort and not model.effort:
        raise SessionError(f"--effort works only on models with a reasoning-effort setting "
                           f"(kimi-k3); {model.id} has none")
    return model


class Fanout:
    """One ``--map`` run: builds the requests, runs them within the limits, records costs.

    >>> fan = Fanout(session, "Summarise: {item}", texts); results = fan.run(); fan.line()
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
        session = self.session
        sub, notices = sub_context(session)
        self.notices += notices
        self.model = choose_model(session, self._requested, sub, self.prompts, self.options,
                                  self.notices)
        prefix = sub.wire()
        opts = session._with_defaults(self.options, self.model)
        server = session.client.server
        out = []
        self._sent = []
        for text in self.prompts:
            user = Message.of("user", text)
            self._sent.append(sub.tokens + user.tokens)
            out.append(build_request(self.model, [*prefix, user.data], opts, self._sent[-1],
                                     server))
        return out

    def run(self) -> Any:
        """Run every item; results in input order (a Series when the items were one)."""
        bodies = self.requests()
        assert self.model is not None
        client = self.session.client
        total = len(bodies)
        progress = Progress(total, f"--map {self.model.id}", self.show_progress)
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
        session = self.session
        results: list[Any] = []
        rows = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, Reply):
                u = outcome.usage or session._estimated_usage(self._sent[i], outcome)
                cost = session._cost(model, u)
                self.usage.add(u)
                self.cost = None if cost is None or self.cost is None else self.cost + cost
                rows.append(session._turn_row("map", model.id, u, cost, outcome.seconds))
                self.replies[i] = outcome
                results.append(self._value(i, outcome))
            elif isinstance(outcome, KimiError):
                results.append(self._fail(i, outcome.line(), outcome.kind))
            else:
                why = "interrupted before it ran" if interrupted else "no result"
                results.append(self._fail(i, why, "interrupted"))
        if rows:
            with session.lock:
                with session.store.transaction() as conn:
                    for row in rows:
                        session.store.record_turn(conn, session.name, row)
                session.turns.extend({"session": session.name, **row} for row in rows)
            session._notify("map", self)
        if interrupted:
            self.notices.append(f"Interrupted: {len(rows)} of {len(outcomes)} items finished; "
                                "the rest are marked as failures.")
        return results

    def _value(self, i: int, reply: Reply) -> Any:
        text = (self.options.prefix or "") + reply.content
        if reply.finish_reason == "length":
            self.notices.append(f"item {i} was cut off at the output cap (--max-tokens)")
        if not self.options.json:
            return text
        try:
            return json.loads(text)
        except ValueError:
            return self._fail(i, f"the reply is not valid JSON: {text[:80]!r}", "json")

    def _fail(self, i: int, reason: str, kind: str) -> MapFailure:
        failure = MapFailure(i, self.items[i], reason, kind)
        self.failures.append(failure)
        return failure

    def line(self) -> str:
        """One line under the cell: counts, tokens, cost, time."""
        n = len(self.items)
        ok = n - len(self.failures)
        u = self.usage
        cost = f"${self.cost:.4f}" if self.cost is not None else "cost unknown"
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
    body = "\n\n".join(f"[{k}] {_clip(str(item))}\n→ {_as_text(r)}"
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


def _clip(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# -- the magic's side -------------------------------------------------------------------------

def evaluate(expr: str, namespace: Mapping[str, Any]) -> Any:
    """``--map EXPR``: a variable or expression (``df.col``, ``df['col']``) in the notebook."""
    try:
        return eval(expr, dict(namespace))  # the user's own kernel, the user's own expression
    except Exception as exc:
        raise SessionError(f"--map {expr}: {type(exc).__name__}: {exc}") from None


def run_magic(magic: Any, session: Session, args: Any, prompt: str) -> Any:
    """``%%kimi --map VAR [--out RESULTS] [--batch] [--pin-results NAME]``."""
    from IPython.display import display

    from .display import status_bundle

    if args.tools or args.web:
        raise SessionError("--map does not run tools: drop --tools/--web")
    ns = magic.shell.user_ns
    items = evaluate(args.map_var, ns)
    as_items(items, args.map_var)
    if not prompt.strip():
        raise SessionError("the prompt is empty: write it in the cell body, with {item}")
    for target in args.pin:
        magic._pin(session, target)
    if args.system is not None:
        session.set_system(args.system)
    opts = Options(max_completion_tokens=args.max_tokens, think=args.think, effort=args.effort,
                   prefix=args.prefix, json=args.json, stream=False,
                   sampling={"temperature": args.temperature, "top_p": args.top_p})
    if args.batch:
        from . import batch

        job = batch.submit(session, prompt, items, model=args.model, options=opts,
                           out=args.out, source=args.map_var)
        print(f"Submitted batch {job.id}: {job.items} items on {job.model} at "
              f"{batch.DISCOUNT_PERCENT}% of the price. If you stop waiting (or the kernel "
              f"restarts), %kimi batches collect {job.id} resumes.")
        try:
            results, summary = batch.collect(session, job.id, progress=True)
        except KeyboardInterrupt:
            raise SessionError(f"Stopped waiting; batch {job.id} keeps running on the server: "
                               f"%kimi batches collect {job.id} picks it up") from None
        display(status_bundle(summary.line(), summary.notices), raw=True)
    else:
        fan = Fanout(session, prompt, items, model=args.model, options=opts, progress=True,
                     name=args.out)
        results = fan.run()
        display(status_bundle(fan.line(), fan.notices), raw=True)
    return deliver(magic, session, args.out, getattr(args, "pin_results", None), items,
                   results)


def deliver(magic: Any, session: Session, out: str | None, pin_name: str | None, items: Any,
            results: Any) -> Any:
    """Put results in ``out`` (or return them as the cell's value) and pin them if asked."""
    if pin_name:
        pin = pin_results(session, items, results, pin_name)
        print(f"Pinned the results as {pin.name!r} (~{pin.tokens:,} tokens).")
    if out:
        magic.shell.user_ns[out] = results
        return None
    return results
