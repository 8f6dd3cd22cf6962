"""Every way a call can fail, through ``Session.ask`` and through ``%%kimi`` in a real shell.

For each failure the user gets one clear line, the history and the store are exactly as
before the failed turn (also as a fresh ``Session`` on the same file sees them), and the next
turn works. Retryable failures (rate limit, overload, 5xx, timeouts, connection errors before
any text) are retried with backoff; quota, auth and bad requests are not.

Cut streams and interrupts keep nothing: the partial text is shown, marked
"cut off/interrupted: not recorded", and the conversation stays as it was.
"""

from __future__ import annotations

import _thread
import socket
import threading
import time
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from kimi_magic import KimiError, Session, Settings, Store
from kimi_magic.notebook.display import status_line
from kimi_magic.wire.events import StreamEvent

# Failures answered with an HTTP error that must reach the user on the first request.
NOT_RETRIED = [
    ("auth", "auth", "API key"),
    ("permission", "permission", "Permission denied"),
    ("quota_403", "quota", "out of quota"),
    ("quota_429", "quota", "out of quota"),
    ("not_found", "not_found", "%kimi models"),
    ("content_filter", "content_filter", "content filter"),
]
#: The same advice as plain Python reads it, with no magics loaded.
IN_PYTHON = {"%kimi models": "session.client.models()"}
RETRIED = ["rate_limit", "overloaded", "server_error", "unavailable"]


def chats(sim) -> list[dict[str, Any]]:
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def clear_failures(sim) -> None:
    with sim._lock:  # the simulator has no public call to drop pending failures
        sim._failures.clear()


def state(session: Session) -> tuple[Any, ...]:
    """What must not change after a failed turn: memory, store rows, a fresh reload."""
    fresh = Session(session.name, session.settings, store=Store(session.store.path))
    try:
        return (session.context.wire(), len(session.calls), session.store.turns(session.name),
                fresh.context.wire(), fresh.store.turns(session.name),
                [s.id for s in fresh.snapshots])
    finally:
        fresh.store.close()


@pytest.fixture
def warm(session, sim):
    """A session that already holds one completed turn; the simulator's log is cleared."""
    session.ask("My favourite number is 42.")
    sim.clear_requests()
    return session


def assert_next_turn_works(session: Session, sim) -> None:
    rounds = len(session.context.rounds)
    turn = session.ask("What is my favourite number?")
    assert "42" in turn.text
    assert len(session.context.rounds) == rounds + 1
    assert chats(sim)[-1]["messages"][1]["content"] == "My favourite number is 42."


# -- Session.ask --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, our_kind, words", NOT_RETRIED)
def test_error_is_one_line_sent_once_and_changes_nothing(warm, sim, kind, our_kind, words):
    before = state(warm)
    sim.fail(kind, times=5)
    with pytest.raises(KimiError) as info:
        warm.ask("Tell me something new.")
    err = info.value
    assert err.kind == our_kind
    assert "\n" not in str(err) and IN_PYTHON.get(words, words) in str(err)
    assert len(chats(sim)) == 1, "never retried"
    assert state(warm) == before
    clear_failures(sim)
    assert_next_turn_works(warm, sim)


@pytest.mark.parametrize("kind", RETRIED)
@pytest.mark.parametrize("retry_after", [None, 0.05])
def test_transient_errors_are_retried_then_succeed(warm, sim, kind, retry_after):
    params = {"retry_after": retry_after} if retry_after is not None and kind in (
        "rate_limit", "overloaded") else {}
    sim.fail(kind, times=2, **params)
    started = time.perf_counter()
    turn = warm.ask("What is my favourite number?")
    assert "42" in turn.text
    assert len(chats(sim)) == 3, "two failures, then the answer"
    if params:
        assert time.perf_counter() - started >= 2 * 0.05, "Retry-After was honoured"
    assert len(warm.store.turns("t")) == 2


def test_retries_give_up_with_one_line_and_nothing_recorded(warm, sim):
    warm.client.max_retries = 2
    before = state(warm)
    sim.fail("overloaded", times=10)
    with pytest.raises(KimiError) as info:
        warm.ask("Anything?")
    assert info.value.kind == "overloaded" and "try again" in str(info.value)
    assert len(chats(sim)) == 3
    assert state(warm) == before
    clear_failures(sim)
    assert_next_turn_works(warm, sim)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_one_line(store_path):
    settings = Settings(base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key="sk-x",
                        retry_base=0.001, max_retries=1)
    s = Session("t", settings, store=Store(store_path))
    with pytest.raises(KimiError) as info:
        s.ask("Hello?")
    assert info.value.kind == "connection"
    assert "base URL" in str(info.value) and "\n" not in str(info.value)
    assert s.context.history == () and s.store.turns("t") == []


def test_timeout_is_one_line_and_changes_nothing(warm, sim):
    warm.client.timeout = 0.5
    warm.client._sdk = None  # the SDK client takes the timeout when built
    warm.client.max_retries = 0
    before = state(warm)
    sim.fail("hang", seconds=3)
    started = time.perf_counter()
    with pytest.raises(KimiError) as info:
        warm.ask("Are you there?")
    assert time.perf_counter() - started < 2.5
    assert info.value.kind == "timeout" and "timeout" in str(info.value)
    assert state(warm) == before
    assert_next_turn_works(warm, sim)


def test_timeout_is_retried_when_retries_are_left(session, sim):
    s = Session("t", Settings(base_url=sim.url, api_key="sk-x", retry_base=0.01, timeout=0.5),
                store=session.store)
    sim.fail("hang", seconds=3)
    turn = s.ask("My favourite number is 42.")
    assert turn.text and len(chats(sim)) == 2


@pytest.mark.parametrize("kind", ["stream_cut", "no_finish", "malformed_chunk"])
def test_broken_streams_keep_nothing(warm, sim, kind):
    before = state(warm)
    shown: list[StreamEvent] = []
    sim.fail(kind)
    with pytest.raises(KimiError) as info:
        warm.ask("Tell me a long story about the number.", on_delta=shown.append)
    err = info.value
    assert err.kind in ("stream_cut", "malformed")
    assert "Nothing was recorded" in str(err)
    assert len(chats(sim)) == 1, "a stream that already showed text is not retried"
    assert shown, "the user saw the start of the reply"
    assert state(warm) == before
    assert_next_turn_works(warm, sim)


def test_stream_without_usage_is_estimated_and_marked(warm, sim):
    sim.configure(usage="none")
    turn = warm.ask("What is my favourite number?")
    assert not turn.usage.exact
    line = status_line(turn)
    assert "estimated" in line and "~" in line
    assert turn.usage.prompt_tokens > 0 and turn.usage.completion_tokens > 0
    assert warm.store.turns("t")[-1]["exact"] == 0


@pytest.mark.parametrize("kind", ["token_limit_input", "token_limit_total"])
def test_token_limit_with_history_compacts_and_retries_once(session, sim, kind):
    s = Session("t", Settings(base_url=sim.url, api_key="sk-x", retry_base=0.01,
                              keep_rounds=1), store=session.store)
    # Rounds long enough for a summary to be smaller than them (else compress keeps them).
    filler = " We weighed the options at length before settling on the simple one." * 8
    for fact in ("My favourite number is 42.", "My cat is called Ziggy.", "I live in Oslo."):
        s.ask(fact + filler)
    sim.clear_requests()
    sim.fail(kind)
    turn = s.ask("What is my favourite number?")
    assert any("compacted and retried once" in n for n in turn.notices)
    assert len(chats(sim)) == 3, "refused, compress, retried"
    assert s.context.summary is not None
    assert "42" in s.context.summary.text
    assert len(s.context.rounds) == 2


@pytest.mark.parametrize("kind", ["token_limit_input", "token_limit_total"])
def test_token_limit_without_history_is_a_clear_line(session, sim, kind):
    before = state(session)
    sim.fail(kind)
    with pytest.raises(KimiError) as info:
        session.ask("A very long question.")
    assert info.value.kind == "token_limit"
    # Not "run compress": with no history it cannot help (issue #22 section 7).
    assert "no history for session.compress() to shrink" in str(info.value)
    assert len(chats(sim)) == 1
    assert state(session) == before


def test_keyboard_interrupt_mid_stream_keeps_nothing(warm, sim):
    before = state(warm)
    seen: list[StreamEvent] = []

    def impatient(event: StreamEvent) -> None:
        seen.append(event)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        warm.ask("Tell me a long story.", on_delta=impatient)
    assert state(warm) == before
    assert not warm.lock._is_owned()  # type: ignore[attr-defined]
    assert_next_turn_works(warm, sim)


# -- through %%kimi -------------------------------------------------------------------------------
def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    shown = out.stdout + out.stderr + "".join(
        o.data.get("text/plain", "") for o in out.outputs)
    return result, shown


def magic_session(shell) -> Session:
    return shell.magics_manager.registry["KimiMagic"].session


@pytest.fixture
def warm_shell(ipython, sim):
    result, _ = run(ipython, "%%kimi\nMy favourite number is 42.")
    assert result.success
    sim.clear_requests()
    return ipython


def assert_magic_failed_cleanly(result, shown: str, *words: str) -> None:
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert "Traceback" not in shown
    message = str(result.error_in_exec)
    assert "\n" not in message
    for w in words:
        assert w in message


def assert_next_cell_works(shell, sim) -> None:
    result, shown = run(shell, "%%kimi --out answer\nWhat is my favourite number?")
    assert result.success, shown
    assert "42" in shell.user_ns["answer"]


@pytest.mark.parametrize("kind, our_kind, words", NOT_RETRIED)
def test_magic_errors_are_one_line(warm_shell, sim, kind, our_kind, words):
    s = magic_session(warm_shell)
    before = state(s)
    sim.fail(kind)
    result, shown = run(warm_shell, "%%kimi\nTell me something new.")
    assert_magic_failed_cleanly(result, shown, words)
    assert len(chats(sim)) == 1
    assert state(s) == before
    assert_next_cell_works(warm_shell, sim)


def test_magic_retries_rate_limits_silently(warm_shell, sim):
    sim.fail("rate_limit", times=2)
    result, shown = run(warm_shell, "%%kimi --out answer\nWhat is my favourite number?")
    assert result.success and "42" in warm_shell.user_ns["answer"]
    assert len(chats(sim)) == 3


@pytest.mark.parametrize("kind", ["stream_cut", "no_finish", "malformed_chunk"])
def test_magic_cut_stream_is_marked_not_recorded(warm_shell, sim, kind):
    s = magic_session(warm_shell)
    before = state(s)
    sim.fail(kind, after=6)
    result, shown = run(warm_shell, "%%kimi\nTell me a long story about the number.")
    assert_magic_failed_cleanly(result, shown, "Nothing was recorded")
    assert "cut off: not recorded" in shown
    assert state(s) == before
    assert_next_cell_works(warm_shell, sim)


def test_magic_timeout_and_unreachable_server(warm_shell, sim):
    s = magic_session(warm_shell)
    before = state(s)
    warm_shell.run_line_magic("config", "KimiMagic.timeout = 0.5")
    warm_shell.run_line_magic("config", "KimiMagic.max_retries = 0")
    sim.fail("hang", seconds=3)
    result, shown = run(warm_shell, "%%kimi\nAre you there?")
    assert_magic_failed_cleanly(result, shown, "did not answer in time", "timeout")
    warm_shell.run_line_magic("config", f"KimiMagic.base_url = 'http://127.0.0.1:"
                                        f"{closed_port()}/v1'")
    result, shown = run(warm_shell, "%%kimi\nAre you there?")
    assert_magic_failed_cleanly(result, shown, "base URL")
    assert state(s) == before
    warm_shell.run_line_magic("config", f"KimiMagic.base_url = {sim.url!r}")
    warm_shell.run_line_magic("config", "KimiMagic.timeout = 30.0")
    assert_next_cell_works(warm_shell, sim)


def test_magic_without_usage_marks_figures_estimated(warm_shell, sim):
    sim.configure(usage="none")
    result, shown = run(warm_shell, "%%kimi\nWhat is my favourite number?")
    assert result.success
    status = [line for line in shown.splitlines() if "tokens" in line and "·" in line][-1]
    assert "estimated" in status and "~" in status


def test_magic_token_limit_without_history_is_a_clear_line(ipython, sim):
    sim.fail("token_limit_input")
    result, shown = run(ipython, "%%kimi\nA very long question.")
    assert_magic_failed_cleanly(result, shown, "does not fit", "%kimi compress")
    assert magic_session(ipython).context.history == ()


def test_magic_keyboard_interrupt_mid_stream(warm_shell, sim):
    s = magic_session(warm_shell)
    before = state(s)
    sim.configure(tps=40)
    timer = threading.Timer(0.6, _thread.interrupt_main)
    timer.start()
    try:
        result, shown = run(warm_shell, "%%kimi\nTell me a long story about the number "
                                        "42, with many details.")
    finally:
        timer.cancel()
    assert_magic_failed_cleanly(result, shown, "Interrupted", "not recorded")
    assert "interrupted: not recorded" in shown
    assert state(s) == before
    sim.configure(tps=None)
    assert_next_cell_works(warm_shell, sim)
