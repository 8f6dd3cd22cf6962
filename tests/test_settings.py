"""Settings as a user sets them: ``%config KimiMagic``, ``%%kimi --system`` and plain Python."""

from __future__ import annotations

from IPython.utils.capture import capture_output

DEFAULT_SYSTEM = "You are Kimi, a helpful assistant working inside a Jupyter notebook."


def chats(sim) -> list[dict]:
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def sent_system(sim) -> str | None:
    first = chats(sim)[-1]["messages"][0]
    return first["content"] if first["role"] == "system" else None


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    assert result.success, result.error_in_exec
    return out.stdout


def magic(shell):
    return shell.magics_manager.registry["KimiMagic"]


def test_system_option_sets_that_sessions_prompt_only(ipython, sim):
    out = run(ipython, "%%kimi -s terse --system Terse.\nHello")
    assert "System prompt of session 'terse' set; other sessions keep theirs." in out
    assert sent_system(sim) == "Terse."
    assert repr(DEFAULT_SYSTEM) in run(ipython, "%config KimiMagic.system")
    assert magic(ipython).sessions.settings.system == DEFAULT_SYSTEM

    run(ipython, "%%kimi -s other\nHello")
    assert sent_system(sim) == DEFAULT_SYSTEM, "a session opened later starts from the default"

    run(ipython, "%%kimi -s terse\nAgain")
    assert sent_system(sim) == "Terse.", "the session keeps its own prompt"
    assert "set;" not in run(ipython, "%%kimi -s terse --system Terse.\nSame prompt")


def test_a_resumed_session_keeps_its_prompt_and_new_ones_take_the_default(ipython, sim):
    run(ipython, "%%kimi -s terse --system Terse.\nHello")
    run(ipython, "%%kimi -s plain\nHello")
    run(ipython, "%reload_ext kimi_magic")  # a new kernel on the same store
    run(ipython, '%config KimiMagic.system = "Answer in French."')

    run(ipython, "%%kimi -s terse\nAgain")
    assert sent_system(sim) == "Terse."
    run(ipython, "%%kimi -s plain\nAgain")
    assert sent_system(sim) == DEFAULT_SYSTEM, "an existing session keeps its prompt"
    run(ipython, "%%kimi -s fresh\nHello")
    assert sent_system(sim) == "Answer in French."
    assert magic(ipython).sessions.settings.system == "Answer in French."
