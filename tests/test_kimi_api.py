"""Today's Kimi API, typed as a user types it: web search and thinking, reasoning that goes
back with tool calls, batch lines, file extraction, and the model table (K3.1, ids the table
lacks). Each test asserts on what the simulator received and what the cell showed."""

from __future__ import annotations

import re

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from kimi_magic.core.models import MODELS, TABLE_DATE

WEB_SPEC = {"type": "builtin_function", "function": {"name": "$web_search"}}


def chats(sim) -> list[dict]:
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def shown(out) -> str:
    return "\n".join(o.data.get("text/plain", "") for o in out.outputs) + out.stdout


# -- $web_search needs thinking disabled ------------------------------------------------------

def test_web_on_k26_sends_thinking_disabled_and_says_so(ipython, sim):
    with capture_output() as out:
        ipython.run_cell_magic("kimi", "--web", "Search the web for today's news.")
    bodies = chats(sim)
    assert all(b["thinking"] == {"type": "disabled"} for b in bodies) and len(bodies) == 2
    assert bodies[0]["tools"] == [WEB_SPEC]
    text = shown(out)
    assert ("--web: Kimi's web search needs thinking off, so kimi-k2.6 answers this cell "
            "without thinking") in text
    assert "According to a web search" in text


@pytest.mark.parametrize("model", ["kimi-k3", "kimi-k3.1-pro", "kimi-k2.7-code"])
def test_web_on_an_always_thinking_model_is_refused_before_sending(ipython, sim, model):
    with pytest.raises(UsageError) as err:
        ipython.run_cell_magic("kimi", f"--web -m {model}", "Search the web for news.")
    assert str(err.value) == (f"--web needs thinking disabled ($web_search), but {model} "
                              "always thinks; use -m kimi-k2.6")
    assert chats(sim) == []


def test_web_with_think_is_refused(ipython, sim):
    with pytest.raises(UsageError, match="drop --think"):
        ipython.run_cell_magic("kimi", "--web --think", "Search the web for news.")
    assert chats(sim) == []


# -- --no-think on a model that always thinks -------------------------------------------------

@pytest.mark.parametrize("model", ["kimi-k3", "kimi-k3.1-pro-highspeed"])
def test_no_think_on_an_always_thinking_model_is_one_line(ipython, sim, model):
    with pytest.raises(UsageError) as err:
        ipython.run_cell_magic("kimi", f"-m {model} --no-think", "Hello")
    assert str(err.value) == (f"--no-think: {model} always thinks; use -m kimi-k2.6 to turn "
                              "thinking off")
    assert chats(sim) == []
    with capture_output():
        ipython.run_cell_magic("kimi", "-m kimi-k2.6 --no-think", "Hello")
    assert chats(sim)[-1]["thinking"] == {"type": "disabled"}


def test_no_think_with_map_on_an_always_thinking_model_is_refused(ipython, sim):
    ipython.user_ns["items"] = ["a", "b"]
    with pytest.raises(UsageError, match="always thinks"):
        ipython.run_cell_magic("kimi", "--map items -m kimi-k3 --no-think", "Say {item}")
    assert chats(sim) == []


# -- the model table ---------------------------------------------------------------------------

def test_k31_models_are_listed_with_their_prices(ipython, sim):
    with capture_output() as out:
        ipython.run_line_magic("kimi", "models")
    text = shown(out)
    assert f"prices as of {TABLE_DATE}" in text
    assert "$0.2/$2.0/$10.0" in text and "$0.4/$4.0/$20.0" in text
    pro, fast = MODELS["kimi-k3.1-pro"], MODELS["kimi-k3.1-pro-highspeed"]
    assert (pro.cache_write, pro.cache_write_long) == (2.00, 4.00)
    assert (fast.cache_miss, fast.output) == (4.00, 20.00)
    assert pro.thinking == fast.thinking == "always" and pro.effort and fast.effort


def test_a_k31_turn_sends_effort_and_bills_cache_writes_as_k3_does(ipython, sim):
    with capture_output():
        ipython.run_cell_magic("kimi", "-m kimi-k3.1-pro --effort high",
                               "Project facts. " * 200 + "Hello")
    body = chats(sim)[-1]
    assert body["model"] == "kimi-k3.1-pro" and body["reasoning_effort"] == "high"
    assert "thinking" not in body
    session = ipython.magics_manager.registry["KimiMagic"].session
    turn = session.calls[-1]
    assert turn["cache_write_tokens"] > 0
    pro = MODELS["kimi-k3.1-pro"]
    fresh = turn["prompt_tokens"] - turn["cached_tokens"] - turn["cache_write_tokens"]
    expected = (turn["cache_write_tokens"] * 2.00 + fresh * 2.00 + turn["cached_tokens"] * 0.20
                + turn["completion_tokens"] * 10.00) / 1e6
    assert turn["cost"] == pytest.approx(expected)
    assert pro.cost(turn["prompt_tokens"], turn["cached_tokens"], turn["completion_tokens"],
                    turn["cache_write_tokens"]) == pytest.approx(expected)


NEW = "kimi-k3.2-preview"


def test_a_model_the_table_lacks_takes_the_server_facts_and_shows_unpriced(ipython, sim):
    sim.configure(extra_models={NEW: {"context_length": 2_000_000, "supports_reasoning": True}})
    ipython.run_line_magic("config", f"KimiMagic.model = {NEW!r}")
    # A default of "no thinking" is for kimi-k2.6: a model that always reasons never gets it.
    ipython.run_line_magic("config", "KimiMagic.think = False")
    with capture_output() as out:
        ipython.run_cell_magic("kimi", "", "Hello")
    body = chats(sim)[-1]
    assert body["model"] == NEW and "thinking" not in body and "reasoning_effort" not in body
    line = shown(out)
    assert "unpriced" in line and "$0" not in line and "of 2,000,000" in line
    with capture_output() as out:
        ipython.run_line_magic("kimi", "status")
    status = shown(out)
    assert "unpriced total, last unpriced" in status and "$0" not in status
    assert "window 2,000,000 from the server" in status
    with capture_output() as out:
        ipython.run_line_magic("kimi", "models")
    row = next(r for r in shown(out).splitlines() if NEW in r)
    assert "2,000,000" in row and "always" in row and "unpriced" in row
    with capture_output() as out:
        ipython.run_line_magic("kimi", "widget")
    widget_html = _widget_html(out)
    assert "unpriced" in widget_html and "$0.0000" not in widget_html
    with capture_output() as out:
        ipython.run_line_magic("kimi", "cost")
    cost = shown(out)
    assert re.search(rf"^{NEW} +unpriced", cost, re.M)
    assert re.search(r"^total +unpriced", cost, re.M)
    assert "$0" not in cost
    with capture_output() as out:
        ipython.run_line_magic("kimi", "sessions")
    row = next(r for r in shown(out).splitlines() if NEW in r)
    assert "unpriced" in row and "$0" not in row
    with pytest.raises(UsageError, match="always thinks"):
        ipython.run_cell_magic("kimi", "--no-think", "Hello")


def _widget_html(out) -> str:
    import warnings

    from ipywidgets import Widget

    (view,) = [o for o in out.outputs if "application/vnd.jupyter.widget-view+json" in o.data]
    model_id = view.data["application/vnd.jupyter.widget-view+json"]["model_id"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        dashboard = Widget.widgets[model_id]
    try:
        return dashboard.summary.value
    finally:
        dashboard.close()


# -- reasoning_content and content on assistant tool-call messages ---------------------------

def assistant_calls(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "assistant" and m.get("tool_calls")]


def test_a_web_turn_does_not_break_the_next_thinking_cell(ipython, sim):
    with capture_output():
        ipython.run_cell_magic("kimi", "--web", "Search the web for the Kimi K3 launch.")
    with capture_output() as out:
        ipython.run_cell_magic("kimi", "", "Thanks. What did you find?")
    body = chats(sim)[-1]
    assert "thinking" not in body, "kimi-k2.6 thinks by default"
    (call,) = assistant_calls(body)
    assert call["reasoning_content"] == "" and "content" not in call
    assert shown(out).strip(), "the cell answered: no 400"
    session = ipython.magics_manager.registry["KimiMagic"].session
    stored = next(m.data for m in session.context.history if m.data.get("tool_calls"))
    assert "reasoning_content" not in stored, "stored as received, filled only on the wire"


def test_a_no_think_tools_turn_then_a_default_cell(ipython, sim):
    ipython.run_cell("def word_count(text: str) -> int:\n"
                     "    '''Count the words of a text.'''\n"
                     "    return len(text.split())\n")
    with capture_output():
        ipython.run_line_magic("kimi", "tool word_count")
        ipython.run_cell_magic("kimi", "--tools --no-think", 'Use word_count on "a b c".')
    first = chats(sim)
    assert all(b["thinking"] == {"type": "disabled"} for b in first)
    (call,) = assistant_calls(first[-1])
    assert "content" not in call and "reasoning_content" not in call
    with capture_output():
        ipython.run_cell_magic("kimi", "--out answer", "And how many words is that?")
    (call,) = assistant_calls(chats(sim)[-1])
    assert call["reasoning_content"] == "" and "content" not in call
    assert ipython.user_ns["answer"]


@pytest.mark.parametrize("stream", ["", "--no-stream"])
def test_an_empty_reasoning_content_from_the_server_is_kept(ipython, sim, stream):
    sim.configure(empty_reasoning=True)
    ipython.run_cell("def word_count(text: str) -> int:\n"
                     "    '''Count the words of a text.'''\n"
                     "    return len(text.split())\n")
    with capture_output():
        ipython.run_line_magic("kimi", "tool word_count")
        ipython.run_cell_magic("kimi", f"--tools {stream}", 'Use word_count on "a b".')
    session = ipython.magics_manager.registry["KimiMagic"].session
    stored = next(m.data for m in session.context.history if m.data.get("tool_calls"))
    assert stored["reasoning_content"] == ""
    (call,) = assistant_calls(chats(sim)[-1])
    assert call["reasoning_content"] == ""


def test_the_simulator_refuses_an_empty_content_on_a_tool_call_message(sim):
    import openai

    client = openai.OpenAI(base_url=sim.url, api_key="sk-test")
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    history = [{"role": "user", "content": "time?"},
               {"role": "assistant", "content": "", "reasoning_content": "", "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "c1", "content": "noon"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="kimi-k2.6", messages=history)
    assert err.value.body["message"] == (
        "Invalid request: text content is empty in the message at position 1 with role "
        "'assistant'; omit content on a tool call message")
    del history[1]["content"]
    assert client.chat.completions.create(model="kimi-k2.6", messages=history).choices
    with pytest.raises(openai.BadRequestError, match="must not be empty"):
        client.chat.completions.create(model="kimi-k2.6", messages=[
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},
            {"role": "user", "content": "again"}])


# -- batches and files -------------------------------------------------------------------------

def test_batch_with_sampling_is_refused_before_anything_is_uploaded(ipython, sim):
    ipython.user_ns["items"] = ["a", "b"]
    ipython.user_ns["df"] = [1, 2]
    with pytest.raises(UsageError) as err:
        ipython.run_cell_magic("kimi", "--map items --batch -t 0.3 --pin df", "Say {item}")
    assert str(err.value) == ("--batch: Batch API lines take no sampling parameters "
                              "(temperature); drop them or run without --batch")
    assert sim.requests == [], "nothing uploaded, nothing sent"
    session = ipython.magics_manager.registry["KimiMagic"].session
    assert not session.context.pins, "nothing changed"


def test_the_batch_input_file_is_deleted_once_collected(ipython, sim):
    ipython.user_ns["items"] = ["apples", "pears"]
    with capture_output():
        ipython.run_cell_magic("kimi", "--map items --batch --out results", "Say {item}")
    assert len(ipython.user_ns["results"]) == 2
    uploads = [r for r in sim.requests if r["method"] == "POST" and r["path"] == "/v1/files"]
    deletes = [r for r in sim.requests if r["method"] == "DELETE"]
    assert len(uploads) == 1 and len(deletes) == 1
    purposes = [f["purpose"] for f in sim.files.list()]
    assert "batch" not in purposes and "batch_output" in purposes
    with capture_output() as out:
        ipython.run_line_magic("kimi", "batches collect")
    assert "already recorded" in shown(out), "collecting again still works"


def simple_pdf(text: str) -> bytes:
    stream = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET".encode()
    return (b"%PDF-1.4\n1 0 obj\n<< /Length " + str(len(stream)).encode() + b" >>\nstream\n"
            + stream + b"\nendstream\nendobj\ntrailer\n<< >>\n%%EOF\n")


@pytest.mark.parametrize("answer", ["json", "text"])
def test_file_extract_is_read_as_json_or_plain_text(ipython, sim, tmp_path, monkeypatch,
                                                    answer):
    sim.configure(file_content=answer)
    (tmp_path / "report.pdf").write_bytes(simple_pdf("Quarterly revenue was 42 million"))
    monkeypatch.chdir(tmp_path)
    with capture_output():
        ipython.run_line_magic("kimi", "pin report.pdf")
        ipython.run_cell_magic("kimi", "", "What was the revenue?")
    system = " ".join(str(m["content"]) for m in chats(sim)[-1]["messages"]
                      if m["role"] == "system")
    assert "Quarterly revenue was 42 million" in system
    assert '"content"' not in system and '"file_type"' not in system
    uploads = [r for r in sim.requests if r["method"] == "POST" and r["path"] == "/v1/files"]
    assert len(uploads) == 1
    assert [f for f in sim.files.list() if f["purpose"] == "file-extract"] == [], "deleted"
