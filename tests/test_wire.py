"""The wire package's shapes, events, hints and speed, over real HTTP to the simulator."""

from __future__ import annotations

import json
import statistics
import time

import httpx2
import pytest
from IPython.utils.capture import capture_output

from kimi_magic import KimiError, Options, Session, SessionError, Settings, Store
from kimi_magic import tools as tool_module
from kimi_magic.core.models import resolve
from kimi_magic.pins import pin
from kimi_magic.tools import for_session, tool
from kimi_magic.wire.client import KimiClient
from kimi_magic.wire.events import ContentDelta, ToolCallStarted, ToolResult
from kimi_magic.wire.messages import is_web_search, tool_message
from kimi_magic.wire.request import build_request, wire_body

KEY = "sk-wire-test-0123456789"

SHELF_TOOL = '''
def shelf_count(room: str) -> int:
    """How many shelves a room has."""
    return 14
'''


def chats(sim):
    return [r for r in sim.requests if r["path"].endswith("/chat/completions")]


def long_conversation(rounds: int) -> list[dict]:
    messages = [{"role": "system", "content": "You are terse."}]
    for i in range(rounds):
        messages.append({"role": "user", "content": f"Question {i}: what about this? " * 4})
        messages.append({"role": "assistant", "content": f"Answer {i}: it is so. " * 6,
                         "reasoning_content": f"Thinking about {i}."})
    messages.append({"role": "user", "content": "Last question?"})
    return messages


# -- speed ----------------------------------------------------------------------------------------

def test_a_1000_round_turn_is_sent_unchanged_and_costs_about_one_http_round_trip(sim):
    client = KimiClient(sim.url, KEY, server="moonshot")
    body = build_request(resolve("kimi-k2.6"), long_conversation(1000),
                         Options(think=False), 60_000, "moonshot")
    client.chat(body)
    sent = chats(sim)[-1]["body"]
    assert sent == wire_body(body), "the server got exactly the body we built"
    assert sent["thinking"] == {"type": "disabled"} and len(sent["messages"]) == 2002

    raw = json.dumps(wire_body(body), ensure_ascii=False).encode()
    http = httpx2.Client(base_url=sim.url, headers={"Authorization": f"Bearer {KEY}",
                                                     "Content-Type": "application/json"})
    turns, trips = [], []
    for _ in range(3):
        started = time.perf_counter()
        client.chat(body)
        turns.append(time.perf_counter() - started)
        started = time.perf_counter()
        http.post("/chat/completions", content=raw).read()
        trips.append(time.perf_counter() - started)
    http.close()
    client.close()
    turn, trip = statistics.median(turns), statistics.median(trips)
    # The SDK's per-message conversion alone used to cost ~20 round trips at this size.
    assert turn < 3 * trip + 0.1, f"turn {turn:.3f}s vs raw round trip {trip:.3f}s"


# -- stream events and tool messages ---------------------------------------------------------

def test_a_tool_turn_streams_typed_events_and_sends_the_tool_message(session, sim):
    namespace: dict = {}
    exec(SHELF_TOOL, namespace)
    tool(namespace["shelf_count"])
    events: list = []
    try:
        tools = for_session(session)
        session.ask('Use shelf_count with "attic".', options=Options(tools=tools.specs),
                    tools=tools, on_delta=events.append)
    finally:
        tool_module.registry.clear()
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    result = next(e for e in events if isinstance(e, ToolResult))
    assert started.name == result.name == "shelf_count" and result.result == "14"
    assert events.index(started) < events.index(result)
    assert isinstance(events[-1], ContentDelta), "the answer streams after the tool ran"
    sent = chats(sim)[-1]["body"]["messages"]
    call = next(m for m in sent if m.get("tool_calls"))["tool_calls"][0]
    assert next(m for m in sent if m["role"] == "tool") == tool_message(call, "14")
    assert not is_web_search(call)


def test_the_stream_view_shows_the_tool_call_and_its_result(ipython, sim):
    ipython.run_cell(SHELF_TOOL)
    try:
        with capture_output():
            ipython.run_line_magic("kimi", "tool shelf_count")
        with capture_output() as out:
            ipython.run_cell_magic("kimi", "--tools", 'Use shelf_count on "attic".')
    finally:
        tool_module.registry.clear()
    shown = "".join(o.data.get("text/markdown", "") for o in out.outputs)
    assert "calling `shelf_count`" in shown and "↳ `shelf_count` → 14" in shown


# -- hints that say what is actually wrong ---------------------------------------------------------

def test_a_base_url_without_v1_is_named_as_the_problem(sim, store_path):
    bare = sim.url.removesuffix("/v1")
    s = Session("t", Settings(base_url=bare, api_key=KEY, retry_base=0.01),
                store=Store(store_path))
    with pytest.raises(KimiError) as info:
        s.ask("Hello?")
    line = str(info.value)
    assert info.value.kind == "not_found" and "\n" not in line
    assert f"{bare} probably lacks /v1" in line and f"'{bare}/v1'" in line
    assert "retired" not in line
    assert s.context.history == () and s.store.turns("t") == []


def test_a_model_the_server_does_not_serve_lists_the_ones_it_does(session, sim):
    sim.configure(models=["kimi-k2.7-code", "kimi-k2.6"])
    with pytest.raises(KimiError) as info:
        session.ask("Hello?", model="kimi-k3")
    line = str(info.value)
    assert info.value.kind == "not_found" and info.value.status == 404
    assert "does not serve 'kimi-k3'" in line and "kimi-k2.6, kimi-k2.7-code" in line
    assert chats(sim)[-1]["body"]["model"] == "kimi-k3", "the server was asked"


def test_a_prompt_bigger_than_the_window_on_an_empty_history_says_so(session, sim):
    window = session.model().context_length
    huge = "lorem ipsum dolor sit amet " * (window // 2)
    with pytest.raises(KimiError) as info:
        session.ask(huge)
    line = str(info.value)
    assert info.value.kind == "token_limit"
    assert "no history for session.compress() to shrink" in line  # plain Python: no magics
    assert f"{window:,}-token window" in line and "Run session.compress()" not in line
    assert session.context.history == () and session.store.turns("t") == []


def test_a_prompt_over_the_window_we_know_is_refused_before_sending(ipython, sim):
    # The server's window is larger than the one we know (an override, or a server that
    # does not list its window): we used to say "compacting first" with nothing to
    # compact, then send the prompt with a one-token cap and record nothing, at a price.
    ipython.run_cell('%config KimiMagic.model_overrides = {"kimi-k2.6": {"context_length": '
                     '3000}}')
    ipython.user_ns["paste"] = "lorem ipsum dolor sit amet " * 2000
    with capture_output() as out:
        result = ipython.run_cell("%%kimi\nSummarise this: {paste}")
    line = str(result.error_in_exec)
    assert "no history for %kimi compress to shrink" in line and "3,000-token window" in line
    assert "\n" not in line and "compacting first" not in out.stdout + out.stderr
    assert chats(sim) == [], "nothing was sent"
    magic = ipython.magics_manager.registry["KimiMagic"]
    assert magic.session.context.history == () and magic.session.calls == []


def test_a_file_that_is_not_an_image_says_which_file(session, tmp_path):
    (tmp_path / "photo.png").write_bytes(b"this is not a picture at all")
    with pytest.raises(SessionError) as info:
        pin(session, "photo.png", {}, cwd=str(tmp_path))
    line = str(info.value)
    assert "image file photo.png" in line and "28 bytes" in line and "PNG, JPEG" in line
    assert "BytesIO" not in line and " at 0x" not in line
    assert session.context.pins == (), "nothing was pinned"
