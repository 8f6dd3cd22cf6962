"""The compress fact check: what counts as a fact in notebook text, and what ``check`` restores.

Unit tests of ``facts``/``check`` on realistic text (prose, pasted code, logs, tracebacks,
dataframe output), then the whole ``Session.compress`` against the simulator's lossy summariser.
"""

from __future__ import annotations

import pytest

from kimi_magic import Session
from kimi_magic.core.compress import ALTERED_LINE, VERBATIM_HEADER, check, earlier, facts, present
from kimi_magic.simulator import Simulator

PROSE = ("USER: Fact-0: the run id is RUN-1000 and loss was 0.023 at /data/run0/log.txt. "
         "Remember it.\n\nASSISTANT: Noted. See https://example.com/runs?id=7 for details, "
         "e.g. the 3 plots.")
CODE = '''import pandas as pd
df = pd.read_csv("data/sales_2024.csv")
MAX_RETRIES = 5
model.fit(X_train, y_train, epochs=5, lr=3e-4)
'''
LOG = '''2024-05-01 12:00:01,123 INFO train.py:42 epoch 1/10 loss=0.6931 acc=0.512
2024-05-01 12:00:05,456 INFO train.py:42 epoch 2/10 loss=0.5123 acc=0.634
2024-05-01 12:00:09,789 WARNING data.py:88 dropped 17 rows with NaN
'''
TRACEBACK = '''Traceback (most recent call last):
  File "/home/u/proj/train.py", line 42, in <module>
    main()
RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total)
'''
DATAFRAME = '''   region  revenue  units
0   north  1234.50     12
1   south   987.25      9
'''


def test_prose_facts_are_ids_numbers_paths_and_urls_not_role_labels() -> None:
    found = facts(PROSE)
    assert found == ["Fact-0", "RUN-1000", "0.023", "/data/run0/log.txt",
                     "https://example.com/runs?id=7"]
    # role labels, abbreviations and lone digits ("the 3 plots") are not facts
    assert not {"USER", "ASSISTANT", "e.g", "3", "-0"} & set(found)


def test_code_facts_are_identifiers_paths_and_constants() -> None:
    found = facts(CODE)
    for wanted in ("pd.read_csv", "data/sales_2024.csv", "MAX_RETRIES", "model.fit", "y_train",
                   "3e-4"):
        assert wanted in found
    assert "-4" not in found and "5" not in found


def test_log_lines_give_the_date_once_and_no_clock_fragments() -> None:
    found = facts(LOG)
    assert found.count("2024-05-01") == 1
    assert {"0.6931", "0.5123", "17", "train.py", "data.py"} <= set(found)
    # times of day, their pieces and log levels would swamp the verbatim section
    assert not {"12", "00", "01,123", "-05", "-01", "INFO", "WARNING", "/10"} & set(found)


def test_traceback_keeps_the_exception_line_not_the_header() -> None:
    found = facts(TRACEBACK)
    assert found[0].startswith("RuntimeError: CUDA out of memory")
    assert "/home/u/proj/train.py" in found and "15.78" in found
    assert not any(f.startswith("Traceback") for f in found)
    assert not {"GiB", "GPU", "CUDA"} & set(found)


def test_dataframe_output_keeps_the_values() -> None:
    assert facts(DATAFRAME) == ["1234.50", "12", "987.25"]


def test_facts_are_a_small_share_of_a_long_log() -> None:
    # 300 near-identical log lines: the date is one fact, the numbers are what vary.
    log = "".join(f"2024-05-01 12:{i % 60:02d}:00,000 INFO step {i} ok\n" for i in range(300))
    found = facts(log)
    assert found[0] == "2024-05-01"
    assert len(found) < 300


def test_present_matches_whole_tokens_only() -> None:
    assert present("0.5", "lr is 0.5 now")
    assert not present("0.5", "lr is 0.55 now")
    assert not present("RUN-100", "RUN-1000")
    assert present("/data/x.csv", "read /data/x.csv.")
    assert not present("12", "2024-05-12 was 120")


def test_check_restores_missing_and_altered_facts_with_their_sentence() -> None:
    source = ("The learning rate was 3e-4 on run RUN-1000. Results are in /data/out.csv. "
              "Accuracy reached 0.913 after 40 epochs.")
    summary = "## Facts and figures\n- Learning rate 3e-4 on RUN-1001; accuracy 0.913."
    fixed, result = check(source, summary, budget=1000)
    assert fixed.startswith(summary)
    assert VERBATIM_HEADER in fixed
    tail = fixed.split(VERBATIM_HEADER, 1)[1]
    assert "- The learning rate was 3e-4 on run RUN-1000." in tail
    assert "- Results are in /data/out.csv." in tail
    assert "40 epochs" in tail
    assert result.missing == ["RUN-1000", "/data/out.csv", "40"]
    assert result.altered == ["RUN-1001"]
    assert "RUN-1001" in tail.splitlines()[-1]  # flagged as not in the original
    assert set(result.restored) == set(result.missing)
    assert result.retained == 1.0
    assert all(present(f, fixed) for f in facts(source))


def test_check_leaves_a_complete_summary_alone() -> None:
    source = "Run RUN-7 scored 0.91 at /tmp/a.txt."
    summary = "RUN-7 scored 0.91 (/tmp/a.txt)."
    fixed, result = check(source, summary, budget=1000)
    assert fixed == summary and not result.missing and result.facts == 3


def test_check_keeps_bare_values_then_drops_past_the_budget() -> None:
    source = " ".join(f"Sentence number {i} mentions run RUN-{1000 + i} in passing words here."
                      for i in range(200))
    fixed, result = check(source, "nothing kept", budget=300)
    assert result.dropped, "a 300-token budget cannot hold 200 sentences"
    assert result.retained < 1.0
    assert set(result.restored) | set(result.dropped) == set(result.missing)
    from kimi_magic.core import tokens
    assert tokens.count(fixed) < 300 + 60


@pytest.fixture
def long_session(session: Session) -> tuple[Session, list[str]]:
    """24 rounds of chatter, each planting a run id and a score."""
    filler = ("We looked at the notebook again and weighed the trade-offs of each option "
              "before settling on the simplest one that works. ")
    planted: list[str] = []
    for i in range(24):
        score = f"{(i * 7919) % 90000 + 1000}.{i + 10}"
        planted.append(f"RUN-{3000 + i}")
        planted.append(score)
        session.ask(f"{filler * 2}Note fact-{i}: run RUN-{3000 + i} reached {score}. {filler}")
    return session, planted


def test_lossy_summary_keeps_every_planted_fact(sim: Simulator,
                                                long_session: tuple[Session, list[str]]
                                                ) -> None:
    session, planted = long_session
    sim.configure(summary_fidelity="lossy")
    deltas: list[str] = []
    result = session.compress(on_delta=lambda event: deltas.append(event.text))
    summary = session.context.summary.text
    compressed = planted[: 2 * 21]  # the last 3 rounds stay verbatim
    assert [f for f in compressed if not present(f, summary)] == []
    assert result.check.restored, "the lossy summariser drops facts: the check restored them"
    assert result.check.altered, "...and alters some: the check flagged them"
    assert "".join(deltas), "the summary streamed"
    # tokens before -> after: with a fact in every sentence and two thirds of them lost by
    # the summariser, the restored sentences cost a lot; still well over 2:1.
    old = sum(m.tokens for r in result.snapshot.context.rounds[:21] for m in r)
    ratio = old / session.context.summary.tokens
    print(f"\ncompress: {result.tokens_before} -> {result.tokens_after} tokens; "
          f"compressed rounds {old} -> summary {session.context.summary.tokens} "
          f"({ratio:.1f}:1)")
    assert ratio > 2.0
    assert result.tokens_after < result.tokens_before * 0.6


def test_faithful_summary_compresses_about_four_to_one(
        sim: Simulator, long_session: tuple[Session, list[str]]) -> None:
    session, planted = long_session
    result = session.compress()
    old = sum(m.tokens for r in result.snapshot.context.rounds[:21] for m in r)
    assert old / session.context.summary.tokens > 3.5
    assert [f for f in planted[:42] if not present(f, session.context.summary.text)] == []
    assert not result.check.altered


def test_second_compression_folds_in_the_first_and_keeps_its_verbatim_section(
        sim: Simulator, long_session: tuple[Session, list[str]]) -> None:
    session, planted = long_session
    sim.configure(summary_fidelity="lossy")
    session.compress()
    for i in range(24, 30):
        session.ask(f"Note fact-{i}: run RUN-{3000 + i} reached {i}.5 points.")
    session.compress()
    request = next(r["body"] for r in reversed(sim.requests)
                   if r["path"].endswith("/chat/completions"))
    # The earlier summary is folded in: it is part of the conversation the request summarises.
    assert any(m["role"] == "system" and m["content"].startswith("[Summary of earlier")
               for m in request["messages"][:-1])
    assert "including any earlier summary" in request["messages"][-1]["content"]
    summary = session.context.summary.text
    kept = planted[: 2 * 21] + [f"RUN-{3000 + i}" for i in range(24, 27)]
    assert [f for f in kept if not present(f, summary)] == []
    assert summary.count("[Summary of earlier conversation") == 1


def test_an_earlier_summary_feeds_the_next_without_its_flagged_values() -> None:
    first, _ = check("Run RUN-1000 scored 0.91 on 2024-05-01.",
                     "## Facts and figures\n- RUN-2000 scored 0.91.", budget=1000)
    material = earlier(first)
    assert material.startswith(VERBATIM_HEADER)  # verified lines come first
    assert "RUN-1000 scored 0.91 on 2024-05-01" in material
    assert "RUN-2000" not in material and "(?) scored 0.91" in material
    assert ALTERED_LINE not in material
    # the next check treats the earlier verbatim facts as facts, the flagged value not
    assert {"RUN-1000", "2024-05-01"} <= set(facts(material))
    assert "RUN-2000" not in facts(material)


def test_compress_rereads_the_context_from_the_prompt_cache(
        sim: Simulator, long_session: tuple[Session, list[str]]) -> None:
    session, _ = long_session
    chats = [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]
    last_turn = chats[-1]["messages"]
    session.compress()
    request = [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")][-1]
    # The conversation as the last turn sent it (plus its reply), then one instruction.
    assert request["messages"][: len(last_turn)] == last_turn
    assert "except my last 3 messages" in request["messages"][-1]["content"]
    row = [t for t in session.calls if t["kind"] == "compress"][-1]
    assert row["cached_tokens"] > 0.8 * row["prompt_tokens"], "billed mostly as cache hits"
    assert request["max_completion_tokens"] < 2 * session.settings.summary_tokens


def test_compress_sends_a_transcript_when_the_context_would_not_fit(
        sim: Simulator, long_session: tuple[Session, list[str]]) -> None:
    session, planted = long_session
    session.settings.model_overrides = {"kimi-k2.6": {"context_length": 5000}}
    session.compress()
    request = [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")][-1]
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["messages"][1]["content"].startswith("Please summarise this conversation")
    assert [f for f in planted[:42] if not present(f, session.context.summary.text)] == []


def test_dotted_versions_and_addresses_are_one_fact_each() -> None:
    text = "Firmware OVN-2.4.1 on host 10.0.0.12 runs release 2.4.1; the invoice is INV-20931."
    assert facts(text) == ["OVN-2.4.1", "10.0.0.12", "2.4.1", "INV-20931"]
    assert all(present(f, text) for f in facts(text)), "every fact is found in its own text"


def test_compress_in_a_shell_restores_no_fragment_of_a_version(ipython, sim: Simulator) -> None:
    # The quickstart's compress "restored" OVN-2 from "OVN-2.4.1": a fragment the summary
    # already held whole, cut at the first dot, presented to the model as a lost fact.
    from IPython.utils.capture import capture_output

    for prompt in ("I run a bakery. Last week our best seller was the almond croissant: 412 "
                   "sold at $3.80 each.\nThe oven firmware version is OVN-2.4.1, the gateway "
                   "is 10.0.0.12 and the supplier invoice is INV-20931.",
                   "What was our best seller last week, and how many did we sell?",
                   "Which firmware does the oven run?"):
        ipython.run_cell(f"%%kimi\n{prompt}")
    with capture_output() as out:
        assert ipython.run_cell("%kimi compress --keep-rounds 1").success
    summary = ipython.magics_manager.registry["KimiMagic"].session.context.summary.text
    assert "OVN-2.4.1" in summary and "10.0.0.12" in summary
    kept = summary.split(VERBATIM_HEADER)[1] if VERBATIM_HEADER in summary else ""
    assert "OVN-2\n" not in kept + "\n" and "10.0\n" not in kept + "\n", kept
    assert "Compressed 2 rounds" in out.stdout, out.stdout
