"""The store never loses a completed turn and never holds a half-written one.

A real writer process is SIGKILLed at random moments while it records turns; a corrupt file
is moved aside (never overwritten) with a warning; several processes, connections and
threads write to one file at once; and snapshot, rollback and compress from other threads
wait for a streaming ask instead of interleaving with it.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kimi_magic import Session, Settings, Store

WRITER = """
import sys
from kimi_magic import Session, Settings, Store

url, path, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = Session(name, Settings(base_url=url, api_key="sk-writer", retry_base=0.01,
                           compact_mode="off"), store=Store(path))
start = len(s.context.rounds)
print("ready", start, flush=True)
for i in range(start, start + n):
    s.ask(f"Fact {i}: item {i} costs {i * 7} euros.")
    if i % 3 == 2:
        s.snapshot()
    print("turn", i + 1, flush=True)
"""


@pytest.fixture
def writer(tmp_path: Path) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return script


def check_consistent(path: Path, name: str) -> int:
    """Open the store as a new kernel would; every chain loads; returns the rounds held."""
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Store(path)
    try:
        assert store.moved_aside is None
        s = Session(name, Settings(api_key="sk-x"), store=store)
        history = s.context.history
        roles = [m.role for m in history]
        assert roles == ["user", "assistant"] * (len(roles) // 2), "no half-written turn"
        facts = [m.text for m in history if m.role == "user"]
        assert facts == [f"Fact {i}: item {i} costs {i * 7} euros." for i in range(len(facts))]
        chat_turns = [t for t in store.turns(name) if t["kind"] == "chat"]
        assert len(chat_turns) == len(facts), "one turn row per round, no more, no less"
        for snap in s.snapshots:
            assert [m.role for m in snap.context.history] == ["user", "assistant"] * snap.rounds
        for row in store.sessions():
            assert store.load_session(row["name"]) is not None
        return len(facts)
    finally:
        store.close()


def test_sigkill_while_writing_leaves_the_last_completed_turns(sim, writer, tmp_path):
    path = tmp_path / "store.sqlite"
    rng = random.Random(1234)
    completed = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(writer), sim.url, str(path), "w", "50"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ready", str(completed)]
        target = completed + rng.randint(2, 5)
        while completed < target:
            line = proc.stdout.readline().split()
            assert line and line[0] == "turn", line
            completed = int(line[1])
        time.sleep(rng.uniform(0, 0.03))  # somewhere inside the next ask or its commit
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # turns it finished after our last read
            completed = int(line.split()[1])
        held = check_consistent(path, "w")
        assert held in (completed, completed + 1), "the turn in flight is all or nothing"
        completed = held


def test_two_processes_write_to_one_store_at_once(sim, writer, tmp_path):
    path = tmp_path / "store.sqlite"
    Store(path).close()
    procs = [subprocess.Popen([sys.executable, str(writer), sim.url, str(path), name, "8"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert check_consistent(path, "a") == 8
    assert check_consistent(path, "b") == 8


def test_corrupt_store_is_moved_aside_with_a_warning(sim, tmp_path):
    path = tmp_path / "store.sqlite"
    garbage = b"this is not a database\x00\xff" * 200
    path.write_bytes(garbage)
    with pytest.warns(UserWarning, match="unreadable.*moved it to"):
        store = Store(path)
    aside = Path(store.moved_aside or "")
    assert aside.name.startswith("store.sqlite.corrupt-")
    assert aside.read_bytes() == garbage, "the original bytes are kept, never overwritten"
    s = Session("t", Settings(base_url=sim.url, api_key="sk-x"), store=store)
    s.ask("My favourite number is 42.")
    store.close()
    assert check_consistent_any(path) == 1


def check_consistent_any(path: Path) -> int:
    store = Store(path)
    try:
        return len(Session("t", Settings(api_key="sk-x"), store=store).context.rounds)
    finally:
        store.close()


def test_corrupt_store_through_the_magic_warns_and_starts_afresh(ipython, sim, tmp_path):
    path = tmp_path / "store.sqlite"  # where the ipython fixture points KIMI_MAGIC_STORE
    path.write_bytes(b"\x13garbage" * 64)
    with pytest.warns(UserWarning, match="moved it to"):
        result = ipython.run_cell("%%kimi --out r\nMy favourite number is 42.")
    assert result.success
    assert [p.read_bytes() for p in tmp_path.glob("store.sqlite.corrupt-*")] == [
        b"\x13garbage" * 64]


def test_sessions_in_threads_share_one_store_and_separate_connections(sim, tmp_path):
    path = tmp_path / "store.sqlite"
    shared = Store(path)
    settings = Settings(base_url=sim.url, api_key="sk-x", retry_base=0.01, compact_mode="off")
    sessions = [Session(f"shared{i}", settings, store=shared) for i in range(3)]
    sessions += [Session(f"own{i}", settings, store=Store(path)) for i in range(2)]
    errors: list[BaseException] = []

    def talk(s: Session) -> None:
        try:
            for i in range(4):
                s.ask(f"Fact {i}: item {i} costs {i * 7} euros.")
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for s in sessions:
        assert check_consistent(path, s.name) == 4


def slow(sim) -> None:
    """Stream at 150 tokens/s so a reply takes about half a second."""
    sim.configure(tps=150)


def test_snapshot_during_a_streaming_ask_waits_for_it(session, sim):
    session.ask("My favourite number is 42.")
    slow(sim)
    streaming = threading.Event()
    result: dict[str, object] = {}

    def ask() -> None:
        result["turn"] = session.ask("What is my favourite number?",
                                     on_delta=lambda event: streaming.set())

    t = threading.Thread(target=ask)
    t.start()
    assert streaming.wait(10)
    snap = session.snapshot("during")  # waits for the turn: never a half-built context
    t.join(10)
    assert snap.rounds == 2
    assert [m.role for m in snap.context.history] == ["user", "assistant"] * 2
    assert "turn" in result


def test_lifecycle_calls_from_other_threads_never_interleave_with_asks(session, sim):
    s = Session("t", Settings(base_url=sim.url, api_key="sk-x", retry_base=0.01,
                              keep_rounds=1, compact_mode="off"), store=session.store)
    for i in range(3):
        s.ask(f"Fact {i}: item {i} costs {i * 7} euros.")
    slow(sim)
    errors: list[BaseException] = []
    events: list[tuple[str, object]] = []
    s.subscribe(lambda event, detail: events.append((event, threading.get_ident())))

    def run(fn) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    def asker() -> None:
        for i in range(3, 6):
            s.ask(f"Fact {i}: item {i} costs {i * 7} euros.")

    def lifecycle() -> None:
        for _ in range(2):
            s.snapshot()
            time.sleep(0.05)
            s.rollback()
            time.sleep(0.05)
        s.compress(1)

    threads = [threading.Thread(target=run, args=(asker,)),
               threading.Thread(target=run, args=(lifecycle,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    history = s.context.history
    assert [m.role for m in history] == ["user", "assistant"] * (len(history) // 2)
    fresh = Session("t", s.settings, store=Store(s.store.path))
    assert fresh.context.wire() == s.context.wire(), "the store loads to the same context"
    assert json.dumps([t["kind"] for t in fresh.calls]) == json.dumps(
        [t["kind"] for t in s.calls])
    for snap in fresh.snapshots:
        roles = [m.role for m in snap.context.history]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
    assert any(e == "compact" for e, _ in events)
