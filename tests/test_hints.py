"""Advice speaks the reader's language: Python calls from plain Python, magics in a notebook.

The same four mistakes (a call over the cost limit, a recall with no query, a rollback with
no snapshot, an unreachable server) are made once from a plain ``Session`` and once through
a shell with ``%load_ext kimi_magic``; each error line must name what that user can type.
"""

from __future__ import annotations

import socket

import pytest
from IPython.utils.capture import capture_output

from conftest import TEST_KEY
from kimi_magic import KimiError, Session, SessionError, Settings, Store
from kimi_magic.core import hints


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def error_of(shell, cell: str) -> str:
    with capture_output():
        result = shell.run_cell(cell)
    assert result.error_in_exec is not None, cell
    return str(result.error_in_exec)


def one_line(text: str) -> str:
    assert "\n" not in text, text
    return text


# -- plain Python ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, advice", [("max_call_usd", "max_cost="), ("budget_usd", "")])
def test_a_refused_call_tells_python_users_how_to_allow_it(session, sim, name, advice):
    setattr(session.settings, name, 0.0)
    with pytest.raises(SessionError) as info:
        session.ask("Hello?")
    line = one_line(str(info.value))
    assert "nothing was sent" in line and "%" not in line and "--max-cost" not in line
    assert f"session.settings.{name} = " in line and advice in line


def test_recall_without_a_query_shows_the_python_call(session):
    with pytest.raises(SessionError) as info:
        session.recall("  ")
    line = one_line(str(info.value))
    assert "session.recall('learning rate')" in line and "%" not in line


def test_rollback_with_no_snapshot_says_how_to_take_one_in_python(session):
    with pytest.raises(SessionError) as info:
        session.rollback()
    line = one_line(str(info.value))
    assert "session.snapshot()" in line and "%" not in line


def failed_ask(store_path, **settings) -> KimiError:
    s = Session("t", Settings(retry_base=0.01, **settings), store=Store(store_path))
    try:
        with pytest.raises(KimiError) as info:
            s.ask("Hello?")
    finally:
        s.store.close()
    one_line(str(info.value))
    return info.value


def test_an_unreachable_server_names_the_python_setting(store_path):
    err = failed_ask(store_path, base_url=closed_port(), api_key=TEST_KEY, max_retries=0)
    assert err.kind == "connection"
    assert "session.settings.base_url" in str(err) and "%" not in str(err)


def test_a_missing_key_names_the_python_setting(store_path):
    line = str(failed_ask(store_path, api_key=""))
    assert "MOONSHOT_API_KEY" in line and "session.settings.api_key = '...'" in line
    assert "%" not in line


# -- the same mistakes in a notebook ---------------------------------------------------------
def test_the_same_mistakes_in_a_shell_name_the_magics(ipython, sim):
    ipython.run_line_magic("config", "KimiMagic.max_call_usd = 0.000001")
    line = one_line(error_of(ipython, "%%kimi\nHello?"))
    assert "--max-cost " in line and "%config KimiMagic.max_call_usd = " in line
    assert "session." not in line
    ipython.run_line_magic("config", "KimiMagic.max_call_usd = 1.0")

    line = one_line(error_of(ipython, "%kimi recall"))
    assert "query" in line
    line = one_line(error_of(ipython, "%kimi rollback"))
    assert "%kimi snapshot [LABEL]" in line and "session." not in line

    ipython.run_line_magic("config", f"KimiMagic.base_url = {closed_port()!r}")
    ipython.run_line_magic("config", "KimiMagic.max_retries = 0")
    line = one_line(error_of(ipython, "%%kimi\nHello?"))
    assert "%config KimiMagic.base_url" in line and "session." not in line


def test_unloading_the_extension_returns_to_python_advice(ipython, session):
    with pytest.raises(SessionError) as info:
        session.recall("")
    assert "%kimi recall learning rate" in str(info.value)
    ipython.run_line_magic("unload_ext", "kimi_magic")
    assert hints.dialect() == hints.PYTHON
    with pytest.raises(SessionError) as info:
        session.recall("")
    assert "session.recall('learning rate')" in str(info.value)


def test_every_command_core_names_has_a_python_spelling():
    hints.use(hints.PYTHON)
    for name in ("compress", "truncate", "recall", "rollback", "snapshot", "snapshots",
                 "sessions", "use", "models"):
        assert "%" not in hints.command(name, "x")
    with pytest.raises(ValueError):
        hints.use("klingon")
