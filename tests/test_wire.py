"""The wire package's shapes, events and hints, over real HTTP to the simulator."""

from __future__ import annotations

import json
import statistics
import time

import httpx2
import pytest

from kimi_magic.core.models import resolve
from kimi_magic.simulator import Simulator
from kimi_magic.wire.client import KimiClient
from kimi_magic.wire.request import Options, build_request, wire_body

KEY = "sk-wire-test-0123456789"


@pytest.fixture(scope="module")
def sim():
    with Simulator(port=0) as s:
        yield s


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


def test_a_1000_round_turn_is_sent_unchanged_and_costs_about_one_http_round_trip(sim):
    client = KimiClient(sim.url, KEY, server="moonshot")
    body = build_request(resolve("kimi-k2.6"), long_conversation(1000),
                         Options(think=False), 60_000, "moonshot")
    sim.clear_requests()
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
