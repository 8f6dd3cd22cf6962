"""``%%kimi --agent`` in a real IPython shell: the model sees the notebook, runs code only
with approval, never sees a secret, and knows what ran since the last turn.

The simulator makes exactly the calls a prompt scripts with ``sim:call NAME {json}`` lines.
"""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import pytest
from test_magic import chats, run

from conftest import TEST_KEY as KEY
from kimi_magic import tools as tool_module


@pytest.fixture(autouse=True)
def empty_registry():
    tool_module.registry.clear()
    yield
    tool_module.registry.clear()


@pytest.fixture()
def answers(monkeypatch):
    """What the user types at each approval prompt; records the prompts asked."""
    state = {"replies": [], "asked": []}

    def fake_input(prompt=""):
        state["asked"].append(prompt)
        return state["replies"].pop(0) if state["replies"] else ""

    monkeypatch.setattr(builtins, "input", fake_input)
    return state


def shown(out) -> str:
    parts = [out.stdout, out.stderr]
    for o in out.outputs:
        parts += [str(v) for v in o.data.values()]
    return "\n".join(parts)


def tool_results(sim) -> dict[str, list[str]]:
    """Tool message contents of the latest turn in the last request, by tool name."""
    found: dict[str, list[str]] = {}
    messages = chats(sim)[-1]["messages"]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    for m in messages[last_user:]:
        if m["role"] == "tool":
            found.setdefault(m["name"], []).append(m["content"])
    return found


def call(tool: str, **arguments) -> str:
    return f"sim:call {tool} {json.dumps(arguments)}"


def agent_cell(*calls: str, options: str = "", prompt: str = "Look at the notebook.") -> str:
    return f"%%kimi --agent {options}\n" + "\n".join(calls) + f"\n{prompt}"


def test_the_model_lists_variables_and_inspects_a_dataframe(ipython, sim, answers):
    run(ipython, "import pandas as pd\nimport json\n"
                 "sales = pd.DataFrame({'region': ['north', 'south'], 'units': [12, 30]})\n"
                 "threshold = 20\ndef helper(x):\n    return x\n_private = 1")
    result, out = run(ipython, agent_cell(call("list_variables"),
                                          call("inspect_variable", name="sales")))
    assert result.success
    got = tool_results(sim)
    listing = got["list_variables"][0]
    assert "sales: DataFrame, 2×2" in listing and "threshold: int" in listing
    assert "helper" in listing
    # Modules, imported callables and _private names are left out.
    assert "pd" not in listing.split() and "json:" not in listing and "_private" not in listing
    inspected = got["inspect_variable"][0]
    assert "shape: 2 rows × 2 columns" in inspected and "units: int64" in inspected
    assert "north,12" in inspected and "describe" in inspected
    # Each call and its result is shown in the cell, as --tools calls are.
    assert "inspect_variable" in shown(out)
    assert answers["asked"] == []  # reading needs no approval


def test_an_unknown_variable_is_an_error_for_the_model_not_the_cell(ipython, sim, answers):
    result, _ = run(ipython, agent_cell(call("inspect_variable", name="nope")))
    assert result.success
    assert "no variable named 'nope'" in tool_results(sim)["inspect_variable"][0]


def test_approved_code_defines_a_variable_the_next_cell_uses(ipython, sim, answers):
    answers["replies"] = ["y"]
    code = "answer = 6 * 7\nprint('computed', answer)\nanswer + 1"
    result, out = run(ipython, agent_cell(call("run_python", code=code)))
    assert result.success
    assert answers["asked"] == ["Run this code? [y/N] "]
    assert "answer = 6 * 7" in shown(out)  # the code was shown before the question
    reply = tool_results(sim)["run_python"][0]
    assert "stdout:\ncomputed 42" in reply and "value: 43" in reply
    nxt, nxt_out = run(ipython, "print(answer * 10)")
    assert nxt.success and "420" in nxt_out.stdout


def test_denied_code_does_not_run(ipython, sim, answers):
    answers["replies"] = ["no"]
    result, out = run(ipython, agent_cell(call("run_python", code="ran_it = True")))
    assert result.success
    assert "ran_it" not in ipython.user_ns
    assert "denied by the user" in tool_results(sim)["run_python"][0]
    assert "ran_it = True" in shown(out)


@pytest.mark.parametrize("typed", ["", "Y ", "sure", "yes please"])
def test_only_yes_approves(ipython, sim, answers, typed):
    ipython.user_ns.pop("flag", None)
    answers["replies"] = [typed]
    run(ipython, agent_cell(call("run_python", code="flag = 1")))
    assert ("flag" in ipython.user_ns) == (typed.strip().lower() in ("y", "yes"))


def test_yes_option_and_approval_setting(ipython, sim, answers):
    result, _ = run(ipython, agent_cell(call("run_python", code="a = 1"), options="--yes"))
    assert result.success and ipython.user_ns["a"] == 1 and answers["asked"] == []
    ipython.run_line_magic("config", "KimiMagic.agent_approval = 'yes'")
    run(ipython, agent_cell(call("run_python", code="b = 2")))
    assert ipython.user_ns["b"] == 2 and answers["asked"] == []
    ipython.run_line_magic("config", "KimiMagic.agent_approval = 'never'")
    sim.clear_requests()
    result, _ = run(ipython, agent_cell(call("run_python", code="c = 3"), options="--yes"))
    assert result.success and "c" not in ipython.user_ns
    offered = [t["function"]["name"] for t in chats(sim)[0]["tools"]]
    assert "run_python" not in offered and "list_variables" in offered


def test_code_that_raises_sends_the_traceback_and_the_cell_succeeds(ipython, sim, answers):
    code = "def load():\n    return {}['missing']\nload()"
    result, out = run(ipython, agent_cell(call("run_python", code=code), options="--yes"))
    assert result.success and result.error_in_exec is None
    reply = tool_results(sim)["run_python"][0]
    assert "Traceback (most recent call last)" in reply and "KeyError: 'missing'" in reply
    assert "return {}['missing']" in reply  # the code's own line, as in a cell's traceback
    assert "agent.py" not in reply  # our frames are not the model's business


def test_code_past_the_time_limit_is_stopped(ipython, sim, answers):
    import time

    ipython.run_line_magic("config", "KimiMagic.agent_timeout = 0.5")
    started = time.monotonic()
    result, _ = run(ipython, agent_cell(call("run_python", code="n = 0\nwhile True: n += 1"),
                                        call("run_python", code="import time\ntime.sleep(30)"),
                                        options="--yes"))
    assert result.success and time.monotonic() - started < 10
    loop, sleep = tool_results(sim)["run_python"]
    assert "stopped after the time limit of 0.5 s" in loop
    assert "stopped after the time limit" in sleep
    assert ipython.user_ns["n"] > 0


def test_printing_the_key_reaches_nothing(ipython, sim, answers, tmp_path, monkeypatch):
    monkeypatch.setenv("SERVICE_TOKEN", "tok-live-9f8e7d6c5b4a")
    code = ("import os\nprint(os.environ['MOONSHOT_API_KEY'])\n"
            "print(os.environ['SERVICE_TOKEN'])\nos.environ['MOONSHOT_API_KEY']")
    result, out = run(ipython, agent_cell(call("run_python", code=code),
                                          call("read_cells", count=3), options="--yes"))
    assert result.success
    reply = tool_results(sim)["run_python"][0]
    assert reply.count("[hidden]") == 3
    run(ipython, "%kimi export " + str(tmp_path / "out.md"))
    run(ipython, "%kimi export " + str(tmp_path / "out.json"))
    run(ipython, "%kimi export " + str(tmp_path / "out.ipynb"))
    _, history = run(ipython, "%kimi history")
    everywhere = [json.dumps(r) for r in sim.requests] + [shown(out), shown(history)]
    everywhere += [p.read_text() for p in tmp_path.glob("out.*")]
    store = Path(os.environ["KIMI_MAGIC_STORE"])
    raw = b"".join(p.read_bytes() for p in store.parent.glob(store.name + "*"))
    for secret in (KEY, "tok-live-9f8e7d6c5b4a"):
        assert secret.encode() not in raw
        assert not any(secret in text for text in everywhere)


def test_propose_cell_puts_one_cell_below(ipython, sim, answers):
    ipython.rl_next_input = None
    result, _ = run(ipython, agent_cell(call("propose_cell", code="df.plot()"),
                                        call("propose_cell", code="second()")))
    assert result.success and ipython.rl_next_input == "df.plot()"
    first, second = tool_results(sim)["propose_cell"]
    assert "has not run" in first and "only one is allowed" in second


def test_read_cells_gives_source_output_and_error(ipython, sim, answers):
    run(ipython, "print('loaded 3 rows')")
    run(ipython, "rows = [1, 2, 3]\nrows[10]")
    run(ipython, agent_cell(call("read_cells", count=2)))
    text = tool_results(sim)["read_cells"][0]
    assert "print('loaded 3 rows')" in text and "printed:\nloaded 3 rows" in text
    assert "rows[10]" in text and "error: IndexError: list index out of range" in text
    assert "\x1b[" not in text and "%%kimi" not in text


def test_an_agent_turn_is_one_turn_with_a_snapshot_before_code_ran(ipython, sim, answers):
    run(ipython, "%%kimi\nThe dataset is sales.")
    session = ipython.magics_manager.registry["KimiMagic"].session
    before = session.context
    run(ipython, agent_cell(call("list_variables"), call("run_python", code="made = 1"),
                            options="--yes"))
    assert len(session.context.rounds) == 2
    last = session.context.rounds[-1]
    assert [m.role for m in last] == ["user", "assistant", "tool", "assistant", "tool",
                                      "assistant"]
    snap = session.snapshots[-1]
    assert snap.auto and "before Kimi ran code" in snap.label and snap.context is before
    # A read-only turn takes no snapshot.
    run(ipython, agent_cell(call("list_variables")))
    assert session.snapshots[-1] is snap
    _, out = run(ipython, f"%kimi rollback {snap.id}")
    text = shown(out)
    assert "restores the conversation" in text and "variables" in text
    assert ipython.user_ns["made"] == 1


def test_ctrl_c_in_the_code_stops_the_turn_and_records_nothing(ipython, sim, answers):
    run(ipython, "%%kimi\nFirst.")
    session = ipython.magics_manager.registry["KimiMagic"].session
    rounds = len(session.context.rounds)
    result, out = run(ipython, agent_cell(call("run_python", code="raise KeyboardInterrupt"),
                                          options="--yes"))
    assert not result.success and "Interrupted" in str(result.error_in_exec)
    assert len(session.context.rounds) == rounds


def test_a_real_ctrl_c_while_code_runs_stops_it_and_the_turn(ipython, sim, answers):
    import _thread
    import threading
    import time

    session = ipython.magics_manager.registry["KimiMagic"].session
    rounds = len(session.context.rounds)
    # SIGINT to the main thread two seconds in, as the kernel's interrupt sends it.
    timer = threading.Timer(2.0, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    try:
        result, _ = run(ipython, agent_cell(call("run_python", code=(
            "import time\nend = time.monotonic() + 60\n"
            "while time.monotonic() < end:\n    pass\nwoke = True")), options="--yes"))
    finally:
        timer.cancel()
    assert time.monotonic() - started < 30
    assert not result.success and "Interrupted" in str(result.error_in_exec)
    assert "woke" not in ipython.user_ns and len(session.context.rounds) == rounds


def test_yes_needs_agent(ipython, sim):
    result, _ = run(ipython, "%%kimi --yes\nHello")
    assert not result.success and "--agent" in str(result.error_in_exec)
    assert chats(sim) == []


# -- what ran since the last turn ----------------------------------------------------------

def test_the_next_prompt_carries_what_ran_since(ipython, sim):
    run(ipython, "%%kimi\nLet us analyse the sales.")
    first = chats(sim)[-1]["messages"]
    run(ipython, "import pandas as pd\nframe = pd.DataFrame({'x': [1, 2, 3]})")
    run(ipython, "%kimi status")
    run(ipython, "frame['y']")
    run(ipython, "%%kimi\nWhy did that fail?")
    messages = chats(sim)[-1]["messages"]
    # The earlier messages are byte-identical: the cached prefix is unchanged.
    assert messages[: len(first)] == first
    user = messages[-1]["content"]
    assert user.startswith("<notebook>") and user.endswith("Why did that fail?")
    assert "frame = pd.DataFrame" in user and "error: KeyError: 'y'" in user
    assert "frame (DataFrame, 3×1)" in user
    assert "%kimi status" not in user
    # Only once: the next turn has nothing new to report.
    run(ipython, "%%kimi\nThanks.")
    assert chats(sim)[-1]["messages"][-1]["content"] == "Thanks."
    _, out = run(ipython, "%kimi history")
    assert "<notebook>" in shown(out)


def test_the_note_hides_secrets_a_cell_printed(ipython, sim, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "hunter2-but-longer")
    run(ipython, "import os\nprint(os.environ['MOONSHOT_API_KEY'], os.environ['DB_PASSWORD'])")
    run(ipython, "%%kimi\nWhat did that print?")
    user = chats(sim)[-1]["messages"][-1]["content"]
    assert "output: [hidden] [hidden]" in user
    assert KEY not in user and "hunter2-but-longer" not in user


def test_the_note_is_budgeted_and_can_be_turned_off(ipython, sim):
    from kimi_magic.core import tokens

    ipython.run_line_magic("config", "KimiMagic.notebook_context = 120")
    for i in range(20):
        run(ipython, f"value_{i} = {i}  # step {i} of a long exploration of the data set")
    run(ipython, "%%kimi\nWhere are we?")
    user = chats(sim)[-1]["messages"][-1]["content"]
    note = user.split("</notebook>")[0] + "</notebook>"
    assert tokens.count(note) <= 120
    assert "value_19 = 19" in note and "earlier cells left out" in note
    ipython.run_line_magic("config", "KimiMagic.notebook_context = 0")
    run(ipython, "z = 1")
    run(ipython, "%%kimi\nAnd now?")
    assert chats(sim)[-1]["messages"][-1]["content"] == "And now?"


def test_map_items_carry_no_note(ipython, sim):
    run(ipython, "items = ['a', 'b']")
    run(ipython, "%%kimi --map items\nSay {item}")
    assert all("<notebook>" not in json.dumps(b) for b in chats(sim))


def test_tool_results_are_compacted_and_recalled_like_any_round(ipython, sim, answers):
    run(ipython, agent_cell(call("run_python", code="print('checksum', 987654 + 1)"),
                            options="--yes"))
    session = ipython.magics_manager.registry["KimiMagic"].session
    assert "checksum 987655" in "".join(m.text for m in session.history())
    run(ipython, "%%kimi\nNext step.")
    run(ipython, "%kimi compress --keep-rounds 1")
    assert not any(m.role == "tool" for m in session.context.history)
    _, out = run(ipython, "%kimi recall checksum")
    assert "987655" in shown(out)


# -- the simulator's scripted calls ----------------------------------------------------------

class Echo:
    """Two offered tools that answer with what they were given."""

    max_steps = 5

    def __init__(self):
        self.calls = []
        self.specs = [{"type": "function", "function": {
            "name": name, "description": name,
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}
            for name in ("first_tool", "second_tool")]

    def run(self, call):
        self.calls.append((call["function"]["name"], call["function"]["arguments"]))
        return f"got {call['function']['arguments']}"


def test_sim_call_lines_script_the_calls_in_order(session, sim):
    from kimi_magic import Options

    tools = Echo()
    prompt = ('sim:call second_tool {"x": 2}\nsim:call not_offered {}\n'
              'sim:call first_tool {"x": 1}\nDo it; first_tool is mentioned but scripted.')
    turn = session.ask(prompt, options=Options(tools=tools.specs), tools=tools)
    assert tools.calls == [("second_tool", '{"x": 2}'), ("first_tool", '{"x": 1}')]
    assert turn.text == 'Tool results: second_tool -> got {"x": 2}; first_tool -> got {"x": 1}'
    # Call ids count the calls made so far, so a replayed script gets the same ids.
    assert [c["call"]["id"] for c in turn.tool_calls] == ["call_1", "call_2"]
