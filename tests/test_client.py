"""The Kimi wire quirks, one test each, over real HTTP to the simulator."""

from __future__ import annotations

import pytest

from kimi_magic import KimiError, Options, Session, Settings, Store
from kimi_magic.core.models import RETIRED_EXAMPLES, resolve
from kimi_magic.notebook.display import status_line
from kimi_magic.simulator import Simulator
from kimi_magic.wire.events import ContentDelta, ReasoningDelta
from kimi_magic.wire.request import build_request


@pytest.fixture(scope="module")
def sim():
    with Simulator(port=0) as s:
        yield s


@pytest.fixture()
def session(sim):
    sim.configure(usage="top", cached_field="top", summary_fidelity="faithful")
    sim.clear_requests()
    return Session("t", Settings(base_url=sim.url, api_key="sk-test", retry_base=0.001),
                   store=Store(":memory:"))


def last_body(sim):
    return chats(sim)[-1]["body"]


def chats(sim):
    return [r for r in sim.requests if r["path"].endswith("/chat/completions")]


def test_default_request_has_kimi_shape(session, sim):
    session.ask("Hello there")
    body = last_body(sim)
    assert body["model"] == "kimi-k2.6"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # Always an explicit cap, never the deprecated field, never sampling parameters.
    assert 0 < body["max_completion_tokens"] <= 262_144
    assert "max_tokens" not in body
    for name in ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty"):
        assert name not in body


def test_output_cap_is_clamped_so_input_plus_output_fit_the_window(session, sim):
    session.settings.model_overrides = {"kimi-k2.6": {"context_length": 3000}}
    session.ask("x " * 400, options=Options(max_completion_tokens=100_000))
    body = last_body(sim)
    assert body["max_completion_tokens"] < 3000


def test_temperature_sent_only_when_given(session, sim):
    session.ask("one", options=Options(sampling={"temperature": 0.3, "top_p": None}))
    assert last_body(sim)["temperature"] == 0.3
    assert "top_p" not in last_body(sim)


@pytest.mark.parametrize("usage,cached", [("top", "top"), ("choice", "nested"),
                                          ("top", "nested"), ("choice", "top")])
def test_usage_and_cached_tokens_read_wherever_the_server_puts_them(session, sim, usage, cached):
    sim.configure(usage=usage, cached_field=cached)
    long = "The quarterly report lists revenue by region. " * 80
    session.ask(long)
    turn = session.ask("And what about costs?")
    assert turn.usage.exact
    assert turn.usage.prompt_tokens > 256
    assert turn.usage.cached_tokens > 0, "second turn shares the first turn's prefix"
    assert "exact" in status_line(turn)


def test_stream_without_usage_falls_back_to_marked_estimates(session, sim):
    sim.configure(usage="none")
    turn = session.ask("How big is the context?")
    assert not turn.usage.exact
    assert turn.usage.prompt_tokens > 0 and turn.usage.completion_tokens > 0
    assert "estimated" in status_line(turn) and "~" in status_line(turn)
    assert not session.status()["exact"]


def test_reasoning_streams_separately_and_is_sent_back_unchanged(session, sim):
    seen = []
    t1 = session.ask("Remember: the deploy key id is KEY-7781.",
                     on_delta=lambda event: seen.append(type(event)))
    assert t1.reasoning
    assert seen.index(ReasoningDelta) < seen.index(ContentDelta), "reasoning arrives first"
    session.ask("Which deploy key id did I give you?")
    sent = last_body(sim)["messages"]
    assistant = [m for m in sent if m["role"] == "assistant"][0]
    assert assistant["reasoning_content"] == t1.reasoning
    assert assistant["content"] == t1.text


def test_no_think_disables_thinking_on_k26(session, sim):
    turn = session.ask("Quick answer please", options=Options(think=False))
    assert last_body(sim)["thinking"] == {"type": "disabled"}
    assert turn.reasoning == ""


def test_effort_is_sent_to_k3(session, sim):
    session.ask("Think hard", model="kimi-k3", options=Options(effort="high"))
    body = last_body(sim)
    assert body["model"] == "kimi-k3" and body["reasoning_effort"] == "high"
    assert "thinking" not in body


def test_partial_mode_joins_prefix_and_never_keeps_the_flag(session, sim):
    turn = session.ask("Finish the sentence", options=Options(prefix="The answer is"))
    sent = last_body(sim)["messages"][-1]
    assert sent == {"role": "assistant", "content": "The answer is", "partial": True}
    assert turn.text.startswith("The answer is")
    stored = session.context.history[-1].data
    assert "partial" not in stored and stored["content"] == turn.text
    session.ask("Thanks")
    assert all("partial" not in m for m in last_body(sim)["messages"])


def test_json_mode_and_never_with_partial(session, sim):
    import json

    turn = session.ask("Give me a JSON object", options=Options(json=True))
    assert last_body(sim)["response_format"] == {"type": "json_object"}
    assert isinstance(json.loads(turn.text), dict)
    before = len(chats(sim))
    with pytest.raises(KimiError, match="partial"):
        session.ask("no", options=Options(json=True, prefix="{"))
    assert len(chats(sim)) == before


def test_non_streamed_reply_keeps_reasoning(session, sim):
    turn = session.ask("No streaming", options=Options(stream=False))
    assert "stream" not in last_body(sim)
    assert turn.reasoning and turn.text
    assert session.context.history[-1].data["reasoning_content"] == turn.reasoning


@pytest.mark.parametrize("kind,retried", [("rate_limit", True), ("overloaded", True),
                                          ("server_error", True), ("unavailable", True),
                                          ("quota_429", False), ("quota_403", False),
                                          ("auth", False)])
def test_retries_classified_by_error_type(session, sim, kind, retried):
    sim.fail(kind, times=1)
    before = len(chats(sim))
    if retried:
        session.ask("try again")
        assert len(chats(sim)) - before == 2
    else:
        with pytest.raises(KimiError) as info:
            session.ask("do not retry")
        assert len(chats(sim)) - before == 1
        assert "\n" not in str(info.value)


def test_retired_model_is_refused_before_sending(session, sim):
    before = len(chats(sim))
    with pytest.raises(Exception, match="retired"):
        session.ask("hi", model=RETIRED_EXAMPLES[1])  # a retired id: refused locally
    assert len(chats(sim)) == before


def test_llama_cpp_dialect_sends_max_tokens():
    body = build_request(resolve("local"), [{"role": "user", "content": "hi"}],
                         Options(max_completion_tokens=20), 10, server="llama.cpp")
    assert body["max_tokens"] == 20 and "max_completion_tokens" not in body


def test_unknown_server_window_falls_back_and_is_marked(sim):
    sim.configure(context_length_in_models=False)
    try:
        s = Session("w", Settings(base_url=sim.url, api_key="sk-test"), store=Store(":memory:"))
        st = s.status()
        assert st["window"] == 262_144 and st["window_source"] == "table"
    finally:
        sim.configure(context_length_in_models=True)
