"""``%%kimi`` and ``%kimi`` through a real IPython shell against the simulator."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from traitlets.config import Config

from conftest import TEST_KEY as KEY
from kimi_magic.core.models import RETIRED_EXAMPLES


@pytest.fixture()
def shell(ipython):
    return ipython


def chats(sim):
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def test_memory_across_cells_carries_the_first_turn_and_its_reasoning(shell, sim):
    run(shell, "%%kimi --out first\nMy favourite number is 42.")
    result, out = run(shell, "%%kimi --out second\nWhat is my favourite number?")
    assert result.success
    body = chats(sim)[-1]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert body["messages"][1]["content"] == "My favourite number is 42."
    first_reply = body["messages"][2]
    assert first_reply["content"] == shell.user_ns["first"]
    assert first_reply["reasoning_content"], "the reasoning goes back unchanged"
    assert "42" in shell.user_ns["second"]


def test_status_line_after_every_reply(shell):
    result, out = run(shell, "%%kimi\nHello")
    text = out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)
    assert "kimi-k2.6" in text and "tokens" in text and "$" in text and "context" in text
    assert "exact" in text


def test_stream_updates_one_display_and_reasoning_is_folded(shell):
    result, out = run(shell, "%%kimi\nExplain caching briefly")
    markdown = [o.data["text/markdown"] for o in out.outputs if "text/markdown" in o.data]
    assert markdown, "the reply is shown as Markdown"
    assert "<details>" in markdown[-1] and "Reasoning" in markdown[-1]


def test_braces_in_prompts_never_crash(shell, sim):
    shell.user_ns["city"] = "Lyon"
    result, _ = run(shell, '%%kimi\nIn {city}, parse {"a": {"b": [1, 2]}} and f"{x!r}" {}')
    assert result.success
    assert chats(sim)[-1]["messages"][-1]["content"] == (
        'In Lyon, parse {"a": {"b": [1, 2]}} and f"{x!r}" {}')
    run(shell, "%%kimi --no-interpolate\nKeep {city} as typed")
    assert chats(sim)[-1]["messages"][-1]["content"] == "Keep {city} as typed"


def test_doubled_braces_and_a_big_paste_are_sent_as_typed(shell, sim, monkeypatch):
    from kimi_magic.core import interpolate

    shell.user_ns["city"] = "Lyon"
    run(shell, "%%kimi\n{{city}} stays, {city}} stays, {{city} stays, {city} goes")
    assert chats(sim)[-1]["messages"][-1]["content"] == (
        "{{city}} stays, {city}} stays, {{city} stays, Lyon goes")
    # A pasted log without braces is not scanned by the pattern at all.
    scanned: list[int] = []
    field = interpolate._FIELD
    monkeypatch.setattr(interpolate, "_FIELD", type("P", (), {"sub": staticmethod(
        lambda f, s: (scanned.append(len(s)), field.sub(f, s))[1])})())
    paste = "2026-01-01 INFO step=3 loss=0.25 path=/srv/x.log\n" * 2000
    run(shell, "%%kimi\nWhat failed here?\n" + paste)
    assert chats(sim)[-1]["messages"][-1]["content"] == "What failed here?\n" + paste.strip()
    assert scanned == []


def test_json_out_parses(shell):
    result, _ = run(shell, "%%kimi --json --out data\nList three colours as JSON")
    assert result.success and isinstance(shell.user_ns["data"], dict)


def test_once_is_not_recorded(shell, sim):
    run(shell, "%%kimi\nFirst")
    run(shell, "%%kimi --once\nA side question")
    run(shell, "%%kimi\nSecond")
    contents = [m["content"] for m in chats(sim)[-1]["messages"] if m["role"] == "user"]
    assert contents == ["First", "Second"]


def test_format_code_puts_the_reply_in_the_next_cell(shell):
    run(shell, "%%kimi --format code\nWrite code")
    assert shell.rl_next_input is not None and "```" not in shell.rl_next_input


def test_config_never_shows_the_key(shell):
    _, out = run(shell, "%config KimiMagic")
    assert "<set, hidden>" in out.stdout and KEY not in out.stdout
    magic = shell.magics_manager.registry["KimiMagic"]
    assert KEY not in repr(magic.api_key) and KEY not in repr(magic.sessions.settings)
    # %config pushes values into live instances with cross-validation on hold.
    magic.update_config(Config({"KimiMagic": {"api_key": KEY + "-2"}}))
    assert KEY not in repr(magic.api_key)
    _, out = run(shell, "%config KimiMagic")
    assert KEY not in out.stdout


def test_reset_clears_history_keeps_system(shell, sim):
    run(shell, "%%kimi\nOne")
    run(shell, "%kimi reset")
    run(shell, "%%kimi\nTwo")
    msgs = chats(sim)[-1]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"]


def test_sessions_are_separate_and_listed(shell, sim):
    run(shell, "%%kimi -s research\nResearch topic: tides")
    run(shell, "%%kimi -s writing\nWriting topic: essays")
    assert [m["content"] for m in chats(sim)[-1]["messages"][1:]] == ["Writing topic: essays"]
    _, out = run(shell, "%kimi sessions")
    text = "".join(o.data.get("text/plain", "") for o in out.outputs)
    assert "research" in text and "writing" in text


def test_user_mistakes_are_one_line_and_send_nothing(shell, sim):
    before = len(chats(sim))
    for cell in ["%%kimi --max-tokens 0\nhi", "%%kimi --effort extreme\nhi",
                 "%%kimi\n   ", "%kimi frobnicate", "%%kimi --prefix x --json\nhi",
                 "%kimi rollback nope", f"%%kimi -m {RETIRED_EXAMPLES[1]}\nhi"]:
        with capture_output() as out:
            result = shell.run_cell(cell)
        assert isinstance(result.error_in_exec, UsageError), cell
        assert "Traceback" not in out.stdout + out.stderr
    assert len(chats(sim)) == before


def test_no_key_names_both_ways_to_set_it(shell, sim):
    run(shell, "%config KimiMagic.api_key = ''")
    with capture_output():
        result = shell.run_cell("%%kimi\nhello")
    message = str(result.error_in_exec)
    assert "MOONSHOT_API_KEY" in message and "%config KimiMagic.api_key" in message


def test_unload_and_reload_are_clean(shell):
    old = shell.magics_manager.registry["KimiMagic"]
    shell.run_line_magic("unload_ext", "kimi_magic")
    assert "kimi" not in shell.magics_manager.magics["cell"]
    assert "kimi" not in shell.magics_manager.magics["line"]
    assert all(c is not old for c in shell.configurables)
    shell.run_line_magic("load_ext", "kimi_magic")
    new = shell.magics_manager.registry["KimiMagic"]
    assert "kimi" in shell.magics_manager.magics["cell"]
    assert sum(c is new for c in shell.configurables) == 1


def test_economy_preset_is_one_setting(shell):
    run(shell, '%config KimiMagic.preset = "economy"')
    settings = shell.magics_manager.registry["KimiMagic"].sessions.settings
    assert (settings.compact_mode, settings.compact_at, settings.keep_rounds,
            settings.cache_ttl) == ("compress", 32_000, 2, "1h")


def test_status_says_where_the_window_comes_from_and_when_it_is_assumed(shell, sim):
    # An id the table and the server both lack got "window 8,192 from the table": a number
    # the table never had. It is a guess, and the status says so and how to set it.
    shell.run_cell("%%kimi\nHello.")
    _, out = run(shell, "%kimi status")
    assert "kimi-k2.6 (window 262,144 from the server)" in out.outputs[0].data["text/plain"]
    run(shell, '%config KimiMagic.model = "kimi-k9"')
    _, out = run(shell, "%kimi status")
    plain = out.outputs[0].data["text/plain"]
    assert "kimi-k9 (window 8,192 assumed: unknown to the table and the server; " \
           "KimiMagic.model_overrides can set it)" in plain, plain
    run(shell, "%config KimiMagic.model_overrides = {'kimi-k9': {'context_length': 65536}}")
    _, out = run(shell, "%kimi status")
    assert "kimi-k9 (window 65,536 from the table)" in out.outputs[0].data["text/plain"]
