"""Re-running a ``%%kimi`` cell in a real kernel, the way JupyterLab sends it (with cellId)."""

from __future__ import annotations

import os

import pytest
from jupyter_client.manager import start_new_kernel

from kimi_magic.simulator import Simulator

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def sim():
    with Simulator(port=0) as s:
        yield s


@pytest.fixture()
def kernel(sim, tmp_path):
    env = {**os.environ, "MOONSHOT_API_KEY": "sk-kernel-test", "MOONSHOT_BASE_URL": sim.url,
           "KIMI_MAGIC_STORE": str(tmp_path / "store.sqlite"), "PYTHONUNBUFFERED": "1"}
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc, code: str, cell_id: str | None = None) -> list[dict]:
    """Send an execute_request with JupyterLab's metadata; return the iopub outputs."""
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    msg = kc.session.msg("execute_request", content,
                         metadata={"cellId": cell_id} if cell_id else {})
    kc.shell_channel.send(msg)
    outputs = []
    while True:
        m = kc.get_iopub_msg(timeout=60)
        if m["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return outputs
        if m["msg_type"] in ("stream", "display_data", "execute_result", "error",
                             "update_display_data"):
            outputs.append(m)


def text_of(outputs: list[dict]) -> str:
    parts = []
    for m in outputs:
        c = m["content"]
        parts.append(c.get("text", ""))
        parts.append(c.get("data", {}).get("text/plain", ""))
        if m["msg_type"] == "error":
            parts.append(f"{c['ename']}: {c['evalue']}")
    return "\n".join(parts)


def user_turns(sim) -> list[str]:
    body = [r for r in sim.requests if r["path"].endswith("/chat/completions")][-1]["body"]
    return [m["content"] for m in body["messages"] if m["role"] == "user"]


def test_rerunning_a_cell_replaces_its_turn(kernel, sim):
    assert "error" not in text_of(execute(kernel, "%load_ext kimi_magic")).lower()
    execute(kernel, "%%kimi\nThe project codename is HERON.", cell_id="cell-a")
    execute(kernel, "%%kimi\nDraft a plan.", cell_id="cell-b")
    out = execute(kernel, "%%kimi\nDraft a better plan.", cell_id="cell-b")
    assert "this answer replaces its earlier turn (round 2)" in text_of(out)
    assert "answered against" not in text_of(out), "nothing came after it"
    execute(kernel, "%%kimi\nWhat is the codename?", cell_id="cell-c")
    assert user_turns(sim) == ["The project codename is HERON.", "Draft a better plan.",
                               "What is the codename?"]


def test_an_earlier_cell_rerun_moves_its_turn_and_keeps_the_rest(kernel, sim):
    execute(kernel, "%load_ext kimi_magic")
    execute(kernel, "%%kimi\nStep one.", cell_id="c1")
    execute(kernel, "%%kimi\nStep two.", cell_id="c2")
    execute(kernel, "%%kimi\nStep three.", cell_id="c3")
    out = execute(kernel, "%%kimi\nStep one, revised.", cell_id="c1")
    said = text_of(out)
    # The turn moves to the end: say so, and which answers relied on the old text.
    assert "replaces" not in said
    assert "its earlier turn (round 1) was removed" in said
    assert "this answer is now round 3" in said
    assert "the 2 turns that followed it (now rounds 1–2) were answered against its old " \
           "version" in said
    assert user_turns(sim) == ["Step two.", "Step three.", "Step one, revised."]
    history = text_of(execute(kernel, "%kimi history"))
    assert "Step one." not in history and "Step one, revised." in history


def test_a_rerun_with_once_replaces_nothing_and_says_what_it_asked(kernel, sim):
    execute(kernel, "%load_ext kimi_magic")
    execute(kernel, "%%kimi\nStep one.", cell_id="c1")
    execute(kernel, "%%kimi\nStep two.", cell_id="c2")
    said = text_of(execute(kernel, "%%kimi --once\nStep one, revised.", cell_id="c1"))
    assert user_turns(sim) == ["Step two.", "Step one, revised."], "asked without the old turn"
    assert "replace" not in said and "removed" not in said
    assert "its earlier turn (round 1) stays in the context" in said
    assert "--once: this turn was not recorded." in said
    execute(kernel, "%%kimi\nStep three.", cell_id="c3")
    assert user_turns(sim) == ["Step one.", "Step two.", "Step three."], "nothing replaced"


def test_cells_without_ids_append(kernel, sim):
    execute(kernel, "%load_ext kimi_magic")
    execute(kernel, "%%kimi\nSame prompt")
    execute(kernel, "%%kimi\nSame prompt")
    assert user_turns(sim) == ["Same prompt", "Same prompt"]
