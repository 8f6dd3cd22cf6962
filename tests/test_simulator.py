"""The local Kimi simulator, driven through the real openai SDK and raw HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import openai
import pytest

from kimi_magic.core.models import MODELS, RETIRED_EXAMPLES, is_retired
from kimi_magic.simulator import FAILURE_KINDS, Simulator, count_prompt_tokens

K26, K3 = "kimi-k2.6", "kimi-k3"
ALWAYS_THINKING = [m.id for m in MODELS.values() if m.thinking == "always"]
# About 400 tokens: enough for the prompt cache (which ignores prefixes of 256 or less).
LONG_FACTS = " ".join(f"Fact {i}: the service on port {8000 + i} runs build {i * 7}."
                      for i in range(40))


@pytest.fixture
def sim():
    with Simulator() as s:
        yield s


@pytest.fixture
def client(sim):
    return openai.OpenAI(base_url=sim.url, api_key="sk-test", max_retries=0)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def raw(sim: Simulator, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request without the SDK, so status, headers and exact bytes are visible."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    data = body if isinstance(body, bytes) else (
        json.dumps(body).encode() if body is not None else None)
    all_headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    all_headers.update(headers or {})
    conn.request(method, path, data, all_headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, payload


def sse(payload: bytes) -> list[str]:
    """The ``data:`` values of an SSE body."""
    return [block[6:] for block in payload.decode().split("\n\n") if block.startswith("data: ")]


def stream_chunks(sim: Simulator, body: dict[str, Any]) -> list[dict[str, Any]]:
    status, headers, payload = raw(sim, "POST", "/v1/chat/completions", {**body, "stream": True})
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    data = sse(payload)
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def error_of(payload: bytes) -> dict[str, str]:
    body = json.loads(payload)
    assert set(body) == {"error"}
    return body["error"]


# --- models -------------------------------------------------------------------------------

def test_models_list_comes_from_the_model_table(client):
    data = {m.id: m for m in client.models.list().data}
    assert list(data) == list(MODELS)
    for model_id, model in MODELS.items():
        extra = data[model_id].model_extra
        assert data[model_id].owned_by == "moonshot"
        assert extra["context_length"] == model.context_length
        assert extra["supports_reasoning"] is (model.thinking != "never")
        assert extra["supports_image_in"] is True


def test_models_can_hide_context_length_and_be_restricted(sim, client):
    sim.configure(context_length_in_models=False, models=[K26])
    (only,) = client.models.list().data
    assert only.id == K26 and "context_length" not in only.model_extra
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=K3, messages=[user("hi")])


def test_models_the_table_lacks_are_served_as_configured(sim, client):
    sim.configure(extra_models={"kimi-k3.2-preview": {"context_length": 2_000_000,
                                                      "supports_reasoning": True}})
    listed = {m.id: m.model_extra for m in client.models.list().data}
    assert list(listed)[-1] == "kimi-k3.2-preview"
    assert listed["kimi-k3.2-preview"]["context_length"] == 2_000_000
    assert listed["kimi-k3.2-preview"]["supports_reasoning"] is True
    reply = client.chat.completions.create(model="kimi-k3.2-preview", messages=[user("hi")])
    assert reply.choices[0].message.model_extra["reasoning_content"]
    with pytest.raises(ValueError):
        sim.configure(extra_models={"x": {"context_length": "big"}})


def test_new_k31_models_always_think_and_bill_cache_writes(client):
    for model_id in ("kimi-k3.1-pro", "kimi-k3.1-pro-highspeed"):
        reply = client.chat.completions.create(model=model_id, messages=[user("hi")],
                                               reasoning_effort="low")
        assert reply.choices[0].message.model_extra["reasoning_content"]
        assert "cache_write_tokens" in reply.usage.model_extra
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=model_id, messages=[user("hi")],
                                           temperature=0.3)


def test_an_empty_reasoning_content_can_be_sent(sim, client):
    sim.configure(empty_reasoning=True)
    reply = client.chat.completions.create(model=K26, messages=[user("hi")])
    assert reply.choices[0].message.model_extra["reasoning_content"] == ""
    chunks = stream_chunks(sim, {"model": K26, "messages": [user("hi")]})
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert {"reasoning_content": ""} in deltas
    off = client.chat.completions.create(model=K26, messages=[user("hi")],
                                         extra_body={"thinking": {"type": "disabled"}})
    assert "reasoning_content" not in (off.choices[0].message.model_extra or {})


@pytest.mark.parametrize("model_id", [
    *RETIRED_EXAMPLES,  # retired ids: 404
    "no-such-model"])
def test_retired_and_unknown_models_are_404(sim, model_id):
    assert is_retired(model_id) or model_id not in MODELS
    status, _, payload = raw(sim, "POST", "/v1/chat/completions",
                             {"model": model_id, "messages": [user("hi")]})
    assert status == 404 and error_of(payload)["type"] == "resource_not_found_error"


# --- plain and streamed replies -----------------------------------------------------------

def test_plain_completion(client):
    reply = client.chat.completions.create(
        model=K26, messages=[user("Hello there, this is a test")],
        extra_body={"thinking": {"type": "disabled"}})
    message = reply.choices[0].message
    assert message.content == 'Noted. (simulated kimi reply #1 to: "Hello there, this is a test")'
    assert reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion"
    assert reply.usage.prompt_tokens == count_prompt_tokens([user("Hello there, this is a test")])
    assert reply.usage.model_extra["cached_tokens"] == 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_usage_at_top_level(sim, include_usage):
    body = {"model": K26, "messages": [user("hi")], "stream_options": {
        "include_usage": include_usage}}
    chunks = stream_chunks(sim, body)
    assert [c for c in chunks[:-1] if "usage" in c] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == count_prompt_tokens([user("hi")])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    if include_usage:  # OpenAI's shape: an extra chunk with no choices
        assert chunks[-1]["choices"] == []


def test_stream_usage_inside_the_choice(sim):
    sim.configure(usage="choice")
    chunks = stream_chunks(sim, {"model": K26, "messages": [user("hi")]})
    last = chunks[-1]
    assert "usage" not in last
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["choices"][0]["usage"]["completion_tokens"] > 0


def test_usage_none_sends_no_usage_anywhere(sim, client):
    sim.configure(usage="none")
    chunks = stream_chunks(sim, {"model": K26, "messages": [user("hi")],
                                 "stream_options": {"include_usage": True}})
    assert not any("usage" in c or any("usage" in ch for ch in c["choices"]) for c in chunks)
    assert client.chat.completions.create(model=K26, messages=[user("hi")]).usage is None


def test_sdk_stream_sees_usage(client):
    stream = client.chat.completions.create(model=K26, messages=[user("hi")], stream=True)
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Noted.")


def test_reasoning_streams_before_content(sim):
    chunks = stream_chunks(sim, {"model": K3, "messages": [user("Explain caching")]})
    kinds = [k for c in chunks for k in c["choices"][0]["delta"] if k != "role" and
             c["choices"][0]["delta"][k]]
    assert kinds[0] == "reasoning_content" and "content" in kinds
    assert kinds.index("content") > max(i for i, k in enumerate(kinds) if k == "reasoning_content")
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] > 0


def test_thinking_default_and_disabled(client):
    on = client.chat.completions.create(model=K26, messages=[user("hi")])
    assert on.choices[0].message.model_extra["reasoning_content"].startswith("The user asks")
    off = client.chat.completions.create(model=K26, messages=[user("hi")],
                                         extra_body={"thinking": {"type": "disabled"}})
    assert "reasoning_content" not in (off.choices[0].message.model_extra or {})
    assert off.usage.completion_tokens < on.usage.completion_tokens


def test_reasoning_effort_only_on_models_with_effort(client):
    lengths = []
    for effort in ("low", "high", "max"):
        reply = client.chat.completions.create(model=K3, messages=[user("hi")],
                                               reasoning_effort=effort)
        lengths.append(len(reply.choices[0].message.model_extra["reasoning_content"]))
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=K26, messages=[user("hi")], reasoning_effort="low")


@pytest.mark.parametrize("model_id", ALWAYS_THINKING)
def test_sampling_knobs_rejected_by_always_thinking_models(sim, client, model_id):
    for knob, value in (("temperature", 0.3), ("top_p", 0.9), ("n", 1),
                        ("presence_penalty", 0.1), ("frequency_penalty", 0.1)):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=model_id, messages=[user("hi")],
                                           **{knob: value})
        assert err.value.body["type"] == "invalid_request_error"
    client.chat.completions.create(model=K26, messages=[user("hi")], temperature=0.3)
    sim.configure(reject_sampling=False)
    client.chat.completions.create(model=model_id, messages=[user("hi")], temperature=0.3)


# --- deterministic content ----------------------------------------------------------------

def test_memory_reply_quotes_the_matching_earlier_sentence(client):
    messages = [
        {"role": "system", "content": "You are helpful. The project codename is BLUEFIN."},
        user("My cat is named Miso. The deadline is 14 March."),
        {"role": "assistant", "content": "Noted."},
        user("What is the name of my cat?"),
    ]
    first = client.chat.completions.create(model=K26, messages=messages)
    content = first.choices[0].message.content
    assert content.startswith('You told me earlier: "My cat is named Miso."')
    again = client.chat.completions.create(model=K26, messages=messages)
    assert again.choices[0].message.content == content
    messages[-1] = user("Remind me of the project codename")
    reply = client.chat.completions.create(model=K26, messages=messages)
    assert "BLUEFIN" in reply.choices[0].message.content


def test_generic_reply_counts_user_turns(client):
    messages = [user("one"), {"role": "assistant", "content": "ok"}, user("two things to do")]
    reply = client.chat.completions.create(model=K26, messages=messages)
    assert reply.choices[0].message.content == (
        'Noted. (simulated kimi reply #2 to: "two things to do")')


def test_partial_mode_continues_the_prefix(client):
    prefix = "The answer is"
    reply = client.chat.completions.create(model=K26, messages=[
        user("What is six times seven?"),
        {"role": "assistant", "content": prefix, "partial": True}])
    content = reply.choices[0].message.content
    assert content.startswith(" ") and not content.startswith(prefix)


def test_partial_with_json_mode_is_rejected(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=K26, response_format={"type": "json_object"},
            messages=[user("x"), {"role": "assistant", "content": "{", "partial": True}])


def test_json_mode_returns_a_json_object(client):
    reply = client.chat.completions.create(
        model=K26, response_format={"type": "json_object"},
        messages=[user("Give me 3 colours and 2 shapes as JSON")])
    data = json.loads(reply.choices[0].message.content)
    assert isinstance(data, dict) and data["numbers"] == [3, 2]


def test_max_completion_tokens_truncates(client):
    reply = client.chat.completions.create(model=K26, messages=[user("hi")],
                                           max_completion_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens <= 5
    assert reply.choices[0].message.content == ""  # the budget went to reasoning first


def test_summary_has_sections_and_keeps_facts(client):
    history = [user("We are migrating the billing service. The database runs on port 5432."),
               {"role": "assistant", "content": "We decided to use Postgres 16."},
               user("I got error E1234 in billing/api.py and fixed it by pinning psycopg 3.1.")]
    system = {"role": "system", "content": "Summarise the conversation for later turns."}
    reply = client.chat.completions.create(model=K26, messages=[system, *history])
    summary = reply.choices[0].message.content
    for section in ("## Current goal", "## Facts and figures", "## Decisions",
                    "## Errors and fixes", "## Code state", "## Open items"):
        assert section in summary
    for fact in ("5432", "E1234", "billing/api.py", "3.1", "16"):
        assert fact in summary


def test_lossy_summary_loses_facts(sim, client):
    sim.configure(summary_fidelity="lossy")
    messages = [user("Port 5432, build 881, file main.py, ticket 77 and job 4012 matter."),
                user("Please summarize.")]
    summary = client.chat.completions.create(model=K26, messages=messages)
    content = summary.choices[0].message.content
    assert not all(f in content for f in ("5432", "881", "main.py", "77", "4012"))


# --- tools --------------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"},
        "metric": {"type": "boolean"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def echo(message: Any) -> dict[str, Any]:
    """A reply's message as a client sends it back: Kimi refuses the empty ``content`` its
    tool-call replies carry, so it is omitted (as Moonshot's own client does)."""
    data = message.model_dump(exclude_none=True)
    if data.get("tool_calls") and not data.get("content"):
        data.pop("content", None)
    return data


def test_tool_call_round_trip(client):
    messages: list[dict[str, Any]] = [
        user('Call get_time, then get_weather for "Paris" over the next 3 days.')]
    first = client.chat.completions.create(model=K26, messages=messages, tools=[WEATHER, CLOCK])
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_time", "{}")
    messages += [echo(first.choices[0].message),
                 {"role": "tool", "tool_call_id": call.id, "content": "12:00"}]
    second = client.chat.completions.create(model=K26, messages=messages,
                                            tools=[WEATHER, CLOCK])
    (call2,) = second.choices[0].message.tool_calls
    assert call2.id == "call_2" and call2.function.name == "get_weather"
    assert json.loads(call2.function.arguments) == {"city": "Paris", "days": 3, "metric": True}
    messages += [echo(second.choices[0].message),
                 {"role": "tool", "tool_call_id": call2.id, "content": "sunny"}]
    final = client.chat.completions.create(model=K26, messages=messages, tools=[WEATHER, CLOCK])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == (
        "Tool results: get_time -> 12:00; get_weather -> sunny")


def test_tool_calls_stream_as_deltas(sim):
    chunks = stream_chunks(sim, {"model": K26, "tools": [WEATHER],
                                 "messages": [user('get_weather for "Oslo"')]})
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
             if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert calls[0]["id"] == "call_1" and calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments)["city"] == "Oslo"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_thinking_models_need_reasoning_sent_back_with_tool_calls(client):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_time", "arguments": "{}"}}
    history = [user("get_time please"), {"role": "assistant", "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "call_1", "content": "noon"}]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=K3, messages=history, tools=[CLOCK])
    history[1]["reasoning_content"] = "I need the time."
    reply = client.chat.completions.create(model=K3, messages=history, tools=[CLOCK])
    assert reply.choices[0].message.content == "Tool results: get_time -> noon"
    # Without thinking the reasoning may be missing; kimi-k2.6 thinking by default may not.
    unreasoned = [*history[:1], {**history[1], "reasoning_content": None}, history[2]]
    client.chat.completions.create(model=K26, messages=unreasoned, tools=[CLOCK],
                                   extra_body={"thinking": {"type": "disabled"}})


@pytest.mark.parametrize("model", [K26, K3])
def test_a_missing_reasoning_content_is_refused_whenever_the_request_thinks(client, model):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_time", "arguments": "{}"}}
    history = [user("get_time please"), {"role": "assistant", "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "call_1", "content": "noon"}, user("thanks")]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=history, tools=[CLOCK])
    assert err.value.status_code == 400
    assert err.value.body["message"] == ("thinking is enabled but reasoning_content is missing "
                                         "in assistant tool call message at index 1")
    # An empty reasoning_content (a turn made with thinking off) is accepted as it is.
    history[1]["reasoning_content"] = ""
    reply = client.chat.completions.create(model=model, messages=history, tools=[CLOCK])
    assert reply.choices[0].message.content


@pytest.mark.parametrize("tools, choice", [
    ([{"type": "function", "function": {"name": "1bad"}}], None),
    ([{"type": "function", "function": {"name": "ok_name", "parameters": {"type": "array"}}}],
     None),
    ([CLOCK] * 129, None),
    ([CLOCK], "required"),
])
def test_tool_validation(client, tools, choice):
    extra = {"tool_choice": choice} if choice else {}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=K26, messages=[user("hi")], tools=tools, **extra)


def test_required_tool_choice_is_allowed_on_kimi_k3(client):
    reply = client.chat.completions.create(model=K3, messages=[user("hi")], tools=[CLOCK],
                                           tool_choice="required")
    assert reply.choices[0].message.tool_calls[0].function.name == "get_time"


WEB = [{"type": "builtin_function", "function": {"name": "$web_search"}}]
NO_THINKING = {"thinking": {"type": "disabled"}}


def test_builtin_web_search(client):
    tools = WEB
    messages: list[dict[str, Any]] = [user("Search the web for the Kimi release date")]
    first = client.chat.completions.create(model=K26, messages=messages, tools=tools,
                                           extra_body=NO_THINKING)
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "$web_search"
    arguments = json.loads(call.function.arguments)
    assert arguments["search_result"]["search_id"] and arguments["usage"]["total_tokens"] > 0
    messages += [echo(first.choices[0].message),
                 {"role": "tool", "tool_call_id": call.id, "name": "$web_search",
                  "content": call.function.arguments}]
    final = client.chat.completions.create(model=K26, messages=messages, tools=tools,
                                           extra_body=NO_THINKING)
    assert final.choices[0].message.content.startswith("According to a web search:")


@pytest.mark.parametrize("model, message", [
    (K26, '$web_search requires thinking to be disabled: send "thinking": {"type": "disabled"}'),
    (K3, "$web_search requires thinking to be disabled, and kimi-k3 always thinks"),
    ("kimi-k3.1-pro", "$web_search requires thinking to be disabled, and kimi-k3.1-pro always "
                      "thinks"),
])
def test_web_search_is_refused_while_thinking(client, model, message):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, tools=WEB,
                                       messages=[user("Search the web for Kimi")])
    assert err.value.status_code == 400 and err.value.body["message"] == message


@pytest.mark.parametrize("model", [K3, "kimi-k3.1-pro", "kimi-k2.7-code"])
def test_thinking_cannot_be_disabled_on_a_model_that_always_thinks(client, model):
    # Moonshot answers 400 rather than reasoning anyway, so a client that sends it fails
    # here as it would against Kimi.
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=[user("hi")],
                                       extra_body=NO_THINKING)
    assert err.value.status_code == 400
    assert err.value.body["message"] == f"thinking cannot be disabled for {model}: it always thinks"


# --- prompt cache -------------------------------------------------------------------------

def cached(reply: Any) -> int:
    return reply.usage.model_extra["cached_tokens"]


def test_cache_hits_after_a_repeat_and_counts_the_shared_prefix(client):
    messages = [{"role": "system", "content": LONG_FACTS}, user("hello")]
    first = client.chat.completions.create(model=K26, messages=messages)
    assert first.usage.prompt_tokens > 256 and cached(first) == 0
    second = client.chat.completions.create(model=K26, messages=messages)
    assert cached(second) == second.usage.prompt_tokens
    grown = [*messages, {"role": "assistant", "content": "hi"}, user("more")]
    third = client.chat.completions.create(model=K26, messages=grown)
    assert cached(third) == count_prompt_tokens(messages)
    short = client.chat.completions.create(model=K26, messages=[user("tiny"), user("prompt")])
    again = client.chat.completions.create(model=K26, messages=[user("tiny"), user("prompt")])
    assert cached(short) == cached(again) == 0  # 256 tokens or less never count


def test_cache_is_per_api_key(sim, client):
    messages = [{"role": "system", "content": LONG_FACTS}, user("hello")]
    client.chat.completions.create(model=K26, messages=messages)
    other = openai.OpenAI(base_url=sim.url, api_key="sk-other", max_retries=0)
    assert cached(other.chat.completions.create(model=K26, messages=messages)) == 0


def test_cache_expires_and_hits_renew(sim, client):
    messages = [{"role": "system", "content": LONG_FACTS}, user("hello")]
    client.chat.completions.create(model=K26, messages=messages)
    sim.advance(200)
    assert cached(client.chat.completions.create(model=K26, messages=messages)) > 0
    sim.advance(200)  # 400 s after creation, but only 200 s after the renewing hit
    assert cached(client.chat.completions.create(model=K26, messages=messages)) > 0
    sim.advance(301)
    assert cached(client.chat.completions.create(model=K26, messages=messages)) == 0


def test_long_ttl_with_prompt_cache_options(sim, client):
    messages = [{"role": "system", "content": LONG_FACTS}, user("hello")]
    options = {"prompt_cache_options": {"ttl": "1h"}}
    client.chat.completions.create(model=K26, messages=messages, extra_body=options)
    sim.advance(1800)
    assert cached(client.chat.completions.create(model=K26, messages=messages)) > 0
    sim.advance(3601)
    assert cached(client.chat.completions.create(model=K26, messages=messages)) == 0


def test_cache_write_tokens_and_cached_field_positions(sim, client):
    messages = [{"role": "system", "content": LONG_FACTS}, user("hello")]
    first = client.chat.completions.create(model=K3, messages=messages)
    usage = first.usage.model_extra
    assert usage["cache_write_tokens"] == first.usage.prompt_tokens
    details = first.usage.prompt_tokens_details.model_dump()
    assert details["cache_write_tokens"] == first.usage.prompt_tokens
    sim.configure(cached_field="nested")
    second = client.chat.completions.create(model=K3, messages=messages)
    assert "cached_tokens" not in second.usage.model_extra
    assert second.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.model_dump()["cache_write_tokens"] == 0
    sim.configure(cached_field="none")
    third = client.chat.completions.create(model=K26, messages=messages)
    assert third.usage.prompt_tokens_details is None
    assert "cached_tokens" not in third.usage.model_extra


# --- windows and token counting -----------------------------------------------------------

def test_window_limits(client):
    window = MODELS[K26].context_length
    huge = "x" * (window * 4)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=K26, messages=[user(huge)])
    assert err.value.body["message"] == "Input token length too long"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=K26, messages=[user("x" * (window * 2))],
                                       max_completion_tokens=window // 2 + 10)
    assert err.value.body["message"] == f"Your request exceeded model token limit: {window}"


def test_token_estimate_matches_usage(sim, client):
    messages = [user("hello world"), {"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    status, _, payload = raw(sim, "POST", "/v1/tokenizers/estimate-token-count",
                             {"model": K26, "messages": messages})
    body = json.loads(payload)
    assert status == 200 and body["code"] == 0 and body["status"] is True
    reply = client.chat.completions.create(model=K26, messages=messages)
    assert body["data"]["total_tokens"] == reply.usage.prompt_tokens
    # ceil(11/4)+4, then ceil(4/4)+4+256 for the text part and the image
    assert reply.usage.prompt_tokens == 7 + 261


def test_token_counting_is_fast_on_a_megabyte():
    messages = [user("word " * 2000) for _ in range(100)]
    start = time.perf_counter()
    total = count_prompt_tokens(messages)
    assert time.perf_counter() - start < 0.05
    assert total == 100 * (10_000 // 4 + 4)


# --- failures -----------------------------------------------------------------------------

HTTP_KINDS = {
    "auth": (401, "invalid_authentication_error", openai.AuthenticationError),
    "permission": (403, "permission_denied_error", openai.PermissionDeniedError),
    "quota_403": (403, "exceeded_current_quota_error", openai.PermissionDeniedError),
    "quota_429": (429, "exceeded_current_quota_error", openai.RateLimitError),
    "not_found": (404, "resource_not_found_error", openai.NotFoundError),
    "rate_limit": (429, "rate_limit_reached_error", openai.RateLimitError),
    "overloaded": (429, "engine_overloaded_error", openai.RateLimitError),
    "server_error": (500, "server_error", openai.InternalServerError),
    "unavailable": (503, "server_error", openai.InternalServerError),
    "token_limit_input": (400, "invalid_request_error", openai.BadRequestError),
    "token_limit_total": (400, "invalid_request_error", openai.BadRequestError),
    "content_filter": (400, "content_filter", openai.BadRequestError),
}


def test_every_failure_kind_is_covered():
    assert set(HTTP_KINDS) | {"stream_cut", "no_finish", "malformed_chunk", "hang"} == set(
        FAILURE_KINDS)


@pytest.mark.parametrize("kind", sorted(HTTP_KINDS))
def test_http_failures(sim, client, kind):
    status, type_, exc = HTTP_KINDS[kind]
    sim.fail(kind)
    with pytest.raises(exc) as err:
        client.chat.completions.create(model=K26, messages=[user("hi")])
    assert err.value.status_code == status and err.value.body["type"] == type_
    if kind == "token_limit_total":
        expected = f"Your request exceeded model token limit: {MODELS[K26].context_length}"
        assert err.value.body["message"] == expected
    sim.fail(kind)  # streamed requests fail the same way, before any event
    status2, _, payload = raw(sim, "POST", "/v1/chat/completions",
                              {"model": K26, "messages": [user("hi")], "stream": True})
    assert status2 == status and error_of(payload)["type"] == type_
    client.chat.completions.create(model=K26, messages=[user("hi")])  # used up


@pytest.mark.parametrize("kind", ["rate_limit", "overloaded"])
def test_retry_after_header_and_times(sim, kind):
    sim.fail(kind, times=2, retry_after=7)
    for _ in range(2):
        status, headers, _ = raw(sim, "POST", "/v1/chat/completions",
                                 {"model": K26, "messages": [user("hi")]})
        assert status == 429 and headers["retry-after"] == "7"
    assert raw(sim, "POST", "/v1/chat/completions",
               {"model": K26, "messages": [user("hi")]})[0] == 200


def test_stream_cut_drops_the_connection(sim, client):
    sim.fail("stream_cut")
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
                model=K26, messages=[user("a fairly long question to answer")], stream=True):
            received.append(chunk)
    assert received  # some deltas arrived before the cut
    assert client.chat.completions.create(model=K26, messages=[user("hi")]).choices


def test_no_finish_stream_ends_cleanly_without_finish_reason(sim):
    sim.fail("no_finish")
    chunks = stream_chunks(sim, {"model": K26, "messages": [user("hi")]})
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks if c["choices"])
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_malformed_chunk(sim):
    sim.fail("malformed_chunk")
    _, _, payload = raw(sim, "POST", "/v1/chat/completions",
                        {"model": K26, "messages": [user("hello there friend")], "stream": True})
    data = sse(payload)
    bad = []
    for item in data[:-1]:
        try:
            json.loads(item)
        except ValueError:
            bad.append(item)
    assert len(bad) == 1 and data[-1] == "[DONE]"


def test_hang_times_out_the_client_without_blocking_others(sim, client):
    sim.fail("hang", seconds=30)
    impatient = openai.OpenAI(base_url=sim.url, api_key="sk-test", max_retries=0, timeout=0.3)
    start = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model=K26, messages=[user("hi")])
    assert time.perf_counter() - start < 2
    assert client.chat.completions.create(model=K26, messages=[user("hi")]).choices


def test_stop_is_not_held_up_by_a_hanging_request():
    sim = Simulator().start()
    sim.fail("hang", seconds=30)
    patient = openai.OpenAI(base_url=sim.url, api_key="k", max_retries=0, timeout=10)
    thread = threading.Thread(target=lambda: _swallow(
        lambda: patient.chat.completions.create(model=K26, messages=[user("hi")])))
    thread.start()
    time.sleep(0.2)
    start = time.perf_counter()
    sim.stop()
    thread.join(5)
    assert time.perf_counter() - start < 2 and not thread.is_alive()


def _swallow(call: Any) -> None:
    try:
        call()
    except openai.OpenAIError:
        pass


def test_bad_failure_kind_is_refused_and_pending_failures_can_be_dropped(sim, client):
    with pytest.raises(ValueError):
        sim.fail("meteor")
    sim.fail("server_error", times=3)
    sim.clear_failures()
    assert client.chat.completions.create(model=K26, messages=[user("hi")]).choices


# --- auth and recording -------------------------------------------------------------------

def test_api_keys_are_enforced_and_never_recorded():
    with Simulator(api_keys={"sk-good"}) as sim:
        bad = openai.OpenAI(base_url=sim.url, api_key="sk-bad", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.models.list()
        assert err.value.body["type"] == "invalid_authentication_error"
        good = openai.OpenAI(base_url=sim.url, api_key="sk-good", max_retries=0)
        good.chat.completions.create(model=K26, messages=[user("hi")])
        assert sim.requests[-1]["body"]["messages"] == [user("hi")]
        assert set(sim.requests[-1]) == {"method", "path", "body", "time"}
        assert "sk-good" not in json.dumps(sim.requests)


def test_recording_can_be_turned_off_and_is_bounded(sim, client):
    sim.configure(record=False)
    client.chat.completions.create(model=K26, messages=[user("hi")])
    assert sim.requests[-1]["body"] is None
    sim.clear_requests()
    assert sim.requests == []
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    for _ in range(510):
        conn.request("GET", "/v1/models")
        conn.getresponse().read()
    assert len(sim.requests) == 500


def test_tps_paces_the_stream(sim, client):
    sim.configure(tps=200)
    start = time.perf_counter()
    arrivals = []
    for chunk in client.chat.completions.create(
            model=K26, messages=[user("pace this reply please")], stream=True,
            extra_body={"thinking": {"type": "disabled"}}):
        arrivals.append(time.perf_counter() - start)
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    assert arrivals[-1] >= 0.8 * tokens / 200
    assert arrivals[0] < arrivals[-1] / 2  # deltas arrive over time, not all at the end


def test_http_controls(sim, client):
    messages = [{"role": "system", "content": LONG_FACTS}, user("hello")]
    client.chat.completions.create(model=K26, messages=messages)
    before = sim.clock.now()
    status, _, payload = raw(sim, "POST", "/_sim/advance", {"seconds": 400})
    assert status == 200 and json.loads(payload)["now"] >= before + 400
    assert cached(client.chat.completions.create(model=K26, messages=messages)) == 0
    assert raw(sim, "POST", "/_sim/fail", {"kind": "server_error", "times": 1})[0] == 200
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=K26, messages=[user("hi")])
    status, _, payload = raw(sim, "POST", "/_sim/configure", {"usage": "choice"})
    assert status == 200 and json.loads(payload)["usage"] == "choice" == sim.config.usage
    assert raw(sim, "POST", "/_sim/configure", {"usage": "sideways"})[0] == 400
    status, _, payload = raw(sim, "GET", "/_sim/requests")
    assert [r["path"] for r in json.loads(payload)][-1] == "/v1/chat/completions"
    raw(sim, "POST", "/_sim/clear", {})
    assert sim.requests == []


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        Simulator(usage="sideways")
    with pytest.raises(ValueError):
        Simulator(colour="blue")


# --- files and batches --------------------------------------------------------------------

def _pdf(lines: list[str]) -> bytes:
    """A minimal one-page PDF with an uncompressed content stream showing ``lines``."""
    escaped = [line.replace("(", "\\(").replace(")", "\\)") for line in lines]
    ops = ("BT /F1 12 Tf 72 720 Td " + f"({escaped[0]}) Tj"
           + "".join(f" T* [({line[:3]}) -20 ({line[3:]})] TJ" for line in escaped[1:]) + " ET")
    stream = ops.encode()
    return (b"%%PDF-1.4\n1 0 obj << /Length %d >>\nstream\n%s\nendstream\nendobj\n%%%%EOF\n"
            % (len(stream), stream))


def test_files_upload_extract_list_delete(sim, client):
    text_file = client.files.create(file=("notes.txt", b"hello \xff world"),
                                    purpose="file-extract")
    assert text_file.id.startswith("file-") and text_file.bytes == 13
    assert text_file.status == "ok" and text_file.filename == "notes.txt"
    extracted = json.loads(client.files.content(text_file.id).text)
    assert extracted["content"] == "hello \ufffd world" and extracted["type"] == "file"
    pdf = client.files.create(file=("doc.pdf", _pdf(["Invoice 42", "Total (USD) 10"])),
                              purpose="file-extract")
    content = json.loads(client.files.content(pdf.id).text)["content"]
    assert content == "Invoice 42\nTotal (USD) 10"
    image = client.files.create(file=("a.png", b"\x89PNG raw"), purpose="image")
    assert client.files.content(image.id).content == b"\x89PNG raw"
    assert {f.id for f in client.files.list()} == {text_file.id, pdf.id, image.id}
    assert client.files.retrieve(pdf.id).filename == "doc.pdf"
    assert client.files.delete(pdf.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(pdf.id)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.txt", b"x"), purpose="fine-tune")


def _batch_file(client: openai.OpenAI, model: str, texts: list[str]) -> str:
    lines = [json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": model, "messages": [user(t)]}})
             for i, t in enumerate(texts)]
    return client.files.create(file=("in.jsonl", "\n".join(lines).encode()),
                               purpose="batch").id


def test_file_extract_can_answer_as_plain_text(sim, client):
    sim.configure(file_content="text")
    uploaded = client.files.create(file=("notes.txt", b"plain words"), purpose="file-extract")
    response = client.files.content(uploaded.id)
    assert response.text == "plain words"
    assert response.response.headers["content-type"].startswith("text/plain")


def test_batch_lines_with_sampling_parameters_are_refused(client):
    line = {"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": K26, "messages": [user("hi")], "temperature": 0.3}}
    file_id = client.files.create(file=("in.jsonl", json.dumps(line).encode()),
                                  purpose="batch").id
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert err.value.body["message"] == ("batch input line 1: temperature is not allowed in a "
                                         "batch line (sampling parameters are fixed)")
    assert client.batches.list().data == []


def test_batch_lifecycle(client):
    file_id = _batch_file(client, K26, ["first", "FAIL_THIS_LINE please", "third"])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"job": "t"})
    assert batch.id.startswith("batch_") and batch.status == "validating"
    statuses = [client.batches.retrieve(batch.id).status for _ in range(3)]
    assert statuses == ["in_progress", "in_progress", "completed"]
    done = client.batches.retrieve(batch.id)
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (3, 2, 1)
    output = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["r0", "r2"]
    assert output[0]["response"]["status_code"] == 200 and output[0]["error"] is None
    assert output[0]["response"]["body"]["choices"][0]["message"]["content"].startswith("Noted.")
    (failed,) = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert failed["custom_id"] == "r1" and failed["response"]["status_code"] == 400
    assert [b.id for b in client.batches.list()] == [batch.id]


def test_batch_steps_and_cancel(sim, client):
    sim.configure(batch_lines_per_poll=1)
    file_id = _batch_file(client, K26, ["a", "b", "c"])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    client.batches.retrieve(batch.id)
    assert client.batches.retrieve(batch.id).request_counts.completed == 1
    assert client.batches.cancel(batch.id).status == "cancelling"
    assert client.batches.retrieve(batch.id).status == "cancelled"


def test_batch_refuses_models_without_batch_support(client):
    for model in [m.id for m in MODELS.values() if not m.batch]:
        file_id = _batch_file(client, model, ["x"])
        with pytest.raises(openai.BadRequestError):
            client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")


# --- transport ----------------------------------------------------------------------------

def test_keep_alive_and_no_nagle_stall(client, sim):
    # What makes a small request fast is structural, so that is what is checked (timings
    # belong to the benchmarks): one reused keep-alive connection, and TCP_NODELAY on the
    # server's socket, so no 40 ms Nagle/delayed-ACK stall can occur.
    for i in range(20):
        client.chat.completions.create(model=K26, messages=[user(f"ping {i}")])
    assert len(sim._connections) == 1  # every call reused one keep-alive connection
    (conn,) = sim._connections
    assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_raw_keep_alive_framing(sim):
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    body = json.dumps({"model": K26, "messages": [user("hi")]}).encode()
    for stream in (False, True, False):
        payload = json.dumps({"model": K26, "messages": [user("hi")], "stream": stream}).encode()
        conn.request("POST", "/v1/chat/completions", payload or body,
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and not response.will_close
        if not stream:
            assert response.getheader("Content-Length")
        response.read()
    conn.close()


def test_a_200k_token_stream_is_served_quickly(sim):
    sim.configure(record=False)
    sentence = "The build server compiles module {} in a few seconds. "
    text = "".join(sentence.format(i) for i in range(15_000))
    messages = [user(text[i:i + 80_000]) for i in range(0, len(text), 80_000)]
    messages.append(user("Which module compiles on the build server?"))
    body = json.dumps({"model": K26, "messages": messages, "stream": True}).encode()
    assert count_prompt_tokens(messages) > 200_000
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        payload = conn.getresponse().read()
        times.append(time.perf_counter() - start)
    assert sse(payload)[-1] == "[DONE]"
    assert min(times) < 0.3


def test_command_line_runs_the_server():
    process = subprocess.Popen([sys.executable, "-m", "kimi_magic.simulator", "--port", "0",
                                "--usage", "choice"], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        models = openai.OpenAI(base_url=url, api_key="k", max_retries=0).models.list()
        assert [m.id for m in models.data] == list(MODELS)
    finally:
        process.terminate()
        process.wait(5)


def test_clock_only_moves_forward(sim):
    before = sim.clock.now()
    assert sim.advance(10) >= before + 10
    with pytest.raises(ValueError):
        sim.advance(-1)


def test_cors_lets_a_browser_page_drive_it(sim):
    status, headers, _ = raw(sim, "OPTIONS", "/_sim/fail")
    assert status == 204 and headers["access-control-allow-origin"] == "*"
    assert "Authorization" in headers["access-control-allow-headers"]
    assert raw(sim, "GET", "/v1/models")[1]["access-control-allow-origin"] == "*"
