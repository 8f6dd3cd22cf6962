"""Nonsense in every magic and option: one clear line, nothing changed, nothing sent.

Each case runs in a shell whose session already holds a turn and a snapshot; afterwards the
context, the store rows, the snapshots and the simulator's request count are as before, and
the output holds no traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from kimi_magic import Session, Store
from kimi_magic.core.models import RETIRED_EXAMPLES

#: A retired id, as a user with an old notebook types it.
RETIRED = RETIRED_EXAMPLES[0]

#: (cell, words the one-line error must contain)
BAD_CELLS = [
    ('%%kimi -s "bad name!"\nHello', "invalid session name"),
    ("%%kimi -s ../etc\nHello", "invalid session name"),
    ("%%kimi --max-tokens -5\nHello", "--max-tokens"),
    ("%%kimi --max-tokens 0\nHello", "--max-tokens"),
    ("%%kimi --max-tokens lots\nHello", "--max-tokens"),
    ("%%kimi --temperature warm\nHello", "--temperature"),
    ("%%kimi --effort extreme\nHello", "--effort"),
    ('%%kimi --prefix "def f(" --json\nHello', "--prefix"),
    ("%%kimi --pin no_such_file.csv\nHello", "no_such_file.csv"),
    ("%%kimi --pin undefined_variable\nHello", "undefined_variable"),
    ("%%kimi --format html\nHello", "--format"),
    ("%%kimi --batch\nHello", "--batch"),
    ("%%kimi --map not_defined\nName {item}.", "not_defined"),
    ("%%kimi --bogus\nHello", "unrecognized"),
    ("%%kimi\n   \n", "prompt is empty"),
    (f"%%kimi -m {RETIRED}\nHello", "retired"),
    ("%%kimi_pin\nSome text", "%%kimi_pin NAME"),
    ("%kimi frobnicate", "unknown subcommand"),
    ("%kimi rollback 999", "no snapshot"),
    ("%kimi rollback no-such-label", "no snapshot"),
    ("%kimi snapshot first", "already labelled"),
    ("%kimi truncate --keep-rounds -1", "--keep-rounds"),
    ("%kimi truncate --keep-tokens -3", "--keep-tokens"),
    ("%kimi truncate --keep-rounds x", "--keep-rounds"),
    ("%kimi compress --keep-rounds -2", "--keep-rounds"),
    ("%kimi compress", "nothing to compress"),
    ("%kimi recall", "query"),
    ("%kimi use bad/name", "invalid session name"),
    ("%kimi use", "%kimi use NAME"),
    ("%kimi unpin nothing", "no pin named"),
    ("%kimi unpin", "%kimi unpin"),
    ("%kimi pin", "target"),
    ("%kimi pin nothing_here --as x", "nothing_here"),
    ("%kimi export", "%kimi export PATH"),
    ("%kimi export notes.xyz", ".ipynb, .md or .json"),
    ("%kimi import /no/such/file.json", "no such file"),
    ("%kimi tool no_such_function", "no_such_function"),
    ('%kimi pin "x', "no closing quotation"),
    ('%kimi recall "x', "no closing quotation"),
    ('%%kimi --prefix "x\nHello', "no closing quotation"),
    ("%kimi reset now", "unrecognized arguments: now"),
    ("%kimi snapshots all", "unrecognized arguments: all"),
    ("%%kimi --pin-results r\nHello", "--pin-results works with --map"),
]

#: (setting, bad value as typed after ``%config KimiMagic.NAME = ``): refused with one logged
#: line, the old value kept. Every setting has at least one (test_every_setting_has_a_bad_value).
BAD_CONFIG = [
    ("compact_mode", '"nonsense"'),
    ("preset", '"lavish"'),
    ("summary_tokens", "-5"),
    ("max_completion_tokens", "-1"),
    ("max_completion_tokens", "0"),
    ("keep_rounds", "-3"),
    ("mask_tokens", "0"),
    ("mask_tokens", '"big"'),
    ("effort", '"extreme"'),
    ("compact_at", "-1.0"),
    ("timeout", '"soon"'),
    ("server", '"mainframe"'),
    ("api_key", "42"),
    ("base_url", '"api.moonshot.ai/v1"'),
    ("model", repr(RETIRED)),
    ("model", '""'),
    ("compact_model", repr(RETIRED)),
    ("system", "None"),
    ("max_completion_tokens", '"lots"'),
    ("think", '"yes"'),
    ("compact_at", "0"),
    ("summary_tokens", "0"),
    ("verbatim_budget", "-1"),
    ("pin_budget", "0"),
    ("cache_ttl", '"2h"'),
    ("timeout", "0"),
    ("max_retries", "-1"),
    ("retry_base", "-0.5"),
    ("model_overrides", '{"kimi-k2.6": {"bogus": 1}}'),
    ("model_overrides", '{"kimi-k2.6": {"context_length": "big"}}'),
    ("model_overrides", '{"kimi-k2.6": {"output": -4.0}}'),
    ("model_overrides", '{"kimi-k2.6": {"thinking": "sometimes"}}'),
    ("model_overrides", '{"kimi-k2.6": 5}'),
    ("model_overrides", '["kimi-k2.6"]'),
    ("tool_steps", "-3"),
    ("tool_steps", "0"),
    ("map_concurrency", "0"),
    ("map_rpm", "-1"),
    ("batch_poll_seconds", "-1.0"),
    ("max_call_usd", "-1"),
    ("budget_usd", '"ten dollars"'),
    ("store_path", "5"),
    ("auto_widget", '"sometimes"'),
    ("agent_approval", '"maybe"'),
    ("agent_timeout", "0"),
    ("agent_timeout", '"long"'),
    ("notebook_context", "-1"),
]


def chats(sim) -> int:
    return sum(r["path"].endswith("/chat/completions") for r in sim.requests)


def state(session: Session) -> tuple[Any, ...]:
    fresh = Store(session.store.path)
    try:
        return (session.name, session.context.wire(), len(session.calls),
                [s.id for s in session.snapshots], fresh.turns(session.name),
                fresh.snapshots(session.name), fresh.sessions()[0]["turns"],
                [r["name"] for r in fresh.sessions()])
    finally:
        fresh.close()


@pytest.fixture
def shell(ipython, sim):
    """A shell whose session holds one turn and a snapshot labelled "first"."""
    for cell in ("%%kimi\nMy favourite number is 42.", "%kimi snapshot first"):
        assert ipython.run_cell(cell).success
    ipython.user_ns["items"] = ["apples", "pears"]
    return ipython


def current(shell) -> Session:
    return shell.magics_manager.registry["KimiMagic"].session


@pytest.mark.parametrize("cell, words", BAD_CELLS, ids=[c.split("\n")[0] for c, _ in BAD_CELLS])
def test_bad_input_is_one_line_changes_nothing_and_sends_nothing(shell, sim, cell, words):
    before, sent = state(current(shell)), chats(sim)
    with capture_output() as out:
        result = shell.run_cell(cell)
    err = result.error_in_exec
    assert isinstance(err, UsageError), f"{cell!r} gave {err!r}"
    assert words in str(err)
    assert "\n" not in str(err).strip()
    assert "Traceback" not in out.stdout + out.stderr
    assert state(current(shell)) == before
    assert chats(sim) == sent, "nothing was sent"


@pytest.mark.parametrize("name, value", BAD_CONFIG)
def test_bad_config_values_are_refused_and_keep_the_old_value(shell, sim, name, value, caplog):
    magic = shell.magics_manager.registry["KimiMagic"]
    old, before = getattr(magic, name), state(current(shell))
    with capture_output() as out, caplog.at_level(logging.ERROR):
        shell.run_cell(f"%config KimiMagic.{name} = {value}")
    assert "Traceback" not in out.stdout + out.stderr
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged and all(name in line and "\n" not in line for line in logged)
    assert getattr(magic, name) == old
    if hasattr(magic.sessions.settings, name):  # ``preset`` lives on the magic only
        assert getattr(magic.sessions.settings, name) == old
    assert state(current(shell)) == before
    # The refused value must not break reloading the extension either.
    with pytest.warns(UserWarning, match=f"ignoring the setting KimiMagic.{name}"):
        assert shell.run_cell("%reload_ext kimi_magic").success
    assert shell.run_cell("%%kimi\nWhat is my favourite number?").success


def test_every_setting_has_a_bad_value(ipython):
    magic = ipython.magics_manager.registry["KimiMagic"]
    assert {name for name, _ in BAD_CONFIG} == set(magic.trait_names(config=True))


def test_recall_of_blank_words_finds_nothing_and_changes_nothing(shell, sim):
    before = state(current(shell))
    with capture_output() as out:
        result = shell.run_cell('%kimi recall " ? "')
    assert result.success and "Nothing in the archive" in out.stdout
    assert state(current(shell)) == before
