"""Compaction's mask stage and the compress that never grows the context, through a real
shell against the simulator: what each request carried (and did not), what the user saw.
"""

from __future__ import annotations

import json
import re

from IPython.utils.capture import capture_output

from kimi_magic.core.context import Message
from kimi_magic.core.masking import STUB_START, pasted_blocks

LOG = "\n".join(f"2026-11-0{1 + i % 9} 09:{i % 60:02d}:{i % 59:02d} INFO worker-{i % 8} "
                f"processed batch {1000 + i} in {20 + i} ms ({100 + 3 * i} rows)"
                for i in range(160))
DECISION = "We decided to ship on Friday because the audit ends on Thursday, said Ingrid Solberg."


def chats(sim):
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    assert result.success, result.error_in_exec
    return out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)


def session(shell):
    return shell.magics_manager.registry["KimiMagic"].session


def configure(shell, **values):
    for name, value in values.items():
        run(shell, f"%config KimiMagic.{name} = {value!r}")


def test_pasted_blocks_are_the_log_not_the_prose_around_it():
    text = f"{DECISION} Here is the log:\n\n{LOG}\n\nPlease keep this in mind."
    (start, end, kind), = pasted_blocks(text)
    assert kind == "log" and text[start:end].strip() == LOG
    code = "def f(x):\n    return x + 1\n\n\ndef g(y):\n    return y * 2\n"
    (start, end, kind), = pasted_blocks(f"Refactor this:\n\n{code}")
    assert kind == "code" and code.strip() in f"Refactor this:\n\n{code}"[start:end]
    # A wordy log without timestamps is still a paste (its lines start alike); typed prose,
    # even long and hard-wrapped, is not.
    wordy = "\n".join(f"log line {i}: request id req-{i:05d} took {i * 7} ms" for i in range(40))
    assert [k for _, _, k in pasted_blocks(f"Remember this log:\n{wordy}")] == ["text"]
    prose = "\n".join(f"{w} we weighed option {i} against the others and kept the simple one"
                      for i, w in enumerate(["First", "Then", "Later", "So", "After", "Now",
                                             "Still", "Finally", "Overall"]))
    assert pasted_blocks(prose) == []


def test_auto_compaction_masks_old_pastes_without_a_model_call(ipython, sim):
    configure(ipython, compact_at=2500, keep_rounds=1, mask_tokens=500)
    ipython.user_ns["log"] = LOG
    text = run(ipython, f"%%kimi\n{DECISION} Here is the log:\n\n{{log}}\n\nKeep it in mind.")
    assert "Auto-masked" in text and "Masked 1 pasted block of round 1" in text
    assert len(chats(sim)) == 1, "masking called no model: no compress request"
    run(ipython, "%%kimi\nWhat should we look at first?")
    s = session(ipython)
    assert s.context.summary is None and len(s.context.rounds) == 2
    assert s.tokens() < 2500
    stub = s.context.rounds[0][0].text
    ident = re.search(r"mask-[0-9a-f]{10}", stub).group(0)

    run(ipython, "%%kimi\nAnd then?")
    sent = json.dumps(chats(sim)[-1]["messages"])
    assert STUB_START in sent and ident in sent and DECISION in sent
    assert "processed batch 1100" not in sent, "the log itself was not sent again"
    # The prefix changed once, at compaction: this turn's request extends the one before.
    last, before = chats(sim)[-1]["messages"], chats(sim)[-2]["messages"]
    assert last[: len(before)] == before

    # The stub's own recall gives the log back whole; so does the core and the tool's search.
    text = run(ipython, f"%kimi recall {ident}")
    assert LOG in text
    assert any(LOG in h["text"] for h in s.recall(ident))
    run(ipython, "%%kimi --tools\nsim:call recall_archive {\"query\": \"" + ident + "\"}\n"
                 "Get the log back.")
    results = [m["content"] for body in chats(sim) for m in body["messages"]
               if m["role"] == "tool" and "recall_archive" in m.get("name", "")]
    assert any(LOG in r for r in results), "the recall tool returns the masked text whole"
    # And rollback to the snapshot taken before masking restores the paste in the context.
    snap = next(sn for sn in s.snapshots if "before mask" in sn.label)
    run(ipython, f"%kimi rollback {snap.id}")
    assert LOG in s.context.rounds[0][0].text


def test_masked_tool_results_keep_their_pairing_on_the_wire(ipython, sim):
    ipython.run_cell("def read_log() -> str:\n"
                     "    '''The service log.'''\n"
                     f"    return {LOG!r}\n")
    run(ipython, "%kimi tool read_log")
    # Past the threshold, the mask stage alone brings the context under it: no summary
    # replaces the round, so what goes on the wire is the stubbed round itself.
    configure(ipython, compact_at=5000, keep_rounds=1, mask_tokens=500)
    text = run(ipython, "%%kimi --tools\nsim:call read_log {}\nRead the log, please.")
    call_id = next(m for m in chats(sim)[-1]["messages"] if m["role"] == "tool")["tool_call_id"]
    # (Its round holds the notebook's note of the cell that defined read_log: a listing too.)
    assert "1 tool result of round 1" in text and "Compress" not in text

    run(ipython, "%%kimi\nWhat now?")
    messages = chats(sim)[-1]["messages"]
    tool = next(m for m in messages if m["role"] == "tool")
    assert tool["tool_call_id"] == call_id and tool["content"].startswith(STUB_START)
    assert "the result of read_log" in tool["content"]
    # One line naming what was there, its size, and how to get it back.
    assert "\n" not in tool["content"] and re.search(r"\(\d[\d,]* tokens", tool["content"])
    assert re.search(r"%kimi recall mask-[0-9a-f]{10} or the recall_archive tool",
                     tool["content"])
    assert LOG not in json.dumps([m for m in messages if m["role"] == "tool"])
    asked = next(m for m in messages if m.get("tool_calls"))
    assert asked["tool_calls"][0]["id"] == call_id, "the call it answers is untouched"


def dense(i: int) -> str:
    """A round of figures only: a lossy summary drops them and the check restores each."""
    return " ".join(f"RUN-{i}{j:02d} hit {j}.{i}7." for j in range(30))


def test_a_summary_longer_than_its_rounds_is_not_used(ipython, sim):
    # What a small real model did (2,383 tokens of summary and restored facts for 1,713
    # tokens of rounds): the simulator's lossy summariser loses the figures, and the fact
    # check's restored sentences make the summary longer than the rounds.
    configure(ipython, keep_rounds=0, mask_tokens=None)
    sim.configure(summary_fidelity="lossy")
    for i in range(2):
        run(ipython, "%%kimi\n" + dense(i))
    s = session(ipython)
    before = s.context.wire()
    text = run(ipython, "%kimi compress")
    assert "Compress kept the original 2 rounds" in text and "not fewer than" in text
    assert s.context.wire() == before and s.context.summary is None
    assert [c["kind"] for c in s.calls].count("compress") == 1, "its cost is still recorded"
    result = s.compress()
    assert result.kept and result.summary_tokens >= result.replaced_tokens
    assert result.snapshot is None and s.context.wire() == before


def test_auto_compaction_that_cannot_summarise_smaller_truncates_at_the_threshold(
        ipython, sim):
    configure(ipython, compact_at=400, keep_rounds=1)
    sim.configure(summary_fidelity="lossy")
    run(ipython, "%%kimi\n" + dense(0))
    text = run(ipython, "%%kimi\n" + dense(1))
    # The last round alone fills half the threshold, so both rounds are compacted.
    assert "Compress kept the original 2 rounds" in text and "Auto-truncated 2 rounds" in text
    notices = [line for line in text.splitlines() if "Auto-" in line]
    assert len(notices) == 2, "one line per stage"
    s = session(ipython)
    assert s.context.summary is None and len(s.context.rounds) == 0
    assert any("RUN-000" in h["text"] for h in s.recall("RUN-000"))


def test_mask_tokens_none_turns_the_stage_off(ipython, sim):
    configure(ipython, keep_rounds=0, mask_tokens=None)
    ipython.user_ns["log"] = LOG
    run(ipython, "%%kimi\nThe log:\n\n{log}")
    run(ipython, "%kimi compress")
    assert STUB_START not in json.dumps(chats(sim)[-1]["messages"])


def test_the_sent_prefix_changes_only_on_the_turns_that_compact(ipython, sim):
    # Over a session that masks more than once, each request's messages begin with the
    # previous request's, except right after a cell whose compaction notice says it edited
    # the context: the prefix (and so the prompt cache) changes once per compaction.
    configure(ipython, compact_at=2500, keep_rounds=1, mask_tokens=500)
    ipython.user_ns["log"] = LOG
    compacted = []
    for i in range(8):
        body = f"Here is log {i}:\n\n{{log}}\n\nNote it." if i % 3 == 0 else f"Question {i}?"
        compacted.append("Auto-" in run(ipython, "%%kimi\n" + body))
    bodies = chats(sim)
    assert len(bodies) == 8, "masking called no model"
    assert sum(compacted) >= 2, "the session compacted more than once"
    for i in range(1, 8):
        before, now = bodies[i - 1]["messages"], bodies[i]["messages"]
        extends = now[: len(before)] == before
        assert extends != compacted[i - 1], f"request {i}: compacted before it {compacted[i - 1]}"


def test_the_mask_notice_and_stub_count_tokens_as_every_other_view(ipython, sim):
    configure(ipython, compact_at=2500, keep_rounds=1, mask_tokens=500)
    ipython.user_ns["log"] = LOG
    text = run(ipython, f"%%kimi\n{DECISION} Here is the log:\n\n{{log}}\n\nKeep it in mind.")
    s = session(ipython)
    before, after = (int(n.replace(",", "")) for n in
                     re.search(r"without a model call: ([\d,]+) → ([\d,]+) tokens", text).groups())
    assert after == s.tokens(), "the notice's figure is the one status shows"
    stub = re.search(re.escape(STUB_START) + r"[^\]]*\]", s.context.rounds[0][0].text).group(0)
    stated = int(re.search(r"\(([\d,]+) tokens, ", stub).group(1).replace(",", ""))
    # What the block took: what masking freed, plus what its one-line stub now takes.
    freed = before - after + s.message_tokens(Message.of("user", stub))
    assert abs(stated - freed) <= 0.1 * freed, (stated, freed)


def test_a_fenced_paste_typed_right_under_its_sentence_keeps_the_sentence(ipython, sim):
    # As people paste: the question on one line, the fence on the next, no blank line. The
    # mask took the question into the stub (and any notebook note above it).
    configure(ipython, compact_at=2500, keep_rounds=1, mask_tokens=500)
    ipython.user_ns["log"] = LOG
    question = "Here is the build log, find the failure:"
    text = run(ipython, f"%%kimi\n{question}\n```\n{{log}}\n```\nWhat broke?")
    assert "Masked 1 pasted block of round 1" in text
    user = session(ipython).context.rounds[0][0].text
    ident = re.search(r"mask-[0-9a-f]{10}", user).group(0)
    assert f"{question}\n{STUB_START}" in user, user
    assert user.rstrip().endswith("What broke?")
    assert "processed batch 1100" not in user
    recalled = run(ipython, f"%kimi recall {ident}")
    assert LOG in recalled and f"```\n{LOG}\n```" in s_text(session(ipython), ident)


def s_text(s, ident):
    return next(h["text"] for h in s.recall(ident))
