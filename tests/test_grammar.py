"""One grammar for every magic, typed exactly as users type it, through a real shell.

Values are read like a shell reads them (quotes group words and are removed), the same
declaration that parses a command prints its help, and a per-cell option is for that cell.
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output


def chats(sim) -> list[dict]:
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def ok(shell, cell: str) -> str:
    result, out = run(shell, cell)
    assert result.success, f"{cell!r} failed: {result.error_in_exec!r}"
    return out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)


def magic(shell):
    return shell.magics_manager.registry["KimiMagic"]


# -- quoted values lose their quotes ----------------------------------------------------------

def test_quoted_prefix_is_sent_without_its_quotes(ipython, sim):
    ok(ipython, '%%kimi --prefix "{"\nGive me a JSON object with a key a.')
    partial = chats(sim)[-1]["messages"][-1]
    assert partial == {"role": "assistant", "content": "{", "partial": True}


def test_quoted_system_prompt_is_stored_and_sent_without_quotes(ipython, sim):
    ok(ipython, '%%kimi --system "You are terse."\nHello')
    ok(ipython, "%%kimi\nAgain")
    system = chats(sim)[-1]["messages"][0]
    assert system == {"role": "system", "content": "You are terse."}


def test_empty_quoted_system_prompt_removes_it(ipython, sim):
    ok(ipython, "%%kimi --system ''\nHello")
    messages = chats(sim)[-1]["messages"]
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"] == "Hello"


def test_quoted_model_and_out_variable(ipython, sim):
    ok(ipython, '%%kimi -m "kimi-k2.6" --out "ans"\nSay hi')
    assert chats(sim)[-1]["model"] == "kimi-k2.6"
    assert isinstance(ipython.user_ns["ans"], str) and ipython.user_ns["ans"]
    assert '"ans"' not in ipython.user_ns


def test_pin_with_a_quoted_name_then_unpin_it_by_that_name(ipython, sim):
    ipython.user_ns["df"] = "region,revenue\nnorth,36050\nsouth,44939"
    said = ok(ipython, '%kimi pin df --as "my frame"')
    assert "Pinned 'my frame'" in said
    assert [p.name for p in magic(ipython).session.context.pins] == ["my frame"]
    ok(ipython, "%%kimi\nWhat is the north revenue?")
    sent = [m["content"] for m in chats(sim)[-1]["messages"] if m["role"] == "system"]
    assert any('name="my frame"' in c and "36050" in c for c in sent), sent
    assert "Unpinned my frame." in ok(ipython, '%kimi unpin "my frame"')
    assert magic(ipython).session.context.pins == ()


def test_quoted_snapshot_label_and_rollback_by_it(ipython, sim):
    ok(ipython, "%%kimi\nFirst")
    said = ok(ipython, '%kimi snapshot "before big change"')
    assert "'before big change'" in said
    assert magic(ipython).session.snapshots[-1].label == "before big change"
    ok(ipython, "%%kimi\nSecond")
    said = ok(ipython, '%kimi rollback "before big change"')
    assert "Rolled back" in said and "'before big change'" in said
    assert len(magic(ipython).session.context.rounds) == 1


def test_use_a_quoted_session_name(ipython, sim):
    assert "Started session 'other'" in ok(ipython, '%kimi use "other"')
    assert magic(ipython).sessions.current_name == "other"
    ok(ipython, "%%kimi\nHello other")
    rows = {s["name"]: s["turns"] for s in magic(ipython).sessions.store.sessions()}
    assert rows["other"] == 1


def test_export_to_a_quoted_path_with_a_space(ipython, sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(ipython, "%%kimi\nRemember the colour teal.")
    said = ok(ipython, '%kimi export "my export.md"')
    written = tmp_path / "my export.md"
    assert "Exported 'default'" in said and written.exists()
    assert "Remember the colour teal." in written.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".md") == ["my export.md"]


def test_tool_confirm_and_import_as_are_parsed_like_the_rest(ipython, sim, tmp_path):
    ipython.run_cell("def lookup_price(item: str) -> str:\n"
                     "    'Price of an item.'\n    return item + ' costs 4.20 EUR'\n")
    said = ok(ipython, "%kimi tool lookup_price --confirm")
    assert "Registered tool 'lookup_price'" in said
    from kimi_magic.tools import registry

    assert registry.get("lookup_price").confirm is True
    ok(ipython, "%%kimi\nRemember the colour teal.")
    path = tmp_path / "saved session.json"
    ok(ipython, f'%kimi export "{path}"')
    said = ok(ipython, f'%kimi import "{path}" --as "copy.1"')
    assert "as session 'copy.1'" in said
    assert "copy.1" in {s["name"] for s in magic(ipython).sessions.store.sessions()}


def test_python_expressions_keep_their_quotes_and_paths_may_hold_spaces(ipython, sim, tmp_path):
    ipython.user_ns["d"] = {"k": "the key is teal", "other key": "the other is mauve"}
    assert "Pinned 'k'" in ok(ipython, "%kimi pin d['k'] --as k")
    assert "Pinned 'o'" in ok(ipython, '%kimi pin "d[\'other key\']" --as o')
    notes = tmp_path / "my notes.txt"
    notes.write_text("the file says amber")
    ok(ipython, f'%%kimi --pin "{notes}"\nWhat colours do you know?')
    sent = " ".join(m["content"] for m in chats(sim)[-1]["messages"] if m["role"] == "system")
    assert "teal" in sent and "mauve" in sent and "amber" in sent


def test_fix_instructions_may_hold_an_apostrophe(ipython, sim):
    ipython.run_cell("total = sum(range(10)) / 0")
    said = ok(ipython, "%kimi fix don't divide by zero")
    prompt = chats(sim)[-1]["messages"][-1]["content"]
    assert "ZeroDivisionError" in prompt and prompt.endswith("Also: don't divide by zero")
    assert ipython.rl_next_input is not None and said


# -- unterminated quotes and extra words: one line, nothing written or sent --------------------

@pytest.mark.parametrize("cell", ['%%kimi --prefix "x\nHello', '%kimi pin "x', '%kimi recall "x',
                                  '%kimi export "unterminated.md'])
def test_unterminated_quote_is_one_line_and_writes_nothing(ipython, sim, tmp_path, monkeypatch,
                                                           cell):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result, out = run(ipython, cell)
    err = result.error_in_exec
    assert isinstance(err, UsageError)
    assert "no closing quotation" in str(err) and "\n" not in str(err)
    assert "Traceback" not in out.stdout + out.stderr
    assert list(work.iterdir()) == []
    assert chats(sim) == []


def test_extra_words_are_refused_and_reset_does_not_happen(ipython, sim):
    ok(ipython, "%%kimi\nMy favourite number is 42.")
    result, _ = run(ipython, "%kimi reset now")
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec) == ("%kimi reset: unrecognized arguments: now "
                                         "(usage: %kimi reset)")
    assert len(magic(ipython).session.context.rounds) == 1


@pytest.mark.parametrize("cell, flag", [("%%kimi --pin-results r\nHello", "--pin-results"),
                                        ("%%kimi --batch\nHello", "--batch")])
def test_map_only_options_without_map_are_refused_alike(ipython, sim, cell, flag):
    result, _ = run(ipython, cell)
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec) == f"{flag} works with --map VAR"
    assert chats(sim) == []


# -- help from the declaration that parses ------------------------------------------------------

#: Options the help must explain, per subcommand (each was documented nowhere before).
DOCUMENTED = {
    "pin": ["--max-tokens N", "--frozen", "--as NAME"],
    "recall": ["--limit N", "--pin"],
    "tool": ["--confirm"],
    "import": ["--as NAME"],
    "batches": ["list|collect", "ID", "--out VAR"],
    "fix": ["INSTRUCTIONS"],
    "compress": ["--keep-rounds N"],
    "truncate": ["--keep-rounds N | --keep-tokens N"],
}


@pytest.mark.parametrize("sub", sorted(DOCUMENTED))
def test_every_subcommand_option_is_in_its_help_and_in_the_magic_help(ipython, sub):
    text = ok(ipython, f"%kimi help {sub}")
    assert text.startswith(f"usage: %kimi {sub}")
    for option in DOCUMENTED[sub]:
        assert option in text, f"%kimi help {sub} lacks {option}"
    assert text.strip() in ok(ipython, "%kimi?"), "the same text is in %kimi?"


def test_help_lists_every_subcommand_and_refuses_an_unknown_one(ipython):
    text = ok(ipython, "%kimi help")
    for usage in ("%kimi status", "%kimi snapshot [LABEL]", "%kimi use NAME",
                  "%kimi truncate [--keep-rounds N | --keep-tokens N]", "%kimi help [SUBCOMMAND]"):
        assert usage in text
    result, _ = run(ipython, "%kimi help frobnicate")
    assert "no subcommand %kimi frobnicate" in str(result.error_in_exec)


def test_cell_magic_help_shows_the_cell_usage_and_every_option(ipython):
    text = ok(ipython, "%%kimi?")
    assert "usage: %%kimi [--session NAME]" in text
    assert "%kimi [" not in text.replace("%%kimi [", "")
    for option in ("--top-p P", "--pin-results NAME", "--no-interpolate", "--prefix TEXT"):
        assert option in text


def test_kimi_pin_help_is_more_than_a_line(ipython):
    text = ok(ipython, "%%kimi_pin?")
    assert "usage: %%kimi_pin NAME" in text
    assert "Example:" in text and len(text.strip().splitlines()) > 5


# -- a per-cell option is for that cell ---------------------------------------------------------

def test_session_option_runs_that_cell_only_and_keeps_the_current_session(ipython, sim):
    ok(ipython, "%%kimi\nMain topic: tides")
    ok(ipython, "%%kimi --session side\nSide topic: essays")
    side = chats(sim)[-1]["messages"]
    assert [m["content"] for m in side if m["role"] == "user"] == ["Side topic: essays"]
    ok(ipython, "%%kimi\nWhat was the topic?")
    main = [m["content"] for m in chats(sim)[-1]["messages"] if m["role"] == "user"]
    assert main == ["Main topic: tides", "What was the topic?"]
    assert magic(ipython).sessions.current_name == "default"
    listing = ok(ipython, "%kimi sessions")
    assert "* default" in listing and "* side" not in listing
    ok(ipython, "%%kimi -s side\nAnd mine?")
    side = [m["content"] for m in chats(sim)[-1]["messages"] if m["role"] == "user"]
    assert side == ["Side topic: essays", "And mine?"]
    assert magic(ipython).sessions.current_name == "default"
