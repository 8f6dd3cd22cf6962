"""``%%kimi --agent`` in a real kernel: approval goes through the stdin channel, answered
here as a frontend answers it (an ``input_reply`` to the kernel's ``input_request``)."""

from __future__ import annotations

import json
import queue

import pytest
import test_kernel
from test_kernel import text_of

pytestmark = pytest.mark.kernel

# The kernel and simulator fixtures of the kernel tests, shared rather than repeated.
kernel, sim = test_kernel.kernel, test_kernel.sim

#: The key the shared kernel fixture starts the kernel with.
KEY = "sk-kernel-test"


def execute(kc, code: str, answers: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """Run ``code`` allowing stdin; answer each input request with the next of ``answers``.

    Returns the iopub outputs and the prompts the kernel asked.
    """
    answers = list(answers or [])
    msg_id = kc.execute(code, allow_stdin=True)
    outputs, prompts = [], []
    while True:
        try:
            req = kc.get_stdin_msg(timeout=0.05)
        except queue.Empty:
            pass
        else:
            if req["msg_type"] == "input_request":
                prompts.append(req["content"]["prompt"])
                kc.input(answers.pop(0) if answers else "")
        try:
            m = kc.get_iopub_msg(timeout=0.05)
        except queue.Empty:
            continue
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return outputs, prompts
        if m["msg_type"] in ("stream", "display_data", "execute_result", "error",
                             "update_display_data"):
            outputs.append(m)


def tool_results(sim) -> list[str]:
    """The tool results of the latest turn (after its user message) in the last request."""
    body = [r for r in sim.requests if r["path"].endswith("/chat/completions")][-1]["body"]
    last_user = max(i for i, m in enumerate(body["messages"]) if m["role"] == "user")
    return [m["content"] for m in body["messages"][last_user:] if m["role"] == "tool"]


def agent(code: str, options: str = "") -> str:
    return (f"%%kimi --agent {options}\nsim:call run_python {json.dumps({'code': code})}\n"
            "Check it by running code.")


def test_approval_is_asked_on_stdin_and_yes_runs_the_code(kernel, sim):
    execute(kernel, "%load_ext kimi_magic")
    outputs, prompts = execute(kernel, agent("total = sum(range(10))\ntotal"), ["y"])
    assert prompts == ["Run this code? [y/N] "]
    assert "total = sum(range(10))" in text_of(outputs)
    assert "error" not in [m["msg_type"] for m in outputs]
    assert "value: 45" in tool_results(sim)[0]
    outputs, _ = execute(kernel, "print(total * 2)")
    assert "90" in text_of(outputs)


def test_no_runs_nothing_and_a_failure_stays_in_the_tool_result(kernel, sim):
    execute(kernel, "%load_ext kimi_magic")
    outputs, prompts = execute(kernel, agent("touched = 1"), ["n"])
    assert prompts and "denied by the user" in tool_results(sim)[0]
    outputs, _ = execute(kernel, "print('touched' in dir())")
    assert "False" in text_of(outputs)
    outputs, _ = execute(kernel, agent("1 / 0", "--yes"))
    assert "error" not in [m["msg_type"] for m in outputs]
    assert "ZeroDivisionError: division by zero" in tool_results(sim)[0]


def test_the_time_limit_and_the_key_in_a_kernel(kernel, sim):
    execute(kernel, "%load_ext kimi_magic")
    execute(kernel, "%config KimiMagic.agent_timeout = 0.5")
    outputs, prompts = execute(kernel, agent("while True:\n    pass", "--yes"))
    assert prompts == [] and "stopped after the time limit" in tool_results(sim)[0]
    outputs, _ = execute(kernel, agent("import os\nprint(os.environ['MOONSHOT_API_KEY'])",
                                       "--yes"))
    assert "[hidden]" in tool_results(sim)[0]
    assert KEY not in text_of(outputs)
    assert all(KEY not in json.dumps(r) for r in sim.requests)


def test_a_frontend_without_stdin_is_not_a_user_saying_no(kernel, sim):
    # nbclient, papermill, a frontend with no input box: the code cannot be approved, and the
    # model was told "denied by the user" (so it told the user they had refused).
    from test_kernel import execute as execute_without_stdin

    execute(kernel, "%load_ext kimi_magic")
    outputs = execute_without_stdin(kernel, agent("touched = 1"))
    said = text_of(outputs)
    assert "Cannot ask for approval here" in said and "--yes" in said
    assert "denied" not in said.replace("denied by", "")  # no "Not run: denied." line
    result = tool_results(sim)[0]
    assert "cannot ask the user for approval" in result and "denied" not in result
    outputs, _ = execute(kernel, "print('touched' in dir())")
    assert "False" in text_of(outputs)
