"""The store's versioned schema: a file written by schema version 1 (tests/fixtures, made by
that version's code) opens, migrates and keeps every session, snapshot, archive row and
batch job; each migration step is run on the file it is for."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import TEST_KEY
from kimi_magic import Options, Session, Settings, Store, batch
from kimi_magic.core import migrations
from kimi_magic.core.errors import StoreError

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1.sqlite"


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    path = tmp_path / "v1.sqlite"
    shutil.copyfile(FIXTURE, path)
    return path


def raw(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def texts(ctx) -> list[str]:
    return [m.text for m in ctx.history if m.role == "user"]


def test_the_fixture_is_a_version_1_file():
    assert raw(FIXTURE, "SELECT value FROM meta WHERE key = 'schema'") == [("1",)]
    tables = {r[0] for r in raw(FIXTURE, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "migrations" not in tables and "batches" in tables


def test_a_version_1_store_migrates_and_keeps_everything(v1, sim):
    store = Store(v1)
    assert [r[:2] for r in store.conn.execute("SELECT version, name FROM migrations")] == [
        (1, "m001_sessions"), (2, "m002_batches")]
    assert raw(v1, "SELECT value FROM meta WHERE key = 'schema'") == [
        (str(migrations.latest()),)]
    assert {s["name"]: (s["turns"], s["snapshots"]) for s in store.sessions()} == {
        "work": (12, 5), "scratch": (2, 0)}
    settings = Settings(base_url=sim.url, api_key=TEST_KEY, retry_base=0.01)
    work = Session("work", settings, store=store)

    # The head: rolled back to "experiments", then one more round; the pin is still there.
    assert texts(work.context) == [
        "The learning rate is 0.003 and the batch size is 64.",
        "The dataset lives at /data/runs/alpha.parquet.",
        "We tried dropout 0.25; validation loss was 1.874.",
        "Error seen: CUDA_ERROR_ILLEGAL_ADDRESS in step 4411.",
        "Back on the experiments branch: retry with dropout 0.3."]
    assert [p.name for p in work.context.pins] == ["conventions"]
    assert "ZEBRA-17" in work.context.pins[0].message.text
    assert work.current_snapshot == 2

    snaps = [(s.id, s.label, s.rounds, s.parent, s.auto) for s in work.snapshots]
    assert snaps == [(1, "baseline", 2, None, False), (2, "experiments", 4, 1, False),
                     (3, "branch-b", 3, 1, False), (4, "#4", 7, 3, False),
                     (5, "before rollback to experiments", 2, 4, True)]
    branch = work.find_snapshot("branch-b").context
    assert texts(branch)[-1] == "Branch B: switch the optimizer to Lion with weight decay 0.07."
    before_rollback = work.find_snapshot(5).context
    assert before_rollback.summary is not None
    assert texts(before_rollback) == ["After compress: the final run id is run-7f3a.",
                                      "Last question: what is the project code?"]
    assert before_rollback.history[-2].meta == {"cell_id": "cell-last"}

    assert [a["reason"] for a in store.archived("work")] == ["compressed"] * 5 + ["truncated"] * 2
    assert [a["reason"] for a in store.archived("scratch")] == ["reset"]
    hits = work.recall("ckpt-9002")
    assert hits and "checkpoint ckpt-9002 scored 0.63" in hits[0]["text"]
    assert hits[0]["reason"] == "truncated"
    assert [m.role for m in hits[0]["messages"]] == ["user", "assistant"]
    scratch = Session("scratch", settings, store=store)
    assert "xylophone-42" in scratch.recall("xylophone")[0]["text"]
    assert texts(scratch.context) == ["Fresh start after reset."]

    [job] = batch.jobs(store)
    assert (job.session, job.items, job.status, job.out, job.source) == (
        "work", 3, "completed", "colours", "fruit")
    assert job.collected is not None and job.failed == 0 and job.cost > 0
    assert job.mapping["items"] == ["apple", "sky", "grass"]
    assert len([t for t in store.turns("work") if t["kind"] == "map"]) == 3

    # Rolling back to an old snapshot restores it, and the next turn sends exactly it.
    work.rollback("#4")
    assert texts(work.context)[-1] == "Note 3: checkpoint ckpt-9003 scored 0.64."
    sim.clear_requests()
    work.ask("And now?", options=Options(think=False))
    sent = [m["content"] for m in sim.requests[-1]["body"]["messages"]]
    assert "Note 0: checkpoint ckpt-9000 scored 0.61." in sent and sent[-1] == "And now?"
    assert any("ZEBRA-17" in str(c) for c in sent)
    store.close()

    # A second open is a read: nothing is applied twice.
    again = Store(v1)
    assert [r[0] for r in again.conn.execute("SELECT version FROM migrations")] == [1, 2]
    resumed = Session("work", settings, store=again)
    assert [s.label for s in resumed.snapshots][-1] == "before rollback to #4"
    assert texts(resumed.context)[-2:] == ["Note 3: checkpoint ckpt-9003 scored 0.64.", "And now?"]
    again.close()


def test_step_1_builds_a_new_file(tmp_path):
    path = tmp_path / "new.sqlite"
    Store(path).close()
    tables = {r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"messages", "nodes", "sessions", "turns", "snapshots", "archive", "archive_fts",
            "batches", "migrations", "meta"} <= tables
    assert [r[0] for r in raw(path, "SELECT version FROM migrations")] == [1, 2]


def test_step_2_adds_batches_to_a_version_1_file_that_never_ran_one(v1, session, sim):
    with sqlite3.connect(v1) as conn:
        conn.execute("DROP TABLE batches")
    store = Store(v1)
    assert batch.jobs(store) == []
    work = Session("work", session.settings, store=store)
    work.settings.batch_poll_seconds = 0
    job = batch.submit(work, "Say {item}", ["a", "b"], options=Options(think=False))
    results, summary = batch.collect(work, job.id, progress=False)
    assert summary.ok == 2 and len(results) == 2
    assert [j.id for j in batch.jobs(store, "work")] == [job.id]
    store.close()


def test_a_file_from_a_newer_version_is_refused_and_left_alone(v1):
    Store(v1).close()
    with sqlite3.connect(v1) as conn:
        conn.execute("INSERT INTO migrations VALUES (99, 'm099_future', 0)")
    before = v1.read_bytes()
    with pytest.raises(StoreError) as err:
        Store(v1)
    assert "schema version 99" in str(err.value) and "\n" not in str(err.value)
    assert v1.read_bytes() == before
    assert not list(v1.parent.glob("*.corrupt-*"))


def test_steps_are_numbered_in_order():
    names = [m.__name__ for m in migrations.MIGRATIONS]
    assert names == sorted(names) and names[0].startswith("m001_")

    def m001_duplicate(conn):
        pass

    with pytest.raises(ValueError):
        migrations.migration(m001_duplicate)
