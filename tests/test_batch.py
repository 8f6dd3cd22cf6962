"""``--map --batch``: the Batch API end to end against the simulator, and resuming after a
kernel restart (a new Store and Session on the same file)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from conftest import TEST_KEY
from kimi_magic import MapFailure, Options, Session, SessionError, Store, batch
from kimi_magic.core.models import BATCH_DISCOUNT, MODELS


def uploads(sim):
    """The JSONL files the client uploaded, as parsed lines."""
    files = [f for f in sim.files.list() if f["purpose"] == "batch"]
    return [[json.loads(line) for line in sim.files.get(f["id"]).data.decode().splitlines()]
            for f in files]


@pytest.fixture
def fast(session):
    session.settings.batch_poll_seconds = 0
    return session


def test_two_hundred_items_with_a_failing_line(fast, sim, store_path):
    items = [f"city {i}" for i in range(200)]
    items[57] = "FAIL_THIS_LINE please"
    job = batch.submit(fast, "Name a landmark in {item}.", items, options=Options(think=False))
    lines = uploads(sim)[-1]
    assert len(lines) == 200
    assert {line["method"] for line in lines} == {"POST"}
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert len({line["custom_id"] for line in lines}) == 200
    body = lines[3]["body"]
    assert body["model"] == "kimi-k2.6"
    assert body["thinking"] == {"type": "disabled"} and "extra_body" not in body
    assert body["messages"][-1] == {"role": "user", "content": "Name a landmark in city 3."}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    batches = [r for r in sim.requests if r["path"] == "/v1/batches"]
    assert batches[-1]["body"]["completion_window"] == "24h"

    results, summary = batch.collect(fast, job.id)
    assert len(results) == 200
    assert isinstance(results[57], MapFailure) and "marked to fail" in results[57]
    assert all(f"city {i}" in results[i] for i in range(200) if i != 57)
    assert summary.ok == 199 and [f.index for f in summary.failures] == [57]
    assert "#57" in summary.notices[0]
    rows = [t for t in fast.store.turns("t") if t["kind"] == "map"]
    assert len(rows) == 199
    k26 = MODELS["kimi-k2.6"]
    full = sum(k26.cost(r["prompt_tokens"], r["cached_tokens"], r["completion_tokens"])
               for r in rows)
    assert summary.cost == pytest.approx(full * BATCH_DISCOUNT)
    assert "60% of the price" in summary.line()
    # The key never lands in the uploaded JSONL or the store.
    assert TEST_KEY not in json.dumps(uploads(sim))
    fast.store.close()
    for suffix in ("", "-wal"):
        path = store_path.parent / (store_path.name + suffix)
        if path.exists():
            assert TEST_KEY.encode() not in path.read_bytes()


def test_k3_is_refused_before_anything_is_uploaded(fast, sim):
    before = len(uploads(sim))
    with pytest.raises(SessionError) as err:
        batch.submit(fast, "Say {item}", ["a"], model="kimi-k3")
    assert "not available in the Batch API" in str(err.value)
    assert "\n" not in str(err.value)
    assert len(uploads(sim)) == before


def test_auto_picks_a_batch_model(fast, sim):
    job = batch.submit(fast, "Say {item}", ["a"], model="auto")
    assert job.model == "kimi-k2.6"


def test_resume_after_a_kernel_restart(settings, store_path, sim):
    first = Session("t", settings, store=Store(store_path))
    names = pd.Series(["Ada", "Grace"], index=[7, 9], name="who")
    job = batch.submit(first, "Greet {item}", names)
    first.store.close()  # the kernel dies before collecting

    store = Store(store_path)
    again = Session("t", settings, store=store)
    pending = batch.jobs(store)
    assert [(j.id, j.items, j.collected) for j in pending] == [(job.id, 2, None)]
    polls = []
    results, summary = batch.collect(again, interval=0.5, sleep=polls.append)
    assert polls == [0.5, 0.5], "polled at the configured interval until completed"
    assert isinstance(results, pd.Series) and list(results.index) == [7, 9]
    assert results.name == "who" and "Grace" in results[9]
    assert summary.recorded and len([t for t in again.calls if t["kind"] == "map"]) == 2
    # Collecting again gives the results but never bills twice.
    results2, summary2 = batch.collect(again, job.id, interval=0)
    assert list(results2) == list(results) and not summary2.recorded
    assert len([t for t in store.turns("t") if t["kind"] == "map"]) == 2
    assert batch.jobs(store)[0].status == "completed"
    store.close()


# -- the magic -----------------------------------------------------------------------------------

@pytest.fixture
def shell(ipython):
    ipython.run_line_magic("config", "KimiMagic.batch_poll_seconds = 0")
    return ipython


def test_magic_batch_then_list_and_collect_again(shell, sim):
    shell.user_ns["words"] = ["sun", "moon", "FAIL_THIS_LINE star"]
    with capture_output() as out:
        shell.run_cell_magic("kimi", "--map words --batch --out meanings", "Define {item}.")
    meanings = shell.user_ns["meanings"]
    assert "sun" in meanings[0] and isinstance(meanings[2], MapFailure)
    shown = out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)
    assert "Submitted batch batch_" in shown and "%kimi batches collect" in shown
    assert "2 of 3 items answered, 1 failed" in shown

    with capture_output() as out:
        shell.run_line_magic("kimi", "batches")
    table = "".join(o.data.get("text/plain", "") for o in out.outputs)
    assert "completed" in table and "kimi-k2.6" in table
    job_id = batch.jobs(shell.magics_manager.registry["KimiMagic"].sessions.store)[0].id
    with capture_output():
        shell.run_line_magic("kimi", f"batches collect {job_id} --out again")
    assert list(shell.user_ns["again"]) == list(meanings)
    with pytest.raises(UsageError, match="no batch"):
        shell.run_line_magic("kimi", "batches collect batch_nope")


def test_magic_batch_with_k3_is_one_line(shell, sim):
    shell.user_ns["xs"] = [1, 2]
    with pytest.raises(UsageError, match="not available in the Batch API"):
        shell.run_cell_magic("kimi", "--map xs --batch -m kimi-k3", "Say {item}")
    with pytest.raises(UsageError, match="--batch works with --map"):
        shell.run_cell_magic("kimi", "--batch", "Say hi")
