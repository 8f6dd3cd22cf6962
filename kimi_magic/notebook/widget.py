"""The dashboard: an ipywidgets view of one ``Session`` (``%kimi widget``).

It shows how the window is filled, what the session cost, whether the prompt cache is still
warm, context and cost over turns, the snapshot history and the pins; its buttons call the same
``Session`` methods the magics call. It holds no state of its own: it subscribes to the session
and re-renders after every change, whichever cell made it. Core widgets and inline HTML/SVG
only (no custom front-end), coloured with JupyterLab's CSS variables so both themes work.
"""

from __future__ import annotations

import html
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets

from ..core.errors import SessionError, StoreError
from ..core.redact import KEY_HIDDEN, redact
from ..core.session import Session
from ..core.sessions import Sessions
from ..wire.errors import KimiError
from ..wire.events import ContentDelta, StreamEvent
from .display import NO_MATH, dollars, snapshot_line, spent, unlabelled_snapshot

#: Errors that are the user's or the network's: one line in the widget, never a traceback.
USER_ERRORS = (KimiError, SessionError, StoreError)

#: Layers in request order, each with a JupyterLab colour (and a fallback outside Lab).
LAYERS = (
    ("system", "var(--jp-ui-font-color3, #9e9e9e)"),
    ("pins", "var(--jp-warn-color1, #f57c00)"),
    ("summary", "var(--jp-success-color1, #388e3c)"),
    ("history", "var(--jp-brand-color1, #1976d2)"),
)

FONT1 = "var(--jp-ui-font-color1, #212121)"
FONT2 = "var(--jp-ui-font-color2, #616161)"
FONT3 = "var(--jp-ui-font-color3, #9e9e9e)"
BORDER = "var(--jp-border-color2, #e0e0e0)"
TRACK = "var(--jp-layout-color3, #e0e0e0)"
CARD = "var(--jp-layout-color2, #f5f5f5)"
BRAND = "var(--jp-brand-color1, #1976d2)"
WARN = "var(--jp-warn-color1, #f57c00)"
ERROR = "var(--jp-error-color1, #d32f2f)"
OK = "var(--jp-success-color1, #388e3c)"

#: Keyframes for the JS-free cache countdown: a bar that drains and a warm/cold flip.
STYLE = """<style>
@keyframes kimi-drain { to { width: 0%; } }
@keyframes kimi-hide { to { visibility: hidden; } }
@keyframes kimi-show { to { visibility: visible; } }
.kimi-dashboard { max-width: 100%; }
.kimi-dashboard .widget-button { width: auto; }
.kimi-dashboard .kimi-list .widget-html, .kimi-dashboard .kimi-list .widget-html-content {
  height: auto; line-height: 1.5; }
</style>"""

#: Seconds between status-line updates while a compress streams its summary.
PROGRESS_EVERY = 0.25

COMPRESS_TIP = "Summarise all but the last rounds, with a fact check; snapshot taken first"

#: Snapshot rows shown until "Show all" is clicked: the recent ones are what you roll back to.
RECENT = 20


class Dashboard(widgets.VBox):
    """A live view of one session, with buttons for snapshot, compress, rollback and reset.

    >>> Dashboard(magic.sessions, "default")            # doctest: +SKIP
    """

    def __init__(self, sessions: Sessions, name: str, magic: Any = None) -> None:
        self.sessions = sessions
        self.magic = magic
        self.session: Session = sessions.get(name)
        self._unsubscribe: Callable[[], None] | None = None
        self._confirming = False
        self._running = False
        self._closed = False
        self._in_op = False
        self._show_all = False
        # Rows are kept per snapshot id and per pin, and updated in place: a change costs the
        # rows it touches, not a rebuild of the whole list.
        self._snap_rows: dict[int, tuple[Any, widgets.HBox]] = {}
        self._pin_rows: dict[str, tuple[Any, widgets.HBox]] = {}
        #: One layout shared by every snapshot row's text (rows are many; the layout is one).
        self._cell_layout = row_cell_layout()

        self.selector = widgets.Dropdown(description="session",
                                         layout=widgets.Layout(width="auto", max_width="100%"))
        self.selector.observe(self._on_select, names="value")
        self.summary = widgets.HTML(layout=widgets.Layout(max_width="100%"))
        self.snapshot_rows = widgets.VBox(layout=_box(max_height="260px", overflow="hidden auto"))
        self.pin_rows = widgets.VBox(layout=_box(overflow="hidden"))
        for box in (self.snapshot_rows, self.pin_rows):
            box.add_class("kimi-list")
        self.more_button = _button("Show all", "kimi-show-all", "List every snapshot")
        self.more_button.on_click(lambda _: self._toggle_all())
        self.label = widgets.Text(placeholder="snapshot label (optional)",
                                  layout=widgets.Layout(width="200px", max_width="100%"))
        self.snapshot_button = _button("Snapshot", "kimi-snapshot", "Save the context now "
                                       "(O(1); roll back to it later)")
        self.compress_button = _button("Compress", "kimi-compress", COMPRESS_TIP)
        self.rollback_button = _button("Rollback", "kimi-rollback", "Restore the latest "
                                       "snapshot (the state you leave is kept as one)")
        self.reset_button = _button("Reset", "kimi-reset", "Clear history and summary "
                                    "(archived); system prompt and pins stay")
        self.confirm_button = _button("Confirm reset", "kimi-confirm-reset",
                                      "Really clear history and summary", "danger")
        self.cancel_button = _button("Cancel", "kimi-cancel", "Keep everything as it is")
        self.snapshot_button.on_click(lambda _: self._snapshot())
        self.compress_button.on_click(lambda _: self._compress())
        self.rollback_button.on_click(lambda _: self._rollback(None))
        self.reset_button.on_click(lambda _: self._ask_reset())
        self.confirm_button.on_click(lambda _: self._reset())
        self.cancel_button.on_click(lambda _: self._cancel_reset())
        self.actions = widgets.HBox(
            [self.label, self.snapshot_button, self.compress_button, self.rollback_button,
             self.reset_button, self.confirm_button, self.cancel_button],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center", max_width="100%"))
        self.status_line = widgets.HTML(layout=widgets.Layout(max_width="100%"))
        self.status_line.add_class("kimi-status")
        self.snapshots_title = widgets.HTML()
        self.pins_title = widgets.HTML()
        super().__init__(
            [self.selector, self.summary, self.snapshots_title, self.snapshot_rows,
             self.more_button, self.pins_title, self.pin_rows, self.actions, self.status_line],
            layout=widgets.Layout(width="100%", max_width="100%", padding="8px",
                                  border=f"1px solid {BORDER}"))
        self.add_class("kimi-dashboard")
        for css in NO_MATH.split():   # our dollar figures are not LaTeX
            self.add_class(css)
        self._on_open = _weak_call(self, Dashboard._session_opened)
        sessions.on_open.append(self._on_open)
        self._bind(self.session)

    # -- binding and lifetime -----------------------------------------------------------------
    def _bind(self, session: Session) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.session = session
        self._unsubscribe = _subscribe_weakly(session, self)
        self._confirming = False
        for cache in (self._snap_rows, self._pin_rows):
            _close_all([row for _, row in cache.values()])
            cache.clear()
        self.render()

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop observing the session and close every widget this dashboard made."""
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._on_open in self.sessions.on_open:
            self.sessions.on_open.remove(self._on_open)
        for cache in (self._snap_rows, self._pin_rows):
            _close_all([row for _, row in cache.values()])
        _close_all([*self.actions.children, *self.children])
        super().close()

    def _changed(self, event: str, detail: Any) -> None:
        """The session changed (in this widget or any cell): show the new state."""
        if self._closed:
            return
        if not self._in_op:
            # A cell changed the session: the last button's message no longer describes it.
            self.status_line.value = ""
        self.render()

    def _session_opened(self, session: Session) -> None:
        if not self._closed:
            self._render_selector()

    def _on_select(self, change: dict[str, Any]) -> None:
        name = change["new"]
        if self._updating_selector or not name or name == self.session.name:
            return
        try:
            session = self.sessions.get(name)
        except USER_ERRORS as err:
            self._say(str(err), "error")
            return
        self._bind(session)
        self._say(f"Showing session {name!r}.", "info")

    # -- rendering ----------------------------------------------------------------------------
    _updating_selector = False

    def render(self) -> None:
        """Re-render everything from the session's current state."""
        try:
            self._render()
        except USER_ERRORS as err:
            self._say(f"cannot read the session: {self._redact(str(err))}", "error")

    def _render(self) -> None:
        st = self.session.status()
        self._render_selector()
        self.summary.value = STYLE + summary_html(st, self.session)
        n = len(self.session.snapshots)
        self.snapshots_title.value = _title(f"Snapshots ({n})" if n else "Snapshots",
                                            "" if n else "none yet: Snapshot saves the context")
        self.pins_title.value = _title(f"Pins ({len(st['pins'])})" if st["pins"] else "Pins",
                                       "" if st["pins"] else "none: %kimi pin VARIABLE_OR_PATH")
        self._render_snapshots()
        self._render_pins(st)
        self._render_buttons()

    def _render_selector(self) -> None:
        names = sorted({s["name"] for s in self.sessions.store.sessions()}
                       | set(self.sessions.open) | {self.session.name})
        self._updating_selector = True
        try:
            if list(self.selector.options) != names:
                self.selector.options = names
            self.selector.value = self.session.name
        finally:
            self._updating_selector = False
        self.selector.layout.display = "" if len(names) > 1 else "none"

    def _render_snapshots(self) -> None:
        s = self.session
        _update_rows(self.snapshot_rows, self._snap_rows,
                     _snapshot_entries(s, self._show_all, self._rollback, self._fork),
                     self._cell_layout)
        self.more_button.layout.display = "" if len(s.snapshots) > RECENT else "none"
        self.more_button.description = ("Show recent only" if self._show_all
                                        else f"Show all {len(s.snapshots)}")

    def _toggle_all(self) -> None:
        self._show_all = not self._show_all
        self._render_snapshots()
        self._render_buttons()

    def _render_pins(self, st: dict[str, Any]) -> None:
        _update_rows(self.pin_rows, self._pin_rows, _pin_entries(st, self._unpin))

    def _render_buttons(self) -> None:
        running = self._running
        for b in (self.snapshot_button, self.compress_button, self.rollback_button,
                  self.reset_button, self.label):
            b.disabled = running
        self.rollback_button.disabled = running or not self.session.snapshots
        idle = nothing_to_compress(self.session)
        self.compress_button.disabled = running or bool(idle)
        self.compress_button.tooltip = idle or COMPRESS_TIP
        for box in (self.snapshot_rows, self.pin_rows):
            for row in box.children:
                row.children[-1].disabled = running
        self.reset_button.layout.display = "none" if self._confirming else ""
        self.confirm_button.layout.display = "" if self._confirming else "none"
        self.cancel_button.layout.display = "" if self._confirming else "none"
        self.confirm_button.disabled = self.cancel_button.disabled = running

    def _say(self, text: str, kind: str = "info") -> None:
        """One line under the buttons: what happened, or what went wrong."""
        self.status_line.value = message_html(text, kind)

    def _redact(self, text: str) -> str:
        return redact(text, [self.session.settings.api_key], mark=KEY_HIDDEN)

    # -- operations ---------------------------------------------------------------------------
    def _run(self, op: Callable[[], str], progress: str | None = None) -> None:
        """Run ``op`` under the session lock, never blocking the kernel behind a running cell.

        The lock serialises the widget with cells; if a cell holds it, say so and return.
        """
        session = self.session
        if not session.lock.acquire(blocking=False):
            self._say("busy: a cell is running; try again when it finishes", "warn")
            return
        try:
            if progress:
                self._running = True
                self._render_buttons()
                self._say(progress, "info")
            try:
                self._in_op = True
                line = op()
            except USER_ERRORS as err:
                # "nothing to compress" and its like change nothing: news, not a failure.
                noop = str(err).startswith("nothing to")
                self._say(self._redact(str(err)), "info" if noop else "error")
            except Exception as err:  # a view must never show a traceback
                self._say(self._redact(f"{type(err).__name__}: {err}"), "error")
            else:
                self._say(line, "ok")
        finally:
            session.lock.release()
            self._running = self._in_op = False
            if not self._closed:
                self.render()

    def _snapshot(self) -> None:
        def op() -> str:
            snap = self.session.snapshot(self.label.value.strip() or None)
            self.label.value = ""
            return snapshot_line(self.session, snap)

        self._run(op)

    def _compress(self) -> None:
        on_delta = summary_progress(self._say)
        self._run(lambda: self.session.compress(on_delta=on_delta).line(),
                  progress="Compressing… (the summary is being written)")

    def _rollback(self, target: int | None) -> None:
        def op() -> str:
            snap = self.session.rollback(target)
            return (snapshot_line(self.session, snap, rolled_back=True)
                    + " The state you left is kept as a snapshot.")

        self._run(op)

    def _fork(self, target: int) -> None:
        source = self.session

        def op() -> str:
            name = self.label.value.strip() or fork_name(source, self.sessions)
            source.fork(name, target)
            self.label.value = ""
            self._bind(self.sessions.get(name))
            return (f"Forked snapshot #{target} of {source.name!r} into session {name!r}, "
                    f"shown here; {source.name!r} is unchanged. %kimi use {name} makes cells "
                    "use it.")

        self._run(op)

    def _ask_reset(self) -> None:
        self._confirming = True
        self._render_buttons()
        self._say("Reset clears the history and summary (archived for %kimi recall); the "
                  "system prompt and pins stay. Confirm?", "warn")

    def _cancel_reset(self) -> None:
        self._confirming = False
        self._render_buttons()
        self._say("Reset cancelled: nothing changed.", "info")

    def _reset(self) -> None:
        self._confirming = False

        def op() -> str:
            self.session.reset()
            return (f"Session {self.session.name!r} reset: history and summary cleared "
                    "(archived); system prompt and pins kept.")

        self._run(op)

    def _unpin(self, name: str) -> None:
        self._run(lambda: f"Unpinned {', '.join(self.session.unpin(name))}.")


def fork_name(session: Session, sessions: Sessions) -> str:
    """A free name for a fork of ``session``: NAME-fork1, NAME-fork2, ..."""
    taken = {s["name"] for s in sessions.store.sessions()} | set(sessions.open)
    n = 1
    while f"{session.name[:50]}-fork{n}" in taken:
        n += 1
    return f"{session.name[:50]}-fork{n}"


def summary_progress(say: Callable[[str, str], None]) -> Callable[[StreamEvent], None]:
    """A compress's stream callback: every ``PROGRESS_EVERY`` seconds, ``say`` how much of the
    summary has arrived (the dashboard's message line)."""
    chars = 0
    last = 0.0

    def on_delta(event: StreamEvent) -> None:
        nonlocal chars, last
        if not isinstance(event, ContentDelta):
            return
        chars += len(event.text)
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY:
            last = now
            say(f"Compressing… {chars:,} characters of summary so far", "info")

    return on_delta

def nothing_to_compress(session: Session) -> str:
    """Why Compress would do nothing now ("" when it would not)."""
    rounds, keep = len(session.context.rounds), session.settings.keep_rounds
    if rounds > keep:
        return ""
    return (f"Nothing to compress: {rounds} round{'s' * (rounds != 1)}, and the last {keep} "
            "are always kept")


def _snapshot_entries(s: Session, show_all: bool, rollback: Callable[[int], None],
                      fork: Callable[[int], None]) -> list[tuple[Any, ...]]:
    """The snapshot rows to show, newest first (the one you want is on top)."""
    entries = []
    for snap in reversed(s.snapshots if show_all else s.snapshots[-RECENT:]):
        # "Here" marks the snapshot whose context is the live one (none after new turns).
        here = snap is s.here()
        n = s.snapshot_tokens(snap)
        entries.append((snap.id, (snap.label, snap.rounds, n, here),
                        lambda snap=snap, here=here, n=n: snapshot_row(snap, here, n),
                        lambda sid=snap.id: rollback(sid), "Rollback", "kimi-rollback-to",
                        f"Restore snapshot #{snap.id}",
                        ((lambda sid=snap.id: fork(sid), "Fork", "kimi-fork-from",
                          f"Start a new session from snapshot #{snap.id} (named by the label "
                          "box, or automatically); this one stays as it is"),)))
    return entries


def _pin_entries(st: dict[str, Any], unpin: Callable[[str], None]) -> list[tuple[Any, ...]]:
    mark = "" if st["exact"] else "~"
    return [(name, (kind, tokens, mark),
             lambda name=name, kind=kind, tokens=tokens: pin_row(name, kind, f"{mark}{tokens:,}"),
             lambda name=name: unpin(name), "Unpin", "kimi-unpin", f"Remove the pin {name!r}")
            for name, kind, tokens in st["pins"]]


# -- HTML -------------------------------------------------------------------------------------
def message_html(text: str, kind: str = "info") -> str:
    """The dashboard's one message line, coloured by kind (ok, info, warn, error)."""
    colour = {"error": ERROR, "warn": WARN, "ok": OK}.get(kind, FONT2)
    return (f'<div class="kimi-status-line" data-kind="{kind}" style="color:{colour};'
            f'font-size:var(--jp-ui-font-size1,13px);line-height:1.45;max-width:100%">'
            f"{html.escape(' '.join(text.split()))}</div>")


def summary_html(st: dict[str, Any], session: Session) -> str:
    """Header, context bar, cost and cache cards and the chart, as one block of HTML."""
    parts = [
        f'<div class="kimi-summary" style="color:{FONT1};font-family:var(--jp-ui-font-family,'
        f'sans-serif);font-size:var(--jp-ui-font-size1,13px);max-width:100%;'
        f'line-height:1.45;overflow-wrap:anywhere">',
        _header(st),
        context_bar(st),
        _cards(st),
        chart_svg(session.calls),
        "</div>",
    ]
    return "".join(parts)


def _header(st: dict[str, Any]) -> str:
    return (f'<div style="display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline;'
            f'margin-bottom:6px"><span style="font-weight:600;font-size:var(--jp-ui-font-size2,'
            f'15px)">Kimi · {html.escape(st["session"])}</span>'
            f'<span style="color:{FONT2}">{html.escape(st.get("model_label", st["model"]))}'
            f' · window '
            f'{st["window"]:,} ({html.escape(st["window_note"])})</span></div>')


def context_bar(st: dict[str, Any]) -> str:
    """How the window is filled, layer by layer, with the auto-compaction threshold marked."""
    window = max(int(st["window"]), 1)
    mark = "" if st["exact"] else "~"
    layers = st["layers"]
    segments = []
    for name, colour in LAYERS:
        n = layers.get(name, 0)
        if n <= 0:
            continue
        segments.append(
            f'<div class="kimi-layer" data-layer="{name}" data-tokens="{n}" title="{name}: '
            f'{mark}{n:,} tokens" style="width:{min(n / window, 1) * 100:.3f}%;min-width:3px;'
            f'background:{colour};height:100%"></div>')
    threshold = min(max(int(st["threshold"]), 0), window)
    t_pct = threshold / window * 100
    kind = "exact (server count)" if st["exact"] else "estimated"
    total = max(sum(layers.values()), 1)
    composition = "".join(
        f'<div style="width:{layers.get(name, 0) / total * 100:.3f}%;background:{colour};'
        f'height:100%"></div>' for name, colour in LAYERS if layers.get(name, 0) > 0)
    legend = "".join(
        f'<span style="display:inline-flex;align-items:center;gap:4px;white-space:nowrap">'
        f'<span style="width:10px;height:10px;border-radius:2px;background:{colour};'
        f'display:inline-block"></span>{name} {mark}{layers.get(name, 0):,}</span>'
        for name, colour in LAYERS)
    return (
        f'<div class="kimi-context" data-window="{window}" data-threshold="{threshold}">'
        f'<div style="display:flex;flex-wrap:wrap;gap:2px 10px;align-items:baseline">'
        f'<span style="font-weight:600">Context</span>'
        f'<span><span class="kimi-tokens" data-tokens="{st["tokens"]}" '
        f'data-exact="{int(bool(st["exact"]))}" style="font-weight:600">{mark}'
        f'{st["tokens"]:,}</span> of {window:,} tokens ({st["fill"]:.1%})</span>'
        f'<span class="kimi-exact" style="color:{FONT2}">{kind}</span>'
        f'<span style="color:{FONT2}">{st["rounds"]} rounds'
        f'{" + summary" if st["summary"] else ""}</span></div>'
        f'<div style="position:relative;height:14px;margin:4px 0 2px;background:{TRACK};'
        f'border-radius:3px;display:flex;overflow:visible">{"".join(segments)}'
        f'<div class="kimi-threshold" title="auto-compact at {threshold:,} tokens" '
        f'style="position:absolute;left:{t_pct:.3f}%;top:-3px;bottom:-3px;width:2px;'
        f'background:{ERROR}"></div></div>'
        f'<div style="display:flex;justify-content:space-between;color:{FONT3};'
        f'font-size:var(--jp-ui-font-size0,11px)"><span>0</span>'
        f'<span>auto-compact at {threshold:,} ({t_pct:.0f}%)</span><span>{window:,}</span></div>'
        f'<div title="what the context holds" style="display:flex;height:6px;margin:6px 0 3px;'
        f'border-radius:3px;overflow:hidden;background:{TRACK}">{composition}</div>'
        f'<div style="display:flex;flex-wrap:wrap;gap:2px 12px;color:{FONT2}">{legend}</div>'
        f'</div>')


def _cards(st: dict[str, Any]) -> str:
    def price(v: float | None) -> str:
        return dollars(v, unknown="unpriced")

    last = price(st["cost_last"]) if st["cost_last"] is not None else "–"
    total = spent(st["cost_total"], st["priced"])
    cards = [
        ("Cost", f'<span class="kimi-cost-total" data-cost="{st["cost_total"]:.6f}">{total}'
                 f"</span> total", f"last call {last}" + (
                     f' · <span class="kimi-budget">budget {price(st["budget"])}, '
                     f'{price(max(st["budget_left"], 0.0))} left</span>'
                     if st.get("budget") is not None else "")),
        ("Prompt cache", f'<span class="kimi-hit-rate">{st["cache_hit_rate"]:.0%}</span> '
                         "hit rate", cache_countdown(st)),
        ("Next turn input", f"{price(st['next_turn_warm'])} warm",
         f"{price(st['next_turn_cold'])} if the cache is cold"),
    ]
    body = "".join(
        f'<div style="flex:1 1 140px;min-width:0;background:{CARD};border-radius:4px;'
        f'padding:6px 8px"><div style="color:{FONT2};font-size:var(--jp-ui-font-size0,11px);'
        f'text-transform:uppercase;letter-spacing:0.04em">{title}</div>'
        f'<div style="font-weight:600;margin:1px 0">{value}</div>'
        f'<div style="color:{FONT2};font-size:var(--jp-ui-font-size0,11px)">{sub}</div></div>'
        for title, value, sub in cards)
    return f'<div style="display:flex;flex-wrap:wrap;gap:6px;margin:10px 0">{body}</div>'


def cache_countdown(st: dict[str, Any]) -> str:
    """Warm until when; a CSS animation drains the bar and flips to "cold" on time (no JS)."""
    left = float(st["cache_seconds_left"])
    if left <= 0:
        return (f'<span class="kimi-cache" data-seconds-left="0" style="color:{FONT2}">cold: '
                "the next call pays full price</span>")
    until = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
    ttl = max(left, 300.0 if left <= 300 else 3600.0)
    return (
        f'<span class="kimi-cache" data-seconds-left="{left:.0f}" '
        f'style="display:inline-grid;vertical-align:top">'
        f'<span style="grid-area:1/1;color:{OK};animation:kimi-hide 1ms linear {left:.1f}s '
        f'forwards">warm until {until} (~{left / 60:.0f} min)</span>'
        f'<span style="grid-area:1/1;visibility:hidden;color:{FONT2};'
        f'animation:kimi-show 1ms linear {left:.1f}s forwards">cold since {until}</span>'
        f'</span><div style="height:3px;background:{TRACK};border-radius:2px;margin-top:2px">'
        f'<div style="height:100%;width:{left / ttl * 100:.1f}%;background:{OK};'
        f'border-radius:2px;animation:kimi-drain {left:.1f}s linear forwards"></div></div>')


def chart_svg(turns: Sequence[dict[str, Any]], width: int = 600, height: int = 120) -> str:
    """Context tokens per call and cumulative cost, as inline SVG (compressions marked)."""
    points: list[tuple[int, float]] = []   # (context tokens, cumulative cost) per chat turn
    compressions: list[int] = []           # chat turns after which a compress ran
    spent = 0.0
    for t in turns:
        spent += t.get("cost") or 0.0
        if t.get("kind") == "chat":
            points.append((int(t.get("context_tokens") or 0), spent))
        elif t.get("kind") == "compress" and points:
            compressions.append(len(points) - 1)
    if len(points) < 2:
        return (f'<div class="kimi-chart" data-points="{len(points)}" style="color:{FONT3};'
                f'font-size:var(--jp-ui-font-size0,11px)">The chart of context and cost '
                "appears after two turns.</div>")
    left, right, top, bottom = 8, 8, 16, 18
    w, h = width - left - right, height - top - bottom
    max_tokens = max(p[0] for p in points) or 1
    # Scale to everything spent, so a compress after the last call counts in the total shown.
    max_cost = max(spent, *(p[1] for p in points)) or 1.0
    step = w / (len(points) - 1)

    def xy(i: int, value: float, top_value: float) -> str:
        return f"{left + i * step:.1f},{top + h - value / top_value * h:.1f}"

    context_line = " ".join(xy(i, p[0], max_tokens) for i, p in enumerate(points))
    cost_line = " ".join(xy(i, p[1], max_cost) for i, p in enumerate(points))
    area = f"{left},{top + h} {context_line} {left + w},{top + h}"
    # A compress sits between two calls; one after the last call is drawn at the right edge.
    xs = [left + min(i + 0.5, len(points) - 1) * step for i in compressions]
    marks = "".join(
        f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + h}" '
        f'style="stroke:{OK};stroke-width:1.5;stroke-dasharray:3 3"/>' for x in xs)
    small = "font-size:10px;font-family:var(--jp-ui-font-family,sans-serif)"
    return (
        f'<div class="kimi-chart" data-points="{len(points)}" style="margin-top:4px">'
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="context tokens and cumulative cost per turn" '
        f'style="width:100%;max-width:100%;height:{height}px;display:block">'
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" '
        f'style="stroke:{BORDER};stroke-width:1"/>'
        f'<polygon points="{area}" style="fill:{BRAND};fill-opacity:0.12;stroke:none"/>'
        f'<polyline points="{context_line}" style="fill:none;stroke:{BRAND};stroke-width:2"/>'
        f'<polyline points="{cost_line}" style="fill:none;stroke:{WARN};stroke-width:2;'
        f'stroke-dasharray:5 3"/>{marks}</svg>'
        f'<div style="display:flex;flex-wrap:wrap;gap:2px 14px;color:{FONT2};{small}">'
        f'<span style="color:{BRAND}">━ context per call (max {max_tokens:,} tokens)</span>'
        f'<span style="color:{WARN}">┅ cumulative cost (${max_cost:.4f})</span>'
        + (f'<span style="color:{OK}">┆ compress</span>' if compressions else "")
        + f"<span>{len(points)} turns</span></div></div>")




def _title(text: str, note: str = "") -> str:
    extra = (f' <span style="font-weight:400;color:{FONT3}">· {html.escape(note)}</span>'
             if note else "")
    return (f'<div style="font-weight:600;color:{FONT1};margin-top:6px;'
            f'font-size:var(--jp-ui-font-size1,13px)">{html.escape(text)}{extra}</div>')


def snapshot_row(snap: Any, here: bool, tokens: int | None = None) -> str:
    """One snapshot as a row that wraps at narrow widths instead of clipping; ``tokens`` is
    the figure to show (``Session.snapshot_tokens``; default: the recorded one)."""
    unlabelled = unlabelled_snapshot(snap.label)
    tokens = snap.tokens if tokens is None else tokens
    details = [time.strftime("%H:%M:%S", time.localtime(snap.time)), f"{snap.rounds} rounds",
               f"{tokens:,} tokens", f"from #{snap.parent}" if snap.parent else "",
               "auto" if snap.auto else ""]
    return _row([("●" if here else "", "1em", BRAND, "0"), (f"#{snap.id}", "auto", FONT2, "0"),
                 ("(no label)" if unlabelled else snap.label, "8em",
                  FONT3 if unlabelled else FONT1, "1")]
                + [(d, "auto", FONT2, "0") for d in details if d],
                data=f'data-snapshot="{snap.id}"')


def pin_row(name: str, kind: str, tokens: str) -> str:
    """One pin: its name takes the room (wrapped when long), kind and size stay whole."""
    return _row([(name, "6em", FONT1, "1"), (kind, "auto", FONT2, "0"),
                 (f"{tokens} tokens", "auto", FONT2, "0")],
                data=f'data-pin="{html.escape(name, quote=True)}"')


_WRAPS = "white-space:normal;overflow-wrap:anywhere"
_WHOLE = "white-space:nowrap"


def _row(cells: list[tuple[str, str, str, str]], data: str = "") -> str:
    # The growing cell (a label, a pin's name) wraps, breaking a long word anywhere, so a
    # narrow output shows all of it; the short facts beside it stay whole and move down.
    spans = "".join(
        f'<span style="flex:{grow} 1 {basis};min-width:0;color:{colour};'
        f'{_WRAPS if grow != "0" else _WHOLE}">{html.escape(text)}</span>'
        for text, basis, colour, grow in cells)
    return (f'<div class="kimi-row" {data} style="display:flex;flex-wrap:wrap;gap:0 8px;'
            f'font-size:var(--jp-ui-font-size1,13px);line-height:1.5;align-items:baseline">'
            f"{spans}</div>")


# -- widgets ----------------------------------------------------------------------------------
def _button(text: str, css: str, tip: str, style: str = "") -> widgets.Button:
    b = widgets.Button(description=text, tooltip=tip, button_style=style,
                       layout=widgets.Layout(width="auto", flex="0 0 auto"))
    b.add_class(css)
    return b


def _box(**layout: str) -> widgets.Layout:
    return widgets.Layout(max_width="100%", **layout)


def _update_rows(box: widgets.VBox, cache: dict[Any, tuple[Any, widgets.HBox]],
                 shown: list[tuple[Any, Any, Callable[[], str], Callable[[], None], str, str,
                                   str]],
                 cell_layout: widgets.Layout | None = None) -> None:
    """Show ``shown`` rows in ``box``, reusing the row of every key already on screen.

    Each entry is ``(key, state, html, on_click, label, css, tip)``, optionally followed by
    more buttons as ``((on_click, label, css, tip), ...)``; rows' texts share ``cell_layout``
    when one is given: a row is created only for
    a new key, its HTML rewritten only when its state changed, and rows no longer shown are
    closed. The box's children are reassigned only when the list of rows changed.
    """
    rows = []
    for key, state, make_html, on_click, label, css, tip, *more in shown:
        entry = cache.get(key)
        if entry is None:
            buttons = [_button(label, css, tip)]
            buttons[0].on_click(lambda _, call=on_click: call())
            for call, text, style, hint in more[0] if more else ():
                # A row's buttons share one layout and style: a row costs as few widgets
                # (front-end models) with two buttons as it did with one.
                extra = widgets.Button(description=text, tooltip=hint,
                                       layout=buttons[0].layout, style=buttons[0].style)
                extra.add_class(style)
                extra.on_click(lambda _, call=call: call())
                buttons.append(extra)
            entry = (state, _row_box(make_html(), *buttons, cell_layout=cell_layout))
        elif entry[0] != state:
            entry[1].children[0].value = make_html()
            entry = (state, entry[1])
        cache[key] = entry
        rows.append(entry[1])
    keep = {key for key, *_ in shown}
    gone = [cache.pop(key)[1] for key in list(cache) if key not in keep]
    if tuple(rows) != tuple(box.children):
        box.children = rows
    _close_all(gone)


def row_cell_layout() -> widgets.Layout:
    """The layout of a row's text: it takes the room the buttons leave."""
    return widgets.Layout(flex="1 1 auto", width="auto", min_width="0", margin="0")


def _row_box(text: str, *buttons: widgets.Button,
             cell_layout: widgets.Layout | None = None) -> widgets.HBox:
    """One list row: the text takes the room, the buttons stay at the right end."""
    cells = widgets.HTML(text, layout=cell_layout or row_cell_layout())
    return widgets.HBox([cells, *buttons], layout=widgets.Layout(
        flex_flow="row nowrap", align_items="center", max_width="100%", padding="1px 0",
        border_bottom=f"1px solid {BORDER}"))


def _close_all(children: Sequence[widgets.Widget]) -> None:
    for child in children:
        if isinstance(child, widgets.Box):
            _close_all(child.children)
        child.close()


def _weak_call(obj: Any, method: Callable[..., None]) -> Callable[..., None]:
    """A callback that does nothing once ``obj`` is gone: hooks never keep a view alive."""
    ref = weakref.ref(obj)

    def call(*args: Any) -> None:
        target = ref()
        if target is not None:
            method(target, *args)

    return call


def _subscribe_weakly(session: Session, dashboard: Dashboard) -> Callable[[], None]:
    """Subscribe ``dashboard`` to ``session`` without the session keeping it alive.

    Should a dashboard be dropped without ``close()``, its observer removes itself.
    """
    ref = weakref.ref(dashboard)
    unsubscribe: list[Callable[[], None]] = []

    def observe(event: str, detail: Any) -> None:
        target = ref()
        if target is None:
            if unsubscribe:
                unsubscribe[0]()
            return
        target._changed(event, detail)

    unsubscribe.append(session.subscribe(observe))
    return unsubscribe[0]
