"""Nothing lost or kept silently, through a real shell: a reply cut by the output cap says so,
an empty reply is never recorded, a --json reply that does not parse is neither recorded nor
assigned, an interrupted compress is marked and keeps nothing, and a re-run claims no
replacement that did not happen."""

from __future__ import annotations

import _thread
import threading

from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from kimi_magic import Session, Store


def chats(sim):
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    shown = out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)
    return result, shown


def session(shell):
    return shell.magics_manager.registry["KimiMagic"].session


def test_an_empty_reply_at_the_cap_is_not_recorded_and_says_why(ipython, sim):
    run(ipython, "%%kimi\nFirst question.")
    s = session(ipython)
    rounds, calls = len(s.context.rounds), len(s.calls)
    result, shown = run(ipython, "%%kimi --max-tokens 5\nExplain caching in depth.")
    assert result.success
    assert chats(sim)[-1]["max_completion_tokens"] == 5
    assert "The reply is empty" in shown and "--max-tokens" in shown
    assert "Nothing was recorded" in shown
    assert len(s.context.rounds) == rounds, "the empty turn is not in the context"
    assert len(s.calls) == calls + 1, "what the call cost is still counted"
    run(ipython, "%%kimi\nNext.")
    users = [m["content"] for m in chats(sim)[-1]["messages"] if m["role"] == "user"]
    assert users == ["First question.", "Next."]


def test_a_reply_cut_by_the_cap_says_so_and_names_the_option(ipython, sim):
    result, shown = run(ipython, "%%kimi --max-tokens 8 --no-think\nWrite a long essay on tides.")
    assert result.success
    assert "hit the output cap (8 tokens, --max-tokens)" in shown
    assert len(session(ipython).context.rounds) == 1, "a cut reply that has text is kept"


def test_a_cap_from_the_setting_is_named_with_its_size(ipython, sim):
    # No --max-tokens on the cell: the notices named "the default tokens" for a cap of 5.
    run(ipython, "%config KimiMagic.max_completion_tokens = 5")
    _, shown = run(ipython, "%%kimi\nExplain caching in depth.")
    assert chats(sim)[-1]["max_completion_tokens"] == 5
    assert "the output cap (5 tokens, --max-tokens) was used up" in shown
    assert "default" not in shown
    _, shown = run(ipython, "%%kimi --no-think\nWrite a long essay on tides.")
    assert "hit the output cap (5 tokens, --max-tokens)" in shown and "default" not in shown


def test_a_rerun_with_once_claims_no_replacement(ipython, sim):
    cell = "%%kimi\nWhat is 2+2?"
    run(ipython, cell)
    _, shown = run(ipython, cell.replace("%%kimi", "%%kimi --once"))
    assert "replaced its earlier turn" not in shown
    assert "--once: this turn was not recorded." in shown


def state(s):
    """What a failed or unrecorded cell must leave as it was: the context in memory and as
    the store reloads it, the snapshots and the archive (call rows are checked apart)."""
    fresh = Session(s.name, s.settings, store=Store(s.store.path))
    try:
        return (s.context.wire(), fresh.context.wire(), [snap.id for snap in fresh.snapshots],
                s.store.archived(s.name))
    finally:
        fresh.store.close()


def test_a_json_reply_that_does_not_parse_is_neither_recorded_nor_assigned(ipython, sim):
    run(ipython, "%%kimi\nFirst question.")
    s = session(ipython)
    before, calls = state(s), len(s.calls)
    ipython.user_ns["j"] = "from an earlier cell"
    # The cap cuts the JSON object short: what comes back does not parse.
    result, shown = run(ipython, "%%kimi --json --no-think --max-tokens 6 --out j\n"
                                 "List three colours as JSON.")
    body = chats(sim)[-1]
    assert body["response_format"] == {"type": "json_object"} and body["max_completion_tokens"] == 6
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    message = str(result.error_in_exec)
    assert "\n" not in message and "Traceback" not in shown
    assert "not valid JSON" in message and "not recorded" in message and "j" in message
    assert ipython.user_ns["j"] == "from an earlier cell", "nothing is assigned to j"
    assert '{"answer"' in shown, "the raw reply is still shown"
    assert "--max-tokens" in shown, "the cap that cut it is named"
    assert state(s) == before, "the turn is not in the context or the store"
    assert len(s.calls) == calls + 1, "what the call cost is still counted"
    assert s.store.turns(s.name)[-1]["completion_tokens"] == 6
    result, _ = run(ipython, "%%kimi --json --out j\nList three colours as JSON.")
    assert result.success and isinstance(ipython.user_ns["j"], dict)
    users = [m["content"] for m in chats(sim)[-1]["messages"] if m["role"] == "user"]
    assert users == ["First question.", "List three colours as JSON."]


def _rounds(ipython, n: int) -> None:
    for i in range(n):
        run(ipython, f"%%kimi\nFact {i}: the launch code is ORCA-{i}. Remember it for later.")


def test_an_interrupted_compress_is_marked_and_records_nothing(ipython, sim):
    _rounds(ipython, 4)
    s = session(ipython)
    before, calls, sent = state(s), len(s.calls), len(chats(sim))
    sim.configure(tps=40)
    timer = threading.Timer(0.8, _thread.interrupt_main)
    timer.start()
    try:
        result, shown = run(ipython, "%kimi compress --keep-rounds 1")
    finally:
        timer.cancel()
        sim.configure(tps=None)
    assert len(chats(sim)) == sent + 1, "the compress request was sent"
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert "Interrupted" in str(result.error_in_exec)
    assert "interrupted: not recorded" in shown
    assert state(s) == before
    assert len(s.calls) == calls and len(s.store.turns(s.name)) == calls, "no compress row"
    result, _ = run(ipython, "%kimi compress --keep-rounds 1")
    assert result.success and s.context.summary is not None, "the next compress works"


def test_a_cut_compress_stream_is_marked_and_records_nothing(ipython, sim):
    _rounds(ipython, 4)
    s = session(ipython)
    before, calls = state(s), len(s.calls)
    sim.fail("stream_cut", after=6)
    result, shown = run(ipython, "%kimi compress --keep-rounds 1")
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert "cut off: not recorded" in shown
    assert state(s) == before
    assert len(s.calls) == calls and len(s.store.turns(s.name)) == calls, "no compress row"
