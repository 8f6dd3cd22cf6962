"""Today's Kimi API, typed as a user types it: web search and thinking, reasoning that goes
back with tool calls, batch lines, file extraction, and the model table (K3.1, ids the table
lacks). Each test asserts on what the simulator received and what the cell showed."""

from __future__ import annotations

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
    turn = session.turns[-1]
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
