"""``%kimi export`` and ``%kimi import``: notebooks, Markdown and JSON that loads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import TEST_KEY, PriceTool
from kimi_magic import Options, Session, Settings, Store
from kimi_magic import export as exporting
from kimi_magic.core.context import Message, Pin
from kimi_magic.core.session import SessionError
from kimi_magic.core.sessions import Sessions


@pytest.fixture
def worked(session: Session) -> Session:
    """A session with a pin, a summary, a tool round, reasoning and a snapshot."""
    session.set_pin(Pin("style", "text", "cell 3",
                        Message.of("system", "<pinned>Use pathlib, fact-0.</pinned>")))
    for n in range(1, 6):
        session.ask(f"Note fact-{n}: the threshold is {n * 7}.")
    session.compress(keep_rounds=2)
    session.snapshot("before tools")
    session.ask("Use lookup_price for 'pear' (fact-6).", tools=PriceTool(),
                options=Options(tools=PriceTool.specs))
    return session


def test_notebook_export_is_valid_and_labels_every_message(worked: Session,
                                                           tmp_path: Path) -> None:
    path = exporting.export(worked, tmp_path / "out" / "chat.ipynb")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = nb.cells[1:]
    assert all(c.cell_type == "markdown" for c in nb.cells)
    assert len(cells) == len(list(worked.context.messages()))
    layers = [c.metadata["kimi"]["layer"] for c in cells]
    assert layers[:3] == ["system", "pin", "summary"] and set(layers[3:]) == {"history"}
    assert cells[0].source.startswith("### System prompt")
    assert cells[1].source.startswith("### Pin: style") and "fact-0" in cells[1].source
    assert cells[2].source.startswith("### Summary of earlier conversation")
    roles = [c.metadata["kimi"]["role"] for c in cells[3:]]
    assert roles[:2] == ["user", "assistant"] and "tool" in roles
    replies = [c for c in cells if c.metadata["kimi"]["role"] == "assistant"]
    assert all("<details><summary>Reasoning</summary>" in c.source for c in replies)
    assert all(c.metadata["kimi"]["usage"]["prompt_tokens"] > 0 for c in replies)
    assert all(c.metadata["kimi"]["cost"] > 0 for c in replies)
    assert any("Calls `lookup_price`" in c.source for c in replies)
    tool = next(c for c in cells if c.metadata["kimi"]["role"] == "tool")
    assert tool.source.startswith("### Tool result: lookup_price") and "4.20 EUR" in tool.source
    assert TEST_KEY not in Path(path).read_text()


def test_markdown_export(worked: Session, tmp_path: Path) -> None:
    text = Path(exporting.export(worked, tmp_path / "chat.md")).read_text()
    assert text.startswith("# Kimi session: t")
    for heading in ("### System prompt", "### Pin: style", "### Summary of earlier",
                    "### User", "### Kimi", "### Tool result: lookup_price"):
        assert heading in text
    assert "fact-6" in text and TEST_KEY not in text


def test_json_export_round_trips_into_a_new_session(worked: Session, settings: Settings,
                                                    tmp_path: Path) -> None:
    path = exporting.export(worked, tmp_path / "chat.json", snapshots=True)
    raw = Path(path).read_text()
    assert TEST_KEY not in raw and "api_key" not in raw
    data = json.loads(raw)
    assert (data["format"], data["version"], data["name"]) == ("kimi_magic.session", 1, "t")
    assert data["settings"]["model"] == worked.settings.model
    assert data["history"][1]["meta"]["usage"]["completion_tokens"] > 0
    assert [s["label"] for s in data["snapshots"]] == [s.label for s in worked.snapshots]
    assert len(data["turns"]) == len(worked.calls)

    other = Sessions(settings, Store(tmp_path / "other.sqlite"))
    loaded = exporting.load(other, path, "copy")
    assert loaded is other.get("copy")
    assert json.dumps(loaded.context.wire()) == json.dumps(worked.context.wire())
    assert [m.meta for m in loaded.context.history] == [m.meta for m in worked.context.history]
    assert loaded.cost()["total"] == pytest.approx(worked.cost()["total"])
    snap = next(s for s in loaded.snapshots if s.label == "before tools")
    original = next(s for s in worked.snapshots if s.label == "before tools")
    assert snap.context.wire() == original.context.wire()

    # it is in the store: a new kernel resumes it, and it can carry on
    resumed = Session("copy", settings, store=Store(tmp_path / "other.sqlite"))
    assert resumed.context.wire() == worked.context.wire()
    resumed.ask("What was fact-6?")
    assert len(resumed.context.rounds) == len(worked.context.rounds) + 1


def test_import_refuses_to_overwrite_and_bad_files(worked: Session, settings: Settings,
                                                   tmp_path: Path) -> None:
    path = exporting.export(worked, tmp_path / "chat.json")
    sessions = Sessions(settings, worked.store)
    before = worked.context
    with pytest.raises(SessionError, match="already exists") as err:
        exporting.load(sessions, path)  # the name 't' is taken
    assert "\n" not in str(err.value) and worked.store.load_session("t")[0] == before

    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    for bad, words in (("missing.json", "no such file"), ("junk.json", "cannot read"),
                       ("other.json", "not a kimi_magic session export"),
                       ("chat.md", "only .json")):
        with pytest.raises(SessionError, match=words):
            exporting.load(sessions, tmp_path / bad, "x")
    assert "x" not in {s["name"] for s in worked.store.sessions()}


def test_unknown_extension_is_one_line(worked: Session, tmp_path: Path) -> None:
    with pytest.raises(SessionError) as err:
        exporting.export(worked, tmp_path / "chat.docx")
    assert "\n" not in str(err.value) and ".ipynb, .md or .json" in str(err.value)
    assert not (tmp_path / "chat.docx").exists()


def test_export_and_import_magics(ipython: Any, tmp_path: Path) -> None:
    from IPython.core.error import UsageError
    from IPython.utils.capture import capture_output

    ipython.run_cell_magic("kimi", "", "Note fact-1: the bucket is s3://data/raw.")
    target = tmp_path / "session.json"
    with capture_output() as out:
        ipython.run_line_magic("kimi", f"export {target}")
        ipython.run_line_magic("kimi", f"export {tmp_path / 'session.ipynb'}")
        ipython.run_line_magic("kimi", f"import {target} --as restored")
    assert "Exported 'default'" in out.stdout and "as session 'restored'" in out.stdout
    nbformat.validate(nbformat.read(tmp_path / "session.ipynb", as_version=4))
    with pytest.raises(UsageError):
        ipython.run_line_magic("kimi", f"export {tmp_path / 'session.txt'}")
    with pytest.raises(UsageError):
        ipython.run_line_magic("kimi", f"import {target} --as restored")
    with capture_output() as out:
        ipython.run_line_magic("kimi", "use restored")
    assert "Resumed session 'restored': 1 round," in out.stdout
