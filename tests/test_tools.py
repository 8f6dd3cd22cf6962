"""Tools (notebook functions, $web_search, the archive), thinking switches, --model auto,
--format code and %kimi fix, against the simulator (which calls a tool named in the prompt,
one per step)."""

from __future__ import annotations

import json
import sys
from typing import Literal, Optional

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from kimi_magic import Message, Options, Pin, SessionError, tool
from kimi_magic import tools as tool_module
from kimi_magic.core.models import WEB_SEARCH_USD
from kimi_magic.tools import Toolset, for_session, make_tool


@pytest.fixture(autouse=True)
def empty_registry():
    tool_module.registry.clear()
    yield
    tool_module.registry.clear()


def chats(sim):
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


# -- schemas ------------------------------------------------------------------------------------

def test_schema_comes_from_signature_hints_and_docstring():
    def forecast(city: str, days: int = 3, unit: Literal["c", "f"] = "c",
                 tags: list[str] | None = None, weights: dict[str, float] | None = None,
                 note: Optional[str] = None, detailed: bool = False,  # noqa: UP045
                 scale: float = 1.0):
        """Forecast the weather for a city.

        Args:
            city: the city's name
            days (int): how many days,
                at most 7
            unit: temperature unit
        Returns:
            a text forecast
        """

    spec = make_tool(forecast).spec
    fn = spec["function"]
    assert spec["type"] == "function" and fn["name"] == "forecast"
    assert fn["description"] == "Forecast the weather for a city."
    params = fn["parameters"]
    assert params["type"] == "object" and params["required"] == ["city"]
    props = params["properties"]
    assert props["city"] == {"type": "string", "description": "the city's name"}
    assert props["days"] == {"type": "integer", "description": "how many days, at most 7",
                             "default": 3}
    assert props["unit"]["enum"] == ["c", "f"] and props["unit"]["type"] == "string"
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["note"] == {"type": "string"}
    assert props["detailed"]["type"] == "boolean" and props["scale"]["type"] == "number"

    def every_node_has_a_type(node):
        assert "type" in node
        for sub in node.get("properties", {}).values():
            every_node_has_a_type(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                every_node_has_a_type(node[key])

    every_node_has_a_type(params)


@pytest.mark.parametrize("fn, words", [
    (lambda x: x, "pass name="),
    (make_tool, "unsupported type"),  # its `fn: Callable[...]` cannot be described
])
def test_a_function_kimi_would_refuse_is_one_line(fn, words):
    with pytest.raises(SessionError) as err:
        make_tool(fn)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_names_and_star_args_are_refused():
    def total(*values: int):
        return values

    with pytest.raises(SessionError, match=r"\*values"):
        make_tool(total)
    with pytest.raises(SessionError, match="not allowed by Kimi"):
        make_tool(len, name="9lives")
    with pytest.raises(SessionError, match="not allowed by Kimi"):
        make_tool(len, name="ab")


def test_decorator_registers_and_returns_the_function_unchanged():
    @tool
    def double(n: int) -> int:
        """Double a number."""
        return 2 * n

    @tool(confirm=True)
    def delete_file(path: str) -> str:
        """Delete a file."""
        return path

    assert double(4) == 8
    assert set(tool_module.registry) == {"double", "delete_file"}
    assert tool_module.registry.get("delete_file").confirm


# -- running calls ------------------------------------------------------------------------------

def call(name, arguments):
    return {"id": "call_1", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def test_run_returns_text_for_every_outcome():
    def lookup(key: str, limit: int = 2):
        """Look something up."""
        if key == "boom":
            raise KeyError("no such key")
        return {"key": key, "values": list(range(limit))}

    def shout(text: str) -> str:
        """Shout."""
        return text.upper() * 1000

    box = Toolset([make_tool(lookup), make_tool(shout)], max_result_chars=50)
    assert json.loads(box.run(call("lookup", '{"key": "a", "limit": 3}'))) == {
        "key": "a", "values": [0, 1, 2]}
    assert box.run(call("lookup", '{"key": "boom"}')) == "Error: KeyError: 'no such key'"
    assert box.run(call("lookup", '{"key": ')).startswith("Error: the arguments for lookup "
                                                          "were not valid JSON")
    assert "must be a JSON object" in box.run(call("lookup", "[1, 2]"))
    assert box.run(call("nope", "{}")).startswith("Error: there is no tool named 'nope'")
    assert "TypeError" in box.run(call("lookup", '{"wrong": 1}'))
    long = box.run(call("shout", '{"text": "hey"}'))
    assert long.startswith("HEYHEY") and "truncated: 50 of 3,000 characters" in long


def test_tool_loop_runs_two_tools_in_turn_even_when_one_raises(session, sim):
    seen = []

    @tool
    def get_weather(city: str) -> str:
        """Current weather of a city.

        Args:
            city: the city's name
        """
        seen.append(city)
        return f"sunny in {city}"

    @tool
    def explode(code: int) -> int:
        """A tool that always fails."""
        raise ValueError(f"cannot handle {code}")

    tools = for_session(session)
    turn = session.ask('Call get_weather for "Paris", then explode with 7.',
                       options=Options(tools=tools.specs), tools=tools)

    assert seen == ["Paris"]
    assert [c["call"]["function"]["name"] for c in turn.tool_calls] == ["get_weather",
                                                                         "explode"]
    assert turn.tool_calls[1]["result"] == "Error: ValueError: cannot handle 7"
    assert "get_weather -> sunny in Paris" in turn.text
    assert "explode -> Error: ValueError" in turn.text
    bodies = chats(sim)
    assert len(bodies) == 3
    names = {t["function"]["name"] for t in bodies[0]["tools"]}
    assert names == {"get_weather", "explode", "recall_archive"}
    assert all("tool_choice" not in b for b in bodies), "never 'required' on K2.x: not sent"
    last = bodies[-1]["messages"]
    assert [m["role"] for m in last[-5:]] == ["user", "assistant", "tool", "assistant", "tool"]
    # One round in the history: the user message, both steps and the final answer.
    roles = [m.role for m in session.history() if m.role != "system"]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert len(session.context.rounds) == 1
    # The calls' reasoning goes back unchanged (thinking models insist on it).
    assert all(m.get("reasoning_content") for m in last if m.get("tool_calls"))


def test_confirm_tools_ask_first_and_a_no_goes_back_to_the_model(session, sim):
    ran = []

    @tool(confirm=True)
    def send_email(to: str) -> str:
        """Send an email."""
        ran.append(to)
        return "sent"

    questions = []
    tools = for_session(session, ask=lambda q: questions.append(q) or "n")
    turn = session.ask('Please send_email to "bob@example.com".',
                       options=Options(tools=tools.specs), tools=tools)
    assert ran == []
    assert "send_email(to='bob@example.com')" in questions[0]
    tool_msg = [m for m in chats(sim)[-1]["messages"] if m["role"] == "tool"][-1]
    assert tool_msg["content"].startswith("The user declined to run send_email")
    assert "declined" in turn.text

    tools = for_session(session, ask=lambda q: "yes")
    session.ask('Now send_email to "ann@example.com".', options=Options(tools=tools.specs),
                tools=tools)
    assert ran == ["ann@example.com"]


def test_step_limit_stops_the_loop_and_records_nothing(session, sim):
    @tool
    def first_tool() -> str:
        """One."""
        return "1"

    @tool
    def second_tool() -> str:
        """Two."""
        return "2"

    before = len(session.history())
    tools = for_session(session, max_steps=1)
    with pytest.raises(SessionError, match="limit of 1 steps"):
        session.ask("Use first_tool and second_tool.", options=Options(tools=tools.specs),
                    tools=tools)
    assert len(session.history()) == before
    assert session.settings.tool_steps == 8 and for_session(session).max_steps == 8


def test_web_search_echoes_the_arguments_and_is_billed(session, sim):
    tools = for_session(session, functions=False, web=True)
    assert tools.specs == [{"type": "builtin_function", "function": {"name": "$web_search"}}]
    turn = session.ask("Search the web for Kimi K3 pricing.",
                       options=Options(tools=tools.specs), tools=tools)
    bodies = chats(sim)
    call_msg = next(m for m in bodies[-1]["messages"] if m.get("tool_calls"))
    arguments = call_msg["tool_calls"][0]["function"]["arguments"]
    tool_msg = next(m for m in bodies[-1]["messages"] if m["role"] == "tool")
    assert tool_msg["content"] == arguments and tool_msg["name"] == "$web_search"
    assert tools.web_calls == 1
    assert "web search" in turn.text
    notice = next(n for n in turn.notices if "$web_search" in n)
    assert "$0.005" in notice
    tokens_only = sum(session.model().cost(r["prompt_tokens"], r["cached_tokens"],
                                           r["completion_tokens"]) for r in [session.calls[-1]])
    assert session.calls[-1]["cost"] == pytest.approx(turn.cost)
    assert turn.cost > WEB_SEARCH_USD
    assert tokens_only < turn.cost


def test_recall_archive_tool_finds_what_was_truncated_away(session, sim):
    session.ask("Remember: the launch code is 7421.")
    session.ask("Unrelated chatter about lunch.")
    session.truncate(keep_rounds=0)
    tools = for_session(session)
    turn = session.ask('Use recall_archive with "launch code" to find it.',
                       options=Options(tools=tools.specs), tools=tools)
    assert turn.tool_calls[0]["call"]["function"]["name"] == "recall_archive"
    assert "7421" in turn.tool_calls[0]["result"]
    assert "7421" in turn.text


def test_more_than_128_tools_is_refused():
    fns = []
    for i in range(129):
        def f() -> None:
            """A tool."""
        fns.append(make_tool(f, name=f"tool_{i}"))
    with pytest.raises(SessionError, match="at most 128"):
        Toolset(fns)


# -- the magic ----------------------------------------------------------------------------------

def test_kimi_tool_registers_a_notebook_function_and_tools_calls_it(ipython, sim):
    ipython.run_cell("def word_count(text: str) -> int:\n"
                     "    '''Count the words of a text.'''\n"
                     "    return len(text.split())\n")
    with capture_output() as out:
        ipython.run_line_magic("kimi", "tool word_count")
    assert "Registered tool 'word_count'" in out.stdout
    with capture_output():
        ipython.run_cell_magic("kimi", "--tools --out answer",
                               'Use word_count on "one two three".')
    assert "word_count -> 3" in ipython.user_ns["answer"]
    with pytest.raises(UsageError, match="not defined"):
        ipython.run_line_magic("kimi", "tool no_such_function")
    ipython.run_cell("bad = lambda: 1")
    with pytest.raises(UsageError, match="not allowed by Kimi"):
        ipython.run_line_magic("kimi", "tool bad")


def test_web_flag_in_the_magic_says_what_it_costs(ipython, sim):
    with capture_output() as out:
        ipython.run_cell_magic("kimi", "--web", "Search the web for today's news.")
    text = "".join(o.data.get("text/plain", "") for o in out.outputs)
    assert "$web_search: 1 call, billed $0.005 each" in text
    assert chats(sim)[0]["tools"] == [{"type": "builtin_function",
                                       "function": {"name": "$web_search"}}]


# -- thinking and effort --------------------------------------------------------------------------

def test_no_think_disables_thinking_on_k26(session, sim):
    turn = session.ask("Hello", options=Options(think=False))
    body = chats(sim)[-1]
    assert body["thinking"] == {"type": "disabled"}
    assert "reasoning_effort" not in body
    assert turn.reasoning == ""


def test_effort_is_sent_on_k3_only(session, sim):
    session.ask("Hello", model="kimi-k3", options=Options(effort="max"))
    body = chats(sim)[-1]
    assert body["model"] == "kimi-k3" and body["reasoning_effort"] == "max"
    assert "thinking" not in body
    sent = len(chats(sim))
    with pytest.raises(SessionError) as err:
        session.ask("Again", model="kimi-k3", options=Options(think=False))
    assert str(err.value) == ("--no-think: kimi-k3 always thinks; use -m kimi-k2.6 to turn "
                              "thinking off")
    assert len(chats(sim)) == sent, "kimi-k3 always thinks: refused, nothing sent"


def test_effort_on_a_model_without_it_is_one_line_and_sends_nothing(session, sim):
    before = len(chats(sim))
    with pytest.raises(SessionError) as err:
        session.ask("Hello", model="kimi-k2.6", options=Options(effort="high"))
    assert "kimi-k3" in str(err.value) and "\n" not in str(err.value)
    assert len(chats(sim)) == before and session.history()[-1].role == "system"


def test_effort_error_in_the_magic_is_a_usage_error(ipython, sim):
    with pytest.raises(UsageError, match="--effort works only"):
        ipython.run_cell_magic("kimi", "--effort high -m kimi-k2.6", "Hello")
    assert chats(sim) == []


# -- --model auto ---------------------------------------------------------------------------------

def test_auto_picks_k26_when_it_fits_and_says_why(session, sim):
    turn = session.ask("Hello", model="auto")
    assert turn.model == "kimi-k2.6" and chats(sim)[-1]["model"] == "kimi-k2.6"
    assert any("--model auto picked kimi-k2.6" in n and "lowest price" in n
               for n in turn.notices)


def test_auto_picks_the_cheapest_1m_model_when_the_context_outgrows_the_256k_models(
        session, sim):
    # The 256K models' windows shrunk to 20K keep the test cheap; the choice is the same.
    small = {"context_length": 20_000}
    session.settings.model_overrides = {m: small for m in ("kimi-k2.6", "kimi-k2.7-code",
                                                           "kimi-k2.7-code-highspeed")}
    session.settings.pin_budget = 100_000
    big = " ".join(f"row{i} value{i * 3}" for i in range(4_000))
    session.set_pin(Pin("big", "text", "cell", Message.of("system", big), frozen=True))
    assert session.context.tokens > 20_000
    turn = session.ask("What does row5 hold?", model="auto")
    # kimi-k3.1-pro: the 1M-token window at $2.00 a million, below kimi-k3's $3.00.
    assert turn.model == "kimi-k3.1-pro" and chats(sim)[-1]["model"] == "kimi-k3.1-pro"
    notice = next(n for n in turn.notices if "--model auto" in n)
    assert "kimi-k3.1-pro" in notice and "1,048,576" in notice
    assert len(session.context.rounds) == 1, "chosen, not compacted"


# -- --format code and %kimi fix ----------------------------------------------------------------

def test_format_code_puts_the_reply_into_the_next_cell(ipython, sim):
    with capture_output():
        ipython.run_cell_magic("kimi", "--format code --out code",
                               "Write a function that adds two numbers.")
    assert ipython.rl_next_input == ipython.user_ns["code"].strip()
    assert "adds two numbers" in ipython.rl_next_input


def test_fix_sends_the_failing_cell_and_traceback_and_fills_the_next_cell(ipython, sim):
    with capture_output():
        ipython.run_cell("def ratio(a, b):\n    return a / b\n\nratio(1, 0)",
                         store_history=True)
    assert sys.last_type is ZeroDivisionError
    ipython.rl_next_input = None
    with capture_output():
        ipython.run_line_magic("kimi", "fix keep the signature")
    prompt = chats(sim)[-1]["messages"][-1]["content"]
    assert "return a / b" in prompt and "ratio(1, 0)" in prompt
    assert "ZeroDivisionError: division by zero" in prompt
    assert "interactiveshell.py" not in prompt, "IPython's own frames are left out"
    assert "Also: keep the signature" in prompt
    assert ipython.rl_next_input
    assert ipython.rl_next_input == ipython.magics_manager.registry["KimiMagic"
                                                                     ].last_turn.text.strip()


def test_fix_without_an_error_is_one_line(ipython, monkeypatch):
    monkeypatch.delattr(sys, "last_type", raising=False)
    monkeypatch.delattr(sys, "last_value", raising=False)
    with pytest.raises(UsageError, match="no error to fix"):
        ipython.run_line_magic("kimi", "fix")
