"""The dashboard as a user meets it: rendered values, button clicks, errors, live updates.

Every dashboard here sits on real sessions talking HTTP to the simulator; buttons are clicked
with ``Button.click()`` (what the front-end's click message does) and the assertions read the
widget's HTML and the session's state.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.utils.capture import capture_output

from kimi_magic import Message, Pin, Settings, Store
from kimi_magic.core.sessions import Sessions
from kimi_magic.notebook.widget import Dashboard

LONG = " ".join(f"Step {i} of the plan: measure the loss curve on shard {i} and note it."
                for i in range(12))


@pytest.fixture
def sessions(settings: Settings, store_path: Path) -> Iterator[Sessions]:
    registry = Sessions(settings, Store(store_path))
    yield registry
    registry.close()


@pytest.fixture
def dash(sessions: Sessions) -> Iterator[Dashboard]:
    d = Dashboard(sessions, "default")
    yield d
    d.close()


def shown_tokens(d: Dashboard) -> int:
    return int(re.search(r'class="kimi-tokens" data-tokens="(\d+)"', d.summary.value)[1])


def status(d: Dashboard) -> tuple[str, str]:
    """The status line's kind and text, as the user reads it."""
    m = re.search(r'data-kind="(\w+)"[^>]*>([^<]*)</div>', d.status_line.value)
    assert m, d.status_line.value
    import html

    return m[1], html.unescape(m[2])


def ask_rounds(sessions: Sessions, n: int, name: str = "default") -> None:
    s = sessions.get(name)
    for i in range(n):
        s.ask(f"Fact {i}: the run id is run-{i:03d}. {LONG}")


def visible(widget) -> bool:
    return widget.layout.display != "none"


def test_shows_the_window_fill_cost_cache_and_chart_after_turns_and_a_pin(sessions, dash):
    assert 'data-points="0"' in dash.summary.value
    ask_rounds(sessions, 2)
    s = sessions.get("default")
    s.set_pin(Pin("conventions", "text", "cell", Message.of("system", "Use SI units. " * 30)))

    st = s.status()
    html = dash.summary.value
    assert shown_tokens(dash) == s.tokens() == st["tokens"]
    pins_layer = re.search(r'data-layer="pins" data-tokens="(\d+)"', html)
    assert int(pins_layer[1]) == st["layers"]["pins"] > 0
    assert f'data-threshold="{st["threshold"]}"' in html
    assert f'data-window="{st["window"]}"' in html
    assert ("exact (server count)" if st["exact"] else "estimated") in html
    assert f"${st['cost_total']:.4f}" in html and f"${st['cost_last']:.4f}" in html
    assert f"{st['cache_hit_rate']:.0%}" in html
    assert "warm until" in html, "a call just ran: the prompt cache is warm"
    assert f"${st['next_turn_warm']:.4f} warm" in html
    assert 'data-points="2"' in html and "<svg" in html
    pin_rows = [row.children[0].value for row in dash.pin_rows.children]
    assert len(pin_rows) == 1 and 'data-pin="conventions"' in pin_rows[0]


def test_cache_countdown_turns_cold_after_the_ttl(sessions, dash):
    ask_rounds(sessions, 1)
    s = sessions.get("default")
    assert re.search(r'data-seconds-left="(\d+)"', dash.summary.value)[1] in ("299", "300")
    later = s.last_call + 6 * 60
    s.clock = lambda: later
    dash.render()
    assert 'data-seconds-left="0"' in dash.summary.value
    assert "cold: the next call pays full price" in dash.summary.value


def test_snapshot_button_takes_a_labelled_snapshot_and_lists_it(sessions, dash):
    ask_rounds(sessions, 2)
    dash.label.value = "before tuning"
    dash.snapshot_button.click()

    s = sessions.get("default")
    assert [snap.label for snap in s.snapshots] == ["before tuning"]
    assert status(dash) == ("ok", f"Snapshot #{s.snapshots[0].id} 'before tuning': 2 rounds, "
                            f"{s.snapshots[0].tokens:,} tokens."), \
        "the server counted this context: its size is exact, as the headline says"
    row = dash.snapshot_rows.children[0].children[0].value
    assert "before tuning" in row and "2 rounds" in row and "●" in row
    assert dash.label.value == "", "the label box empties for the next snapshot"
    assert not dash.rollback_button.disabled


def test_compress_shrinks_the_context_and_rollback_brings_the_history_back(sessions, dash):
    ask_rounds(sessions, 6)
    s = sessions.get("default")
    before, rounds = shown_tokens(dash), len(s.context.rounds)
    seen: list[tuple[str, bool]] = []
    dash.status_line.observe(
        lambda c: seen.append((c["new"], dash.compress_button.disabled)), names="value")

    dash.compress_button.click()

    assert s.context.summary is not None
    assert shown_tokens(dash) == s.tokens() < before
    kind, line = status(dash)
    assert kind == "ok" and line.startswith(f"Compressed {rounds - 3} rounds")
    assert any("Compressing…" in v and disabled for v, disabled in seen), \
        "progress shows while compress runs, with the buttons disabled"
    assert not dash.snapshot_button.disabled and not dash.rollback_button.disabled, \
        "enabled again afterwards"
    assert dash.compress_button.disabled, "3 rounds left, all kept: nothing more to compress"
    assert dash.compress_button.tooltip.startswith("Nothing to compress: 3 rounds")
    assert 'data-layer="summary"' in dash.summary.value

    dash.rollback_button.click()

    assert s.context.summary is None and len(s.context.rounds) == rounds
    assert shown_tokens(dash) == s.tokens() >= before * 0.9
    assert status(dash)[1].startswith("Rolled back to snapshot")


def test_rollback_on_a_row_restores_that_snapshot(sessions, dash):
    ask_rounds(sessions, 1)
    dash.label.value = "one"
    dash.snapshot_button.click()
    ask_rounds(sessions, 2)
    dash.label.value = "three"
    dash.snapshot_button.click()
    rows = {re.search(r'data-snapshot="(\d+)"', r.children[0].value)[1]: r
            for r in dash.snapshot_rows.children}
    first = sessions.get("default").snapshots[0]

    rows[str(first.id)].children[1].click()

    s = sessions.get("default")
    assert len(s.context.rounds) == 1
    assert "●" in next(r.children[0].value for r in dash.snapshot_rows.children
                       if f'data-snapshot="{first.id}"' in r.children[0].value)


def test_reset_needs_a_second_click_and_keeps_the_pins(sessions, dash):
    ask_rounds(sessions, 2)
    s = sessions.get("default")
    s.set_pin(Pin("notes", "text", "cell", Message.of("system", "Keep me.")))

    dash.reset_button.click()
    assert len(s.context.rounds) == 2, "the first click only asks"
    assert visible(dash.confirm_button) and visible(dash.cancel_button)
    assert not visible(dash.reset_button)
    assert status(dash)[0] == "warn" and "Confirm?" in status(dash)[1]

    dash.cancel_button.click()
    assert len(s.context.rounds) == 2 and visible(dash.reset_button)
    assert status(dash)[1] == "Reset cancelled: nothing changed."

    dash.reset_button.click()
    dash.confirm_button.click()
    assert s.context.rounds == [] and [p.name for p in s.context.pins] == ["notes"]
    assert shown_tokens(dash) == s.tokens()
    assert not visible(dash.confirm_button)


def test_unpin_button_removes_the_pin(sessions, dash):
    s = sessions.get("default")
    s.set_pin(Pin("a", "text", "cell", Message.of("system", "alpha")))
    s.set_pin(Pin("b", "text", "cell", Message.of("system", "beta")))
    assert len(dash.pin_rows.children) == 2

    dash.pin_rows.children[0].children[1].click()

    assert [p.name for p in s.context.pins] == ["b"]
    assert len(dash.pin_rows.children) == 1
    assert status(dash) == ("ok", "Unpinned a.")


def test_errors_are_one_line_in_the_widget_and_change_nothing(sim, settings, sessions, dash):
    assert dash.compress_button.disabled, "an empty session has nothing to compress"
    assert dash.compress_button.tooltip == ("Nothing to compress: 0 rounds, and the last 3 "
                                            "are always kept")
    dash.compress_button.click()   # a click that raced the disabling: a no-op, told as news
    kind, line = status(dash)
    assert kind == "info" and line.startswith("nothing to compress")
    assert "\n" not in dash.status_line.value and "Traceback" not in dash.status_line.value

    ask_rounds(sessions, 5)
    s = sessions.get("default")
    before = s.context
    sim.fail("auth")
    dash.compress_button.click()
    kind, line = status(dash)
    assert kind == "error" and "\n" not in line and line
    assert settings.api_key not in dash.status_line.value + dash.summary.value
    assert s.context is before and s.snapshots == []


def test_busy_while_a_cell_holds_the_session(sessions, dash):
    ask_rounds(sessions, 1)
    s = sessions.get("default")
    held, release = threading.Event(), threading.Event()

    def running_cell() -> None:
        with s.lock:
            held.set()
            release.wait(10)

    cell = threading.Thread(target=running_cell)
    cell.start()
    held.wait(10)
    try:
        dash.snapshot_button.click()
    finally:
        release.set()
        cell.join()
    assert status(dash) == ("warn", "busy: a cell is running; try again when it finishes")
    assert s.snapshots == []
    dash.snapshot_button.click()
    assert len(s.snapshots) == 1


def test_every_open_dashboard_follows_the_session_until_closed(sessions, dash):
    other = Dashboard(sessions, "default")
    s = sessions.get("default")
    observers = len(s.events.observers)

    ask_rounds(sessions, 1)          # a cell elsewhere asks
    s.snapshot("elsewhere")
    assert shown_tokens(dash) == shown_tokens(other) == s.tokens()
    assert len(dash.snapshot_rows.children) == len(other.snapshot_rows.children) == 1

    other.close()
    assert len(s.events.observers) == observers - 1
    frozen = other.summary.value
    ask_rounds(sessions, 1)
    assert other.summary.value == frozen, "a closed dashboard no longer renders"
    assert shown_tokens(dash) == s.tokens()


def test_session_selector_switches_what_the_dashboard_shows_and_controls(sessions, dash):
    assert not visible(dash.selector), "one session: no selector"
    ask_rounds(sessions, 2, name="other")
    assert visible(dash.selector)
    assert set(dash.selector.options) == {"default", "other"}

    dash.selector.value = "other"

    other = sessions.get("other")
    assert dash.session is other and shown_tokens(dash) == other.tokens()
    assert ">Kimi · other<" in dash.summary.value
    dash.snapshot_button.click()
    assert len(other.snapshots) == 1 and sessions.get("default").snapshots == []
    default_observers = len(sessions.get("default").events.observers)
    assert default_observers == 0, "switching unsubscribes from the old session"


def test_changes_made_by_magics_in_other_cells_update_the_dashboard(ipython):
    magic = ipython.magics_manager.registry["KimiMagic"]
    with capture_output():
        ipython.run_cell("%%kimi\nMy favourite number is 42. " + LONG)
    d = Dashboard(magic.sessions, magic.session.name, magic=magic)
    try:
        s = magic.session
        with capture_output():
            ipython.run_cell("%%kimi\nAnd my favourite colour is teal. " + LONG)
        assert shown_tokens(d) == s.tokens() and 'data-points="2"' in d.summary.value
        with capture_output():
            ipython.run_cell("notes = 'remember the seed 1234'\n%kimi pin notes")
            ipython.run_line_magic("kimi", "snapshot after-pin")
        assert [r.children[0].value.count("after-pin") for r in d.snapshot_rows.children] == [1]
        assert len(d.pin_rows.children) == 1 and 'data-pin="notes"' in \
            d.pin_rows.children[0].children[0].value
        with capture_output():
            ipython.run_line_magic("kimi", "reset")
        assert shown_tokens(d) == s.tokens() and "0 rounds" in d.summary.value
    finally:
        d.close()


def test_kimi_widget_displays_a_dashboard(ipython):
    with capture_output() as out:
        ipython.run_line_magic("kimi", "widget")
    shown = [o for o in out.outputs if "application/vnd.jupyter.widget-view+json" in o.data]
    assert len(shown) == 1
    import warnings

    from ipywidgets import Widget

    model_id = shown[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]
    with warnings.catch_warnings():  # the registry is deprecated as API, still the registry
        warnings.simplefilter("ignore", DeprecationWarning)
        dashboard = Widget.widgets[model_id]
    assert isinstance(dashboard, Dashboard) and "kimi-dashboard" in dashboard._dom_classes
    dashboard.close()


def test_kimi_widget_again_shows_the_same_dashboard_and_unload_closes_it(ipython):
    def shown_model_id() -> str:
        with capture_output() as out:
            ipython.run_line_magic("kimi", "widget")
        (view,) = [o.data["application/vnd.jupyter.widget-view+json"]["model_id"]
                   for o in out.outputs if "application/vnd.jupyter.widget-view+json" in o.data]
        return view

    magic = ipython.magics_manager.registry["KimiMagic"]
    first, second = shown_model_id(), shown_model_id()
    assert first == second, "a second view of one dashboard, not a second dashboard"
    assert len(magic.session.events.observers) == 1
    board = magic._dashboards[magic.session.name]
    ipython.run_line_magic("unload_ext", "kimi_magic")
    assert board.is_closed


def test_a_change_with_200_snapshots_reuses_the_rows_and_shows_the_recent_20(sessions, dash):
    from ipywidgets import Widget

    s = sessions.get("default")
    ask_rounds(sessions, 1)
    for i in range(200):
        s.snapshot(f"s{i:03d}")
    rows = dash.snapshot_rows.children
    assert len(rows) == 20 and "s199" in rows[0].children[0].value
    assert dash.more_button.description == "Show all 200" and visible(dash.more_button)

    made = []
    real_init = Widget.__init__

    def counting_init(self, *args, **kwargs):
        made.append(type(self).__name__)
        real_init(self, *args, **kwargs)

    Widget.__init__ = counting_init
    try:
        s.snapshot("one more")
        after_snapshot = list(made)
        made.clear()
        s.rollback(s.snapshots[-5].id)
        after_rollback = list(made)
    finally:
        Widget.__init__ = real_init
    # One new row: an HBox, its HTML and its button (each with a layout, the last two a style).
    assert sorted(set(after_snapshot)) == ["Button", "ButtonStyle", "HBox", "HTML",
                                           "HTMLStyle", "Layout"]
    assert len(after_snapshot) <= 8, after_snapshot
    # A rollback (to a state already kept) moves the marker: no new rows at all.
    assert len(after_rollback) <= 8, after_rollback
    assert len(dash.snapshot_rows.children) == 20
    assert set(dash.snapshot_rows.children[2:]) <= set(rows), "the older rows are reused"

    dash.more_button.click()
    assert len(dash.snapshot_rows.children) == len(s.snapshots) > 200
    assert dash.more_button.description == "Show recent only"
    dash.more_button.click()
    assert len(dash.snapshot_rows.children) == 20


def test_rows_that_did_not_change_keep_their_widgets(sessions, dash):
    s = sessions.get("default")
    ask_rounds(sessions, 1)
    s.snapshot("a")
    ask_rounds(sessions, 1)
    s.snapshot("b")
    b_row, a_row = dash.snapshot_rows.children
    a_html = a_row.children[0].value
    ask_rounds(sessions, 1)
    s.snapshot("c")
    c_row, b_again, a_again = dash.snapshot_rows.children
    assert b_again is b_row and a_again is a_row and a_row.children[0].value == a_html
    assert "●" in c_row.children[0].value and "●" not in b_row.children[0].value


def test_the_message_line_clears_when_a_cell_changes_the_session(sessions, dash):
    ask_rounds(sessions, 1)
    dash.snapshot_button.click()
    assert status(dash)[0] == "ok"
    ask_rounds(sessions, 1)          # a later cell
    assert dash.status_line.value == "", "a stale message would describe the old state"


def test_compress_enables_once_there_is_something_to_compress(sessions, dash):
    ask_rounds(sessions, 3)
    assert dash.compress_button.disabled and "3 rounds" in dash.compress_button.tooltip
    ask_rounds(sessions, 1)
    assert not dash.compress_button.disabled
    assert dash.compress_button.tooltip.startswith("Summarise all but the last rounds")


def test_rows_wrap_instead_of_clipping_and_dollars_are_not_math(sessions, dash):
    s = sessions.get("default")
    ask_rounds(sessions, 1)
    s.snapshot("a label that is rather long for a narrow column")
    s.set_pin(Pin("a_long_pin_name_for_the_table", "text", "cell", Message.of("system", "x")))
    row = dash.snapshot_rows.children[0].children[0].value
    assert "flex-wrap:wrap" in row and "rounds" in row and "tokens" in row
    # Every detail is its own item: a narrow column wraps them to the next line, whole.
    assert row.count("<span") >= 6 and "min-width:12em" not in row
    pin = dash.pin_rows.children[0].children[0].value
    assert "flex:1 1 6em" in pin and "min-width:13em" not in pin
    assert {"mathjax_ignore", "tex2jax_ignore"} <= set(dash._dom_classes)
    assert "$" in dash.summary.value
