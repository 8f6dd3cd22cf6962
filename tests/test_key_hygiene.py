"""The API key never leaves the SDK's Authorization header.

A recognisable key is set, every feature we can reach is exercised (cells, subcommands,
``%config``, reprs, errors, exports, fan-out and batch, the widget, an executed notebook)
with logging at DEBUG, and every output, log record and written file is scanned for it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os

import nbformat
import openai
import pytest
from IPython.utils.capture import capture_output
from nbclient import NotebookClient

KEY = "sk-HYGIENE-1234567890abcdefSECRET"
# Also catch a key cut short or re-encoded in an error message.
FRAGMENTS = (KEY, KEY[10:], KEY.encode().hex())


def assert_clean(text: str | bytes, where: str) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for fragment in FRAGMENTS:
        assert fragment not in text, f"the API key leaked into {where}"


def run(shell, cell: str) -> str:
    with capture_output() as out:
        result = shell.run_cell(cell)
    shown = out.stdout + out.stderr + "".join(json.dumps(o.data, default=str)
                                              for o in out.outputs)
    if result.error_in_exec is not None:
        shown += f"\n{type(result.error_in_exec).__name__}: {result.error_in_exec}"
    return shown


@pytest.fixture
def keyed(ipython):
    """The shell with the hygiene key configured the way a user would (``%config``)."""
    ipython.run_line_magic("config", f"KimiMagic.api_key = {KEY!r}")
    return ipython


def widget_states() -> str:
    import warnings

    from ipywidgets import Widget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        instances = getattr(Widget, "_active_widgets", None) or getattr(Widget, "widgets", {})
    return json.dumps([w.get_state() for w in list(instances.values())], default=str)


def test_the_key_is_nowhere_the_magic_writes_or_shows(keyed, sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    shell = keyed
    magic = shell.magics_manager.registry["KimiMagic"]
    shell.user_ns["items"] = ["apples", "pears"]
    shell.user_ns["notes"] = "Our build runs on port 8080."
    cells = [
        "%%kimi --out r\nMy favourite number is 42.",
        "%%kimi --no-stream --json --out j\nGive my favourite number as JSON.",
        "%%kimi --once\nWhat is my favourite number?",
        "%kimi pin notes",
        "%%kimi_pin conventions\nUse snake_case.",
        "%kimi", "%kimi status", "%kimi history", "%kimi cost", "%kimi models",
        "%kimi sessions", "%kimi pins", "%kimi snapshot first", "%kimi snapshots",
        "%%kimi\nI live in Oslo.", "%%kimi\nMy cat is Ziggy.", "%%kimi\nI like tea.",
        "%kimi compress --keep-rounds 1", "%kimi recall favourite number",
        "%kimi rollback first", "%kimi truncate --keep-rounds 1",
        "%config KimiMagic", "%config KimiMagic.api_key",
        "%%kimi --map items --out fruit\nName one colour of {item}.",
        "%%kimi --map items --batch --out fruit_batch\nName one colour of {item}.",
        "%kimi widget",
        "%kimi use other", "%kimi use default", "%kimi reset",
    ]
    shown = [run(shell, cell) for cell in cells]
    assert shell.user_ns["r"], "the cells really ran"
    assert len(shell.user_ns["fruit"]) == 2
    sim.fail("auth")
    shown.append(run(shell, "%%kimi\nThis one is refused."))
    assert "Kimi rejected the API key" in shown[-1]
    shown.append(run(shell, "%kimi frobnicate"))
    for cell, text in zip(cells + ["auth error", "unknown subcommand"], shown, strict=True):
        assert_clean(text, f"the output of {cell!r}")

    session = magic.session
    for obj in (magic, session, session.settings, session.client, session.store,
                magic.sessions.settings.public(), session.status(), session.calls):
        assert_clean(repr(obj), f"repr of {type(obj).__name__}")
        assert_clean(str(obj), f"str of {type(obj).__name__}")
    assert_clean(widget_states(), "widget state")

    if importlib.util.find_spec("kimi_magic.export") is None:
        pytest.xfail("kimi_magic.export is not there yet: exports not checked")
    for ext in (".ipynb", ".md", ".json"):
        target = tmp_path / f"export{ext}"
        out = run(shell, f"%kimi export {target}")
        assert target.exists(), out
        assert_clean(target.read_bytes(), f"the {ext} export")

    uploads = openai.OpenAI(base_url=sim.url, api_key="sk-reader")
    for f in uploads.files.list().data:
        assert_clean(uploads.files.content(f.id).content, f"uploaded file {f.filename}")

    assert_clean(caplog.text, "DEBUG logs")
    assert "openai" in caplog.text or "httpcore" in caplog.text, "the SDK did log at DEBUG"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert_clean(path.read_bytes(), f"the file {path.name}")
    assert list(tmp_path.glob("store.sqlite*")), "the store was written"


def test_auth_errors_never_echo_the_key(keyed, sim):
    # Some servers echo the key they refused ("Incorrect API key provided: sk-..."); the
    # client redacts it before the line reaches the user.
    from kimi_magic.wire.client import KimiClient

    client = KimiClient(sim.url, KEY)
    err = client.error(openai.AuthenticationError(
        f"Incorrect API key provided: {KEY}", response=_response(401),
        body={"type": "incorrect_api_key_error",
              "message": f"Incorrect API key provided: {KEY}"}))
    assert err.kind == "auth"
    assert_clean(str(err), "the error line")
    assert "[key hidden]" in str(err)


def _response(status: int):
    import httpx2

    return httpx2.Response(status, request=httpx2.Request("POST", "http://127.0.0.1/v1"))


@pytest.mark.kernel
def test_an_executed_and_saved_notebook_holds_no_key(sim, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext kimi_magic",
        "%%kimi --out r\nMy favourite number is 42.",
        "%kimi status",
        "%config KimiMagic",
        "%kimi widget",
        "%%kimi\nWhat is my favourite number?",
    )]
    env = {"MOONSHOT_API_KEY": KEY, "MOONSHOT_BASE_URL": sim.url,
           "KIMI_MAGIC_STORE": str(tmp_path / "store.sqlite")}
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel inherits the key the way a user's shell passes it
    try:
        client = NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}},
                                store_widget_state=True)
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    target = tmp_path / "executed.ipynb"
    nbformat.write(nb, target)
    text = target.read_text()
    assert "Noted" in text or "42" in text, "the cells ran"
    assert_clean(text, "the executed notebook (outputs and widget state)")
    for path in tmp_path.glob("store.sqlite*"):
        assert_clean(path.read_bytes(), f"the kernel's {path.name}")
