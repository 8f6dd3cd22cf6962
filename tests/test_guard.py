"""Know before you spend: ``--dry-run``, ``%kimi estimate``, the cost guard and the budget,
and ``model = "auto"`` as a first-class setting — through a real shell against the simulator.
"""

from __future__ import annotations

import re

import pytest
from IPython.utils.capture import capture_output

from kimi_magic.notebook.widget import Dashboard


@pytest.fixture()
def shell(ipython):
    return ipython


def chats(sim):
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    text = out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)
    return result, text


def session(shell):
    return shell.magics_manager.registry["KimiMagic"].session


PASTE = "\n".join(f"log line {i}: request id req-{i:05d} took {i * 7} ms" for i in range(300))


# -- know before you spend ------------------------------------------------------------------
def test_dry_run_shows_model_layers_cache_and_cost_and_sends_nothing(shell, sim):
    result, text = run(shell, "%%kimi --dry-run\nSummarise the plan in three bullets.")
    assert result.success, result.error_in_exec
    assert chats(sim) == []
    assert len(session(shell).context.rounds) == 0
    assert "Dry run: nothing was sent" in text
    for layer in ("system", "pins", "summary", "history", "prompt"):
        assert layer in text
    assert "kimi-k2.6" in text and "cold" in text and "32,768" in text
    assert "warm /" in text and "cold, with the whole output cap" in text
    assert "compaction" in text and "no (auto-compact at 100,000 tokens)" in text

    run(shell, "%%kimi\nMy favourite number is 42.")
    sent = len(chats(sim))
    result, text = run(shell, "%%kimi --dry-run\nWhat is my favourite number?")
    assert len(chats(sim)) == sent, "the dry run sent nothing"
    assert "warm for" in text and "likely cached" in text
    assert len(session(shell).context.rounds) == 1


def test_dry_run_names_the_model_that_would_write_summaries(shell, sim):
    _, text = run(shell, "%%kimi --dry-run\nHi")
    assert "summaries by" in text and "kimi-k2.6, the session's own" in text
    shell.run_cell('%config KimiMagic.compact_model = "kimi-k2.7-code"')
    try:
        _, text = run(shell, "%%kimi --dry-run\nHi")
        assert "kimi-k2.7-code (compact_model)" in text and "cache-miss price" in text
        assert chats(sim) == []
    finally:
        shell.run_cell("%config KimiMagic.compact_model = None")


def test_compact_model_writes_the_summary_and_the_turns_stay_on_the_sessions_model(shell, sim):
    run(shell, "%%kimi\nMy favourite number is 42.")
    run(shell, "%%kimi\nAnd my dog is called Rex.")
    shell.run_cell('%config KimiMagic.compact_model = "kimi-k3.1-pro"')
    result, _ = run(shell, "%kimi compress --keep-rounds 0")
    assert result.success, result.error_in_exec
    run(shell, "%%kimi\nWhat is my dog called?")
    models = [body["model"] for body in chats(sim)]
    assert models == ["kimi-k2.6", "kimi-k2.6", "kimi-k3.1-pro", "kimi-k2.6"]
    assert session(shell).context.summary is not None


def test_dry_run_counts_what_the_core_estimates(shell, sim):
    run(shell, "%%kimi\nHello")
    est = session(shell).estimate("Next question", model="auto")
    assert est.model == "kimi-k2.6" and est.model_label == "auto → kimi-k2.6"
    assert est.input_tokens == sum(est.layers.values())
    assert est.cached_tokens == est.input_tokens - est.layers["prompt"]
    assert est.cost_warm < est.cost_cold == est.worst
    # The output cap is what build_request will send, priced at the output price.
    assert est.output_cap == 32_768
    assert est.cost_cold == pytest.approx((est.input_tokens * 0.95 + 32_768 * 4.0) / 1e6)


def test_estimate_for_the_next_turn_with_auto_sends_nothing(shell, sim):
    run(shell, '%config KimiMagic.model = "auto"')
    result, text = run(shell, "%kimi estimate")
    assert result.success, result.error_in_exec
    assert chats(sim) == []
    assert "auto → kimi-k2.6" in text and "Next turn" in text


def test_dry_run_of_a_huge_paste_says_compaction_would_fire_first(shell, sim):
    run(shell, '%config KimiMagic.model_overrides = {"kimi-k2.6": {"context_length": 4000}}')
    run(shell, "%%kimi --max-tokens 20\n" + PASTE[:3000])
    shell.user_ns["paste"] = PASTE
    result, text = run(shell, "%%kimi --dry-run\nWhat took longest? {paste}")
    assert result.success, result.error_in_exec
    assert "compaction" in text and "before sending:" in text and "do not fit kimi-k2.6" in text
    assert len(chats(sim)) == 1


# -- the cost guard -------------------------------------------------------------------------
def test_a_call_over_the_per_call_limit_is_refused_and_nothing_is_sent(shell, sim):
    run(shell, "%config KimiMagic.max_call_usd = 0.05")
    result, text = run(shell, "%%kimi\nHello")
    assert not result.success
    message = str(result.error_in_exec)
    assert "refused" in message and "per-call limit of $0.0500" in message
    assert "--max-cost" in message and "KimiMagic.max_call_usd" in message
    assert "\n" not in message
    assert chats(sim) == [] and len(session(shell).context.rounds) == 0

    result, _ = run(shell, "%%kimi --max-cost 0.50\nHello")
    assert result.success, result.error_in_exec
    assert len(chats(sim)) == 1 and len(session(shell).context.rounds) == 1
    # --max-cost allows one cell only: the next plain cell is refused again.
    result, _ = run(shell, "%%kimi\nAgain")
    assert not result.success and len(chats(sim)) == 1


def test_a_refused_cell_keeps_neither_its_pin_nor_its_system_prompt(shell, sim):
    shell.user_ns["notes"] = "the launch checklist " * 40
    run(shell, "%config KimiMagic.max_call_usd = 0.05")
    s = session(shell)
    system_before, pins_before = s.context.system, s.context.pins
    result, _ = run(shell, "%%kimi --pin notes --system 'Be terse.'\nHello")
    assert not result.success
    message = str(result.error_in_exec)
    assert "refused" in message and "were undone" in message and "\n" not in message
    assert chats(sim) == []
    assert s.context.system == system_before and s.context.pins == pins_before
    # Undone in the store too: the session reopened from disk holds no pin either.
    magic = shell.magics_manager.registry["KimiMagic"]
    reopened = type(s)(s.name, s.settings, store=magic.sessions.store)
    assert reopened.context.pins == pins_before and reopened.context.system == system_before


@pytest.mark.parametrize("form", ["--max-cost 0.5", "--max-cost $2", "--max-cost=3",
                                  "--max-cost '$0.50'", "--max-cost 1.25$"])
def test_max_cost_is_read_as_users_type_dollars(shell, sim, form):
    run(shell, "%config KimiMagic.max_call_usd = 0.05")
    result, _ = run(shell, f"%%kimi {form}\nHello")
    assert result.success, result.error_in_exec
    assert len(chats(sim)) == 1 and len(session(shell).context.rounds) == 1


@pytest.mark.parametrize("form", ["--max-cost -1", "--max-cost two", "--max-cost $"])
def test_a_max_cost_that_is_not_an_amount_is_refused_in_one_line(shell, sim, form):
    result, _ = run(shell, f"%%kimi {form}\nHello")
    assert not result.success
    message = str(result.error_in_exec)
    assert "--max-cost" in message and "\n" not in message
    assert chats(sim) == [] and len(session(shell).context.rounds) == 0


def test_the_default_limit_of_one_dollar_stops_a_dear_call(shell, sim):
    run(shell, '%config KimiMagic.model_overrides = {"kimi-k3": {"output": 100.0}}')
    result, _ = run(shell, "%%kimi -m kimi-k3\nWrite an essay.")
    assert not result.success
    assert "over the per-call limit of $1.0000" in str(result.error_in_exec)
    assert chats(sim) == []
    result, _ = run(shell, "%%kimi -m kimi-k3 --max-tokens 1000\nWrite an essay.")
    assert result.success, result.error_in_exec
    assert chats(sim)[-1]["model"] == "kimi-k3"


def test_a_session_budget_refuses_the_call_that_would_pass_it(shell, sim):
    run(shell, "%config KimiMagic.budget_usd = 0.10")
    result, _ = run(shell, "%%kimi --max-tokens 2000\nHello")
    assert result.success, result.error_in_exec
    result, _ = run(shell, "%%kimi\nTell me more")
    assert not result.success
    message = str(result.error_in_exec)
    assert "session budget of $0.1000" in message and "KimiMagic.budget_usd" in message
    assert len(chats(sim)) == 1 and len(session(shell).context.rounds) == 1
    result, text = run(shell, "%kimi cost")
    assert "budget" in text and "spent of $0.1000" in text and "left" in text
    board_html = _widget_html(shell)
    assert "budget $0.1000" in board_html


def _widget_html(shell):
    from kimi_magic.notebook.widget import Dashboard

    magic = shell.magics_manager.registry["KimiMagic"]
    board = Dashboard(magic.sessions, magic.session.name, magic=magic)
    try:
        return "".join(getattr(w, "value", "") for w in _walk(board)
                       if isinstance(getattr(w, "value", None), str))
    finally:
        board.close()


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_compress_calls_are_checked_too(shell, sim):
    run(shell, "%%kimi\nMy favourite number is 42.")
    run(shell, "%%kimi\nAnd my dog is called Rex.")
    sent = len(chats(sim))
    run(shell, "%config KimiMagic.max_call_usd = 0.00001")
    result, _ = run(shell, "%kimi compress --keep-rounds 0")
    assert not result.success
    assert "refused: compress" in str(result.error_in_exec)
    assert len(chats(sim)) == sent
    assert len(session(shell).context.rounds) == 2 and session(shell).context.summary is None


def test_an_auto_compress_over_the_limit_is_not_sent_and_the_turn_says_so(shell, sim):
    # Each turn is cheap (a small output cap) but a summary's worst case is not: the guard
    # stops the compress request, keeps the turn and the whole context, and says so.
    for setting in ("compact_at = 400", "keep_rounds = 0", "mask_tokens = None",
                    "max_call_usd = 0.0006"):
        run(shell, f"%config KimiMagic.{setting}")
    notices = []
    for i in range(12):
        result, text = run(shell, f"%%kimi --no-think --max-tokens 30\nFact {i}: the run "
                                  f"RUN-{i} took {i * 11} ms on worker {i}, logged twice.")
        assert result.success, result.error_in_exec
        notices = [line for line in text.splitlines() if "Auto-compress not run" in line]
        if notices:
            break
    (notice,) = notices
    assert "refused: compress" in notice and "--max-cost" in notice
    assert not any("Summarise the conversation" in str(body) for body in chats(sim))
    s = session(shell)
    assert s.context.summary is None and len(s.context.rounds) == i + 1
    assert "compress" not in [c["kind"] for c in s.calls]


def test_a_map_fan_out_is_checked_whole_before_its_first_request(shell, sim):
    shell.user_ns["items"] = ["cat", "dog", "fish"]
    run(shell, "%config KimiMagic.budget_usd = 0.30")
    result, _ = run(shell, "%%kimi --map items\nTranslate to French: {item}")
    assert not result.success
    message = str(result.error_in_exec)
    assert "--map" in message and "3 requests" in message and "session budget" in message
    assert chats(sim) == []
    run(shell, "%config KimiMagic.budget_usd = None")
    run(shell, "%config KimiMagic.max_call_usd = 0.05")
    result, _ = run(shell, "%%kimi --map items\nTranslate to French: {item}")
    assert "per-call limit" in str(result.error_in_exec) and chats(sim) == []
    result, _ = run(shell, "%%kimi --map items --max-cost 1\nTranslate to French: {item}")
    assert result.success, result.error_in_exec
    assert len(chats(sim)) == 3


def test_a_batch_fan_out_is_checked_before_anything_is_uploaded(shell, sim):
    shell.user_ns["items"] = ["cat", "dog", "fish"]
    run(shell, "%config KimiMagic.budget_usd = 0.10")
    result, _ = run(shell, "%%kimi --map items --batch\nTranslate to French: {item}")
    assert not result.success
    assert "--batch" in str(result.error_in_exec)
    assert [r for r in sim.requests if r["method"] == "POST"] == []


def test_unpriced_models_are_not_blocked_and_say_so(shell, sim):
    sim.configure(extra_models={"my-llama": {"context_length": 131072,
                                             "supports_reasoning": False}})
    run(shell, "%config KimiMagic.max_call_usd = 0.0")
    result, text = run(shell, "%%kimi -m my-llama --dry-run\nHi")
    assert result.success, result.error_in_exec
    assert "unpriced" in text and chats(sim) == []
    result, _ = run(shell, "%%kimi -m my-llama\nHi")
    assert result.success, result.error_in_exec
    assert chats(sim)[-1]["model"] == "my-llama"


def test_guard_settings_are_refused_at_the_door(shell):
    from kimi_magic.core.errors import SettingError
    from kimi_magic.core.settings import Settings

    run(shell, "%config KimiMagic.max_call_usd = -1")
    run(shell, '%config KimiMagic.budget_usd = "ten"')
    with pytest.raises(SettingError, match="budget_usd must be 0 or more"):
        Settings(budget_usd=-0.5)
    magic = shell.magics_manager.registry["KimiMagic"]
    assert magic.max_call_usd == 1.0 and magic.budget_usd is None


# -- auto is a first-class setting -----------------------------------------------------------
def test_auto_setting_resolves_everywhere_and_shows_both(shell, sim):
    run(shell, '%config KimiMagic.model = "auto"')
    result, text = run(shell, "%kimi status")
    assert "auto → kimi-k2.6 (window 262,144" in text
    assert "100,000 tokens" in text, "the threshold follows the resolved model"
    assert "unknown" not in text and "8,192" not in text
    st = session(shell).status()
    assert st["next_turn_cold"] is not None
    assert session(shell).settings.pin_limit(session(shell).model().context_length) == 65_536
    magic = shell.magics_manager.registry["KimiMagic"]
    board = Dashboard(magic.sessions, magic.session.name)
    try:
        shown = re.sub(r"<[^>]+>", " ", board.summary.value)
    finally:
        board.close()
    assert "auto → kimi-k2.6 · window 262,144" in shown, "the widget resolves auto too"
    assert "auto-compact at 100,000" in shown and "8,192" not in shown

    run(shell, "%%kimi\nMy favourite number is 42.")
    run(shell, "%%kimi\nMy dog is called Rex.")
    result, _ = run(shell, "%kimi compress --keep-rounds 0")
    assert result.success, result.error_in_exec
    assert chats(sim)[-1]["model"] == "kimi-k2.6"
    assert all(body["model"] != "auto" for body in chats(sim))


def test_a_plain_cell_after_an_auto_turn_on_a_bigger_window_keeps_its_context(shell, sim):
    # kimi-k2.6's window made small (as the client sees it) so a paste outgrows it; no
    # mask stage, so that compaction has to summarise.
    run(shell, '%config KimiMagic.model_overrides = {"kimi-k2.6": {"context_length": 3000}}')
    run(shell, "%config KimiMagic.mask_tokens = None")
    shell.user_ns["paste"] = PASTE
    result, _ = run(shell, "%%kimi -m auto --max-tokens 4000\nRemember this log: {paste}")
    assert result.success, result.error_in_exec
    big = chats(sim)[-1]["model"]
    assert big != "kimi-k2.6"
    result, text = run(shell, "%%kimi --max-tokens 50\nWhich request id was first?")
    assert result.success, result.error_in_exec
    compress, turn = chats(sim)[1:3]
    assert compress["model"] == big, "summarised on a window the context fits"
    assert turn["model"] == "kimi-k2.6"
    assert "Compressed" in text, "what compaction did is shown, not only that it started"
    assert "truncated" not in text
    s = session(shell)
    assert s.context.summary is not None and "req-00229" in s.context.summary.text
    # What the fact check had no room for is archived, one recall away.
    assert any("req-00000" in hit["text"] for hit in s.recall("req-00000"))


def test_a_compress_that_falls_back_to_truncate_says_so_and_names_the_snapshot(shell, sim):
    run(shell, '%config KimiMagic.model_overrides = {"kimi-k2.6": {"context_length": 3000}}')
    run(shell, "%config KimiMagic.mask_tokens = None")  # so that compaction summarises
    shell.user_ns["paste"] = PASTE
    run(shell, "%%kimi -m auto --max-tokens 4000\nRemember this log: {paste}")
    sim.fail("not_found", times=1)
    result, text = run(shell, "%%kimi --max-tokens 50\nWhich request id was first?")
    assert result.success, result.error_in_exec
    assert "truncated 1 round instead" in text and "%kimi rollback" in text
    s = session(shell)
    snap_id = int(text.split("%kimi rollback ")[1].split()[0])
    assert s.find_snapshot(snap_id).rounds == 1
    run(shell, f"%kimi rollback {snap_id}")
    assert "req-00000" in s.context.rounds[0][0].text


# -- every request of a tool loop ------------------------------------------------------------
BIG_TOOL = ('def read_dump() -> str:\n'
            '    """The data dump."""\n'
            '    return " ".join(f"row {i} value {i * 13}" for i in range(3000))\n')


@pytest.mark.parametrize("limit", ["max_call_usd = 0.003", "budget_usd = 0.004"])
def test_each_tool_loop_request_is_checked_and_a_refusal_records_no_half_turn(
        shell, sim, limit):
    shell.run_cell(BIG_TOOL)
    run(shell, "%kimi tool read_dump")
    run(shell, f"%config KimiMagic.{limit}")
    result, _ = run(shell, "%%kimi --tools --no-think --max-tokens 300\n"
                           "sim:call read_dump {}\nSummarise the dump.")
    assert not result.success
    message = str(result.error_in_exec)
    assert "refused: tool step 1 of this turn" in message and "\n" not in message
    assert "cost is recorded; the turn is not" in message
    # The first request went out (it was within the limit); the one carrying the dump not.
    assert len(chats(sim)) == 1
    s = session(shell)
    assert len(s.context.rounds) == 0, "no half turn in the history"
    assert [c["kind"] for c in s.calls] == ["chat"] and s.calls[0]["cost"] > 0


def test_the_estimate_says_when_compaction_comes_in_one_row(shell, sim):
    # Past the threshold the row read "compacts first | after this turn": the label and the
    # value contradicted each other.
    run(shell, "%%kimi\nMy favourite number is 42.")
    run(shell, "%config KimiMagic.compact_at = 50")
    result, text = run(shell, "%kimi estimate")
    assert result.success and "compacts first" not in text
    row = next(line for line in text.splitlines() if line.startswith("compaction"))
    assert row.split(None, 1)[1].strip() == "after this turn (past 50 tokens)", row
