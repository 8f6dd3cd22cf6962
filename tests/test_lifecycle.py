"""The context lifecycle, used as a notebook user would: snapshots, rollback, truncate, compress,
archive and recall, the rolling policy, the cache-friendly layout and persistence.

Everything talks HTTP to the simulator and asserts on what the server received (request
bodies), what the user is told (one-line notices and errors) and what the store holds.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_KEY, PriceTool, reset_simulator
from kimi_magic import KimiError, Options, Session, Settings, Store
from kimi_magic.core.context import Message, Pin
from kimi_magic.core.session import SessionError
from kimi_magic.simulator import Simulator


def chat_bodies(sim: Simulator) -> list[dict[str, Any]]:
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def last_messages(sim: Simulator) -> str:
    """The last request's messages, as the bytes the SDK serialised them from."""
    return json.dumps(chat_bodies(sim)[-1]["messages"])


def pin(name: str, text: str) -> Pin:
    return Pin(name, "text", "test", Message.of("system", f'<pinned name="{name}">{text}</pinned>'))


def ask_with_tool(session: Session, n: int) -> None:
    session.ask(f"Use lookup_price for 'pear' (fact-{n}).", tools=PriceTool(),
                options=Options(tools=PriceTool.specs))


def orphans(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool messages whose call id no earlier assistant message made."""
    called: set[str] = set()
    bad = []
    for m in messages:
        for call in m.get("tool_calls") or ():
            called.add(call["id"])
        if m["role"] == "tool" and m.get("tool_call_id") not in called:
            bad.append(m)
    return bad


# -- 1. snapshots are O(1) -------------------------------------------------------------------
def test_snapshot_takes_constant_time_and_memory(session: Session) -> None:
    session.settings.compact_mode = "off"  # a 100K-token context, kept as it is
    session.ask("fact-1 " + "small " * 900)
    small = session.tokens()
    t0 = time.perf_counter()
    a = session.snapshot("small")
    small_seconds = time.perf_counter() - t0

    session.ask("fact-2 " + "word " * 100_000)
    big = session.tokens()
    assert big > 100_000 > 50 * small / 50
    t0 = time.perf_counter()
    b = session.snapshot("big")
    big_seconds = time.perf_counter() - t0
    assert small_seconds < 0.05 and big_seconds < 0.05, (small_seconds, big_seconds)
    assert (a.label, a.rounds, b.rounds, b.tokens) == ("small", 1, 2, big)
    assert a.id and a.time and b.context is session.context

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(1000):
        session.snapshot()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    context_bytes = sum(len(m.json) for m in session.context.messages())
    # 1,000 snapshots take less memory than one copy of the context (a copy each: 1,000x)
    assert grown < context_bytes, (grown, context_bytes)
    # the store row is hashes and a node id, not the messages
    rows = session.store.snapshots("t")
    assert len(rows) == 1002 and max(len(r["context"]) for r in rows) < 1000


# -- 2. rollback --------------------------------------------------------------------------------
def test_rollback_restores_the_exact_request_and_is_undoable(sim: Simulator,
                                                            session: Session) -> None:
    session.set_pin(pin("conventions", "Use pathlib. fact-0"))
    for n in range(1, 5):
        session.ask(f"Note fact-{n}: threshold {n * 11}.")
    session.compress(keep_rounds=2)
    session.ask("Note fact-5: the dataset is /data/sales.csv.")
    snap = session.snapshot("good")
    session.ask("What is fact-5?")
    at_snapshot = last_messages(sim)

    session.ask("Note fact-6: a detour.")
    session.ask("Note fact-7: another detour.")
    detour = session.context
    back = session.rollback("good")
    assert back.id == snap.id and session.context is snap.context
    session.ask("What is fact-5?")
    assert last_messages(sim) == at_snapshot  # system, pin, summary, history: byte-identical

    # the state we left is a snapshot of its own: rolling back to it undoes the rollback
    left = next(s for s in session.snapshots if s.context is detour)
    assert left.auto and left.parent == snap.id
    session.rollback(left.id)
    assert session.context is detour
    session.ask("What is fact-7?")
    assert "fact-6" in last_messages(sim) and "fact-7" in last_messages(sim)


def test_turns_after_a_rollback_grow_a_new_branch(session: Session, store_path: Path) -> None:
    session.ask("Note fact-1.")
    snap = session.snapshot("fork")
    session.ask("Note fact-2 on the old branch.")
    old_tip = session.context.node
    session.rollback("fork")
    session.ask("Note fact-3 on the new branch.")
    new_tip = session.context.node
    parent_of = dict(session.store.conn.execute("SELECT id, parent FROM nodes").fetchall())

    def ancestors(node: int | None) -> list[int]:
        out = []
        while node is not None:
            out.append(node)
            node = parent_of[node]
        return out
    common = set(ancestors(old_tip)) & set(ancestors(new_tip))
    assert snap.context.node in common and old_tip not in common
    # the old branch is still there, via the snapshot the rollback left behind
    resumed = Session("t", session.settings, store=Store(store_path))
    old = next(s for s in resumed.snapshots if s.label.startswith("before rollback"))
    assert "fact-2 on the old branch" in json.dumps(old.context.wire())
    assert "fact-2" not in json.dumps(resumed.context.wire())
    assert "fact-3 on the new branch" in json.dumps(resumed.context.wire())


def test_rollback_to_an_unknown_snapshot_changes_nothing(session: Session) -> None:
    session.ask("Note fact-1.")
    session.snapshot("one")
    ctx, n = session.context, len(session.snapshots)
    with pytest.raises(SessionError) as err:
        session.rollback("nope")
    assert "\n" not in str(err.value) and "nope" in str(err.value)
    assert session.context is ctx and len(session.snapshots) == n
    with pytest.raises(SessionError):
        Session("empty", session.settings, store=session.store).rollback()


# -- 3. truncate --------------------------------------------------------------------------------
def test_truncate_keeps_system_pins_and_whole_tool_rounds(sim: Simulator,
                                                          session: Session) -> None:
    session.set_pin(pin("notes", "fact-0 lives here"))
    for n in range(1, 5):
        ask_with_tool(session, n)
    assert any(m.role == "tool" for m in session.context.history)
    before = session.context

    assert session.truncate(keep_rounds=2) == 2
    assert session.context.system == before.system and session.context.pins == before.pins
    assert session.context.history == tuple(m for r in before.rounds[2:] for m in r)
    session.ask("And now?")
    sent = chat_bodies(sim)[-1]["messages"]
    assert sent[0]["role"] == "system" and "fact-0 lives here" in sent[1]["content"]
    assert orphans(sent) == []
    assert "fact-1" not in json.dumps(sent) and "fact-3" in json.dumps(sent)

    # by tokens: keep as many whole rounds from the end as fit
    last_round = sum(m.tokens for m in session.context.rounds[-1])
    dropped = session.truncate(keep_tokens=last_round)
    assert dropped == 2 and len(session.context.rounds) == 1
    assert orphans(session.context.wire()) == []
    assert session.truncate(keep_rounds=5) == 0
    with pytest.raises(SessionError):
        session.truncate(keep_rounds=-1)


# -- 4. compress ----------------------------------------------------------------------------------
def test_compress_snapshots_first_and_a_failed_call_changes_nothing(sim: Simulator,
                                                                    session: Session) -> None:
    for n in range(1, 7):
        session.ask(f"Note fact-{n}: batch size {n * 32}, see /runs/{n}/metrics.json.")
    before = session.context
    sim.fail("server_error", times=10)
    with pytest.raises(KimiError):
        session.compress()
    assert session.context is before and session.snapshots == []
    reset_simulator(sim)

    result = session.compress()
    assert result.snapshot.context is before and result.snapshot == session.snapshots[-1]
    assert result.tokens_after < result.tokens_before and result.rounds == 3
    summary = session.context.summary
    assert summary is not None and len(session.context.rounds) == 3
    for n in range(1, 4):
        assert str(n * 32) in summary.text and f"/runs/{n}/metrics.json" in summary.text
    assert session.calls[-1]["kind"] == "compress"
    with pytest.raises(SessionError):
        session.compress(keep_rounds=5)


# -- 5. archive and recall ------------------------------------------------------------------------
def test_everything_that_leaves_the_context_is_recallable(sim: Simulator,
                                                          session: Session) -> None:
    for n in range(1, 9):
        session.ask(f"Note fact-{n}: the answer is zebra{n}.", cell_id=f"cell-{n}")
    session.ask("Note fact-9: replaced soon, zebra9.", cell_id="cell-9")
    session.ask("Note fact-10: the replacement, zebra10.", cell_id="cell-9")  # re-run a cell
    session.compress(keep_rounds=5)   # fact-1..3
    session.truncate(keep_rounds=3)   # fact-4, fact-5
    session.reset()                   # fact-6..8, fact-10 and the summary
    assert session.context.history == () and session.context.summary is None
    for n in range(1, 11):
        hits = session.recall(f"zebra{n}")
        assert hits and f"zebra{n}" in hits[0]["text"], n
    reasons = {h["reason"] for n in (1, 5, 7, 9) for h in session.recall(f"zebra{n}")}
    assert reasons == {"compressed", "truncated", "reset", "replaced"}

    hits = session.recall("zebra4", pin=True)
    assert any(p.kind == "recall" for p in session.context.pins)
    session.ask("What was fact-4?")
    assert "zebra4" in last_messages(sim)
    assert session.recall("nothingmatchesthis") == []
    with pytest.raises(SessionError):
        session.recall("  ")


# -- 6. the rolling policy ----------------------------------------------------------------------
def test_rolling_policy_compresses_past_the_threshold(settings: Settings,
                                                      store_path: Path) -> None:
    s = Session("roll", replace(settings, compact_at=2000), store=Store(store_path))
    notices = []
    for n in range(1, 30):
        turn = s.ask(f"Note fact-{n}: " + "the figures look steady this week. " * 12)
        notices += turn.notices
        if notices:
            break
    assert len(notices) == 1 and notices[0].startswith("Auto-compacted (context passed 2,000")
    assert s.tokens() < 2000 and s.context.summary is not None
    assert s.snapshots[-1].auto and s.snapshots[-1].tokens >= 2000
    assert len(s.context.rounds) == 3


def test_default_threshold_is_the_models_own(settings: Settings, store_path: Path) -> None:
    # A context resent whole every turn: past 100K tokens it costs more than compacting
    # (the benchmark's strategy run), so today's models default to 100K, not a fraction.
    store = Store(store_path)
    for model, threshold in (("kimi-k3", 100_000), ("kimi-k3.1-pro", 100_000),
                             ("kimi-k2.6", 100_000)):
        s = Session(f"t-{model}", replace(settings, model=model, compact_at=None), store=store)
        assert s.status()["threshold"] == threshold
    s = Session("set", replace(settings, model="kimi-k3", compact_at=0.5), store=store)
    assert s.status()["threshold"] == 524_288, "an explicit compact_at keeps its meaning"


def test_compact_model_writes_the_summary(sim: Simulator, settings: Settings,
                                          store_path: Path) -> None:
    s = Session("steer", replace(settings, model="kimi-k2.6", compact_at=2000,
                                 compact_model="kimi-k3.1-pro"), store=Store(store_path))
    for n in range(1, 30):
        if s.ask(f"Note fact-{n}: " + "the figures look steady this week. " * 12).notices:
            break
    assert s.context.summary is not None
    bodies = chat_bodies(sim)
    summarising = [b for b in bodies if "Summarise the conversation" in json.dumps(b)]
    assert [b["model"] for b in summarising] == ["kimi-k3.1-pro"]
    assert {b["model"] for b in bodies if b not in summarising} == {"kimi-k2.6"}


def test_rolling_policy_can_truncate_instead(settings: Settings, store_path: Path) -> None:
    s = Session("roll", replace(settings, compact_at=1500, compact_mode="truncate"),
                store=Store(store_path))
    notices = []
    for n in range(1, 30):
        notices += s.ask(f"Note fact-{n}: " + "more rows arrived today. " * 15).notices
        if notices:
            break
    assert notices[0].startswith("Auto-truncated") and s.context.summary is None
    assert s.tokens() < 1500 and s.recall("fact-1")


def test_compacts_before_sending_when_the_window_would_overflow(sim: Simulator,
                                                               settings: Settings,
                                                               store_path: Path) -> None:
    small = replace(settings, compact_at=0.99,
                    model_overrides={"kimi-k2.6": {"context_length": 6000}})
    s = Session("small", small, store=Store(store_path))
    for n in range(1, 9):
        s.ask(f"Note fact-{n}: " + "the cohort grew again. " * 20)
    assert s.context.summary is None
    turn = s.ask("Now the long one, fact-99: " + "detail " * 3300)
    assert any("would not fit" in n for n in turn.notices)
    assert any(n.startswith("Auto-compacted") for n in turn.notices)
    sent = next(b["messages"] for b in chat_bodies(sim)
                if b["messages"][-1]["content"].startswith("Now the long one"))
    assert "[Summary of earlier conversation" in json.dumps(sent)
    assert "fact-99" in json.dumps(s.context.wire()) or s.recall("fact-99")


def test_a_server_token_limit_compacts_and_retries_once(sim: Simulator, session: Session
                                                        ) -> None:
    filler = " We weighed the options at length before settling on the simple one." * 8
    for n in range(1, 7):
        session.ask(f"Note fact-{n}: a row of numbers {n * 101}.{filler}")
    sim.fail("token_limit_input")
    turn = session.ask("Carry on with fact-7.")
    assert any("too long; compacted and retried once" in n for n in turn.notices)
    # the turn extends the compacted context
    assert session.context.summary is not None
    assert session.context.history[-2].text == "Carry on with fact-7."
    assert len(session.context.rounds) == 4

    # the compaction's own call fails too (it falls back to truncating), then the retry
    sim.fail("token_limit_input", times=3)
    before_turns = len(session.calls)
    with pytest.raises(KimiError) as err:
        session.ask("And fact-8.")
    assert "\n" not in err.value.line() and "fact-8" not in json.dumps(session.context.wire())
    assert len([t for t in session.calls[before_turns:] if t["kind"] == "chat"]) == 0


# -- 7. cache-aware layout ------------------------------------------------------------------------
def test_requests_are_append_only_and_hit_the_cache(sim: Simulator, settings: Settings,
                                                    store_path: Path) -> None:
    now = [1_000_000.0]
    s = Session("cache", settings, store=Store(store_path), clock=lambda: now[0])
    s.set_pin(pin("schema", "columns: id, region, revenue " * 60))
    turns = [s.ask(f"Question fact-{n}: what about region {n}?") for n in range(1, 5)]
    bodies = chat_bodies(sim)
    for a, b in zip(bodies, bodies[1:], strict=False):
        assert b["messages"][: len(a["messages"])] == a["messages"]
        assert json.dumps(b["messages"]).startswith(json.dumps(a["messages"])[:-1])
    assert turns[0].usage.cached_tokens == 0
    assert all(t.usage.cached_tokens > 256 for t in turns[1:])

    status = s.status()
    assert 0 < status["cache_hit_rate"] < 1 and status["cache_warm"]
    assert status["next_turn_warm"] < status["next_turn_cold"]
    now[0] += 301
    assert not s.status()["cache_warm"] and s.status()["cache_seconds_left"] == 0

    s.settings.cache_ttl = "1h"
    assert s.status()["cache_warm"]
    now[0] += 3600
    assert not s.status()["cache_warm"]


# -- 8. persistence -------------------------------------------------------------------------------
def test_a_restarted_kernel_resumes_context_snapshots_and_archive(session: Session,
                                                                  store_path: Path) -> None:
    session.set_pin(pin("notes", "fact-0"))
    for n in range(1, 7):
        ask_with_tool(session, n) if n == 2 else session.ask(f"Note fact-{n}: value {n}5.")
    first = session.snapshot("first")
    session.compress()
    session.ask("Note fact-7: after compressing.")
    session.snapshot()
    wire = json.dumps(session.context.wire())

    resumed = Session("t", session.settings, store=Store(store_path))  # a new kernel
    assert json.dumps(resumed.context.wire()) == wire  # byte-identical, key order included
    assert [(s.id, s.label, s.rounds, s.tokens) for s in resumed.snapshots] == \
        [(s.id, s.label, s.rounds, s.tokens) for s in session.snapshots]
    again = next(s for s in resumed.snapshots if s.label == "first")
    assert json.dumps(again.context.wire()) == json.dumps(first.context.wire())
    assert resumed.recall("fact-1") and resumed.calls == session.store.turns("t")
    assert resumed.current_snapshot == session.current_snapshot
    resumed.rollback("first")
    assert json.dumps(resumed.context.wire()) == json.dumps(first.context.wire())

    for path in store_path.parent.glob("store.sqlite*"):
        assert TEST_KEY.encode() not in path.read_bytes(), path


def test_sessions_and_use_in_the_magic(ipython: Any, tmp_path: Path) -> None:
    from IPython.utils.capture import capture_output

    ipython.run_cell_magic("kimi", "-s alpha", "Note fact-1: alpha.")
    ipython.run_cell_magic("kimi", "-s beta", "Note fact-2: beta.")
    with capture_output() as out:
        ipython.run_line_magic("kimi", "sessions")
    shown = out.stdout + "".join(str(o.data) for o in out.outputs)
    assert "alpha" in shown and "beta" in shown
    # a new kernel on the same store resumes by name
    ipython.run_line_magic("unload_ext", "kimi_magic")
    ipython.run_line_magic("load_ext", "kimi_magic")
    with capture_output() as out:
        ipython.run_line_magic("kimi", "use alpha")
    assert "Resumed session 'alpha': 1 round," in out.stdout
