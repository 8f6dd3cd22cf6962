"""Branching through a real shell: ``%kimi fork``, ``show``, ``drop``, ``diff`` and the
dashboard's Fork button, asserting on what is sent, stored and shown."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from kimi_magic.notebook.widget import Dashboard


def chats(sim):
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def users(body) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "user"]


def magic(shell):
    return shell.magics_manager.registry["KimiMagic"]


def test_fork_from_a_snapshot_leaves_the_original_and_shares_its_messages(ipython, sim):
    run(ipython, "%%kimi\nThe project is called Heron.")
    run(ipython, '%kimi snapshot "named"')
    run(ipython, "%%kimi\nThe deadline is Friday.")
    store = magic(ipython).sessions.store
    stored = store.conn.execute("SELECT count(*) FROM messages").fetchone()[0]

    result, out = run(ipython, '%kimi fork alt "named"')
    assert result.success, out.stdout
    assert "Forked snapshot 'named' of 'default' into session 'alt'" in out.stdout
    assert store.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == stored, \
        "a fork copies no message"
    run(ipython, "%%kimi\nWhat is the project called?")
    assert users(chats(sim)[-1]) == ["The project is called Heron.", "What is the project called?"]
    assert magic(ipython).session.name == "alt"

    run(ipython, "%kimi use default")
    run(ipython, "%%kimi\nAnd the deadline?")
    assert users(chats(sim)[-1]) == ["The project is called Heron.", "The deadline is Friday.",
                                     "And the deadline?"], "the original is untouched"


def test_fork_of_the_current_context_and_fork_mistakes(ipython, sim):
    run(ipython, "%%kimi\nRemember 7.")
    result, out = run(ipython, "%kimi fork side")
    assert result.success and "switched to it" in out.stdout
    names = {s["name"] for s in magic(ipython).sessions.store.sessions()}
    assert {"default", "side"} <= names
    before = len(chats(sim))
    for cell in ["%kimi fork side", "%kimi fork default", "%kimi fork 'bad name'",
                 "%kimi fork x nosuch", "%kimi fork"]:
        result, out = run(ipython, cell)
        assert isinstance(result.error_in_exec, UsageError), cell
        assert "Traceback" not in out.stdout + out.stderr
    assert len(chats(sim)) == before
    assert {s["name"] for s in magic(ipython).sessions.store.sessions()} == names


def test_show_prints_a_round_in_full(ipython):
    long = "alpha " * 60 + "omega-end"
    run(ipython, f"%%kimi\n{long}")
    _, hist = run(ipython, "%kimi history")
    assert "omega-end" not in "".join(o.data.get("text/plain", "") for o in hist.outputs)
    result, out = run(ipython, "%kimi show 1")
    assert result.success
    assert long in out.stdout and "── assistant" in out.stdout
    assert magic(ipython).session.context.rounds[0][1].text in out.stdout
    result, out = run(ipython, "%kimi show 2")
    assert isinstance(result.error_in_exec, UsageError)
    assert "no round 2: the context has rounds 1 to 1" in out.stderr + str(result.error_in_exec)


def test_drop_removes_a_round_archives_it_and_rollback_undoes_it(ipython, sim):
    for text in ["Keep this: the bucket is s3://kept.", "Forget this: the colour is teal.",
                 "And this: the port is 8080."]:
        run(ipython, f"%%kimi\n{text}")
    result, out = run(ipython, "%kimi drop 2")
    assert result.success and "Dropped round 2" in out.stdout and "rollback undoes" in out.stdout
    run(ipython, "%%kimi\nWhat do you know?")
    assert users(chats(sim)[-1]) == ["Keep this: the bucket is s3://kept.",
                                     "And this: the port is 8080.", "What do you know?"]
    s = magic(ipython).session
    assert any("teal" in h["text"] for h in s.recall("colour teal"))
    _, out = run(ipython, "%kimi recall colour teal")
    assert "teal" in "".join(o.data.get("text/plain", "") for o in out.outputs)

    snap = next(x for x in s.snapshots if x.label == "before drop of round 2")
    run(ipython, f"%kimi rollback {snap.id}")
    run(ipython, "%%kimi\nAgain?")
    assert users(chats(sim)[-1])[:3] == ["Keep this: the bucket is s3://kept.",
                                         "Forget this: the colour is teal.",
                                         "And this: the port is 8080."]
    before = len(s.snapshots)
    result, _ = run(ipython, "%kimi drop 99")
    assert isinstance(result.error_in_exec, UsageError)
    assert len(s.snapshots) == before, "a refused drop takes no snapshot"


def test_diff_of_two_sessions_and_of_two_snapshots(ipython):
    run(ipython, "%%kimi\nShared start.")
    run(ipython, "%kimi snapshot base")
    run(ipython, "%kimi fork branch")
    run(ipython, "%%kimi\nOnly on the branch.")
    run(ipython, "%kimi use default")
    run(ipython, "%%kimi\nOnly on main.")
    run(ipython, "%kimi snapshot later")
    result, out = run(ipython, "%kimi diff default branch")
    assert result.success
    text = out.stdout
    assert "A session 'default': 2 rounds" in text and "B session 'branch': 2 rounds" in text
    assert "1 round in both" in text
    assert "only in A: round 2: Only on main." in text
    assert "only in B: round 2: Only on the branch." in text
    assert text.count("spent") == 2
    _, out = run(ipython, "%kimi diff base later")
    assert "snapshot #1 'base': 1 round," in out.stdout
    assert "only in B: round 2: Only on main." in out.stdout and "only in A:" not in out.stdout
    result, _ = run(ipython, "%kimi diff base nowhere")
    assert isinstance(result.error_in_exec, UsageError)


def test_help_documents_the_branching_commands(ipython):
    for name in ("fork", "show", "drop", "diff"):
        _, out = run(ipython, f"%kimi help {name}")
        assert f"%kimi {name}" in out.stdout and len(out.stdout.splitlines()) > 3, name


@pytest.fixture()
def dash(ipython):
    run(ipython, "%%kimi\nFirst fact: the river is the Loire.")
    run(ipython, "%kimi snapshot one")
    run(ipython, "%%kimi\nSecond fact.")
    d = Dashboard(magic(ipython).sessions, "default")
    yield d
    d.close()


def test_the_dashboard_forks_a_snapshot_row(dash, ipython, sim):
    row = dash.snapshot_rows.children[-1]
    assert [b.description for b in row.children[1:]] == ["Rollback", "Fork"]
    dash.label.value = "from-one"
    row.children[2].click()
    assert "into session &#x27;from-one&#x27;" in dash.status_line.value
    assert dash.session.name == "from-one" and len(dash.session.context.rounds) == 1
    original = magic(ipython).sessions.get("default")
    assert len(original.context.rounds) == 2, "the original is untouched"
    run(ipython, "%kimi use from-one")
    run(ipython, "%%kimi\nWhich river?")
    assert users(chats(sim)[-1]) == ["First fact: the river is the Loire.", "Which river?"]
    dash._bind(original)
    dash.snapshot_rows.children[-1].children[2].click()
    assert dash.session.name == "default-fork1"
