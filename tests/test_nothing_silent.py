"""Nothing lost or kept silently, through a real shell: a reply cut by the output cap says so,
an empty reply is never recorded, and a re-run claims no replacement that did not happen."""

from __future__ import annotations

from IPython.utils.capture import capture_output


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


def test_a_rerun_with_once_claims_no_replacement(ipython, sim):
    cell = "%%kimi\nWhat is 2+2?"
    run(ipython, cell)
    _, shown = run(ipython, cell.replace("%%kimi", "%%kimi --once"))
    assert "replaced its earlier turn" not in shown
    assert "--once: this turn was not recorded." in shown
