"""The session's parts used on their own: accounting, model choice, the observer list, the
connection and the stored head."""

from __future__ import annotations

import pytest

from kimi_magic import KimiClient, KimiError, Options, Session, SessionError, Settings, Store
from kimi_magic.core import models as model_table
from kimi_magic.core.accounting import Accounting
from kimi_magic.core.choice import ModelChoice
from kimi_magic.core.connection import Connection
from kimi_magic.core.context import Context, Message
from kimi_magic.core.events import Events
from kimi_magic.simulator import Simulator
from kimi_magic.wire.reply import Usage


def test_calibration_corrects_estimates_within_bounds():
    acc = Accounting(Settings(), clock=lambda: 5.0)
    ctx = Context(history=(Message.of("user", "hello there " * 50),))
    local = ctx.tokens
    acc.calibrate(local * 2, local)
    assert acc.tokens(ctx) == int(local * 2) and not acc.is_exact(ctx)
    acc.calibrate(local * 100, local)
    assert acc.calibration == 3.0, "one odd count never skews every estimate beyond 3x"
    acc.learn([("history", m) for m in ctx.history], 1234)
    assert acc.tokens(ctx) == 1234 and acc.is_exact(ctx)


def test_a_count_is_shared_among_the_messages_it_did_not_know_and_tools_kept_apart():
    acc = Accounting(Settings(), clock=lambda: 5.0)
    first = Message.of("user", "what is the weather like " * 10)
    acc.learn([("history", first)], 100)
    pin = Message.of("system", "a,b,c\n1,2,3\n" * 40)
    user = Message.of("user", "and now?")
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    acc.learn([("history", first), ("pins", pin), ("history", user)], 100 + 400 + 60, tools)
    # The first message keeps its count; the new ones share the rest; the tools schemas
    # took what the messages' estimates leave, and never reach a layer.
    ctx = Context(pins=(), history=(first, user))
    assert acc.message_tokens(first) == 100
    assert acc.message_tokens(pin) + acc.message_tokens(user) + sum(acc.tools_known.values()) \
        == 460
    assert acc.factors == {"history": 100 / first.tokens}, "a tools count teaches no layer"
    assert acc.tokens(ctx) == acc.layers(ctx)["history"]


def test_one_call_row_per_call_and_totals_by_model():
    acc = Accounting(Settings(), clock=lambda: 5.0)
    k3 = model_table.resolve("kimi-k3")
    u = Usage(prompt_tokens=10_000, cached_tokens=4_000, completion_tokens=500, exact=True)
    rows = [acc.call("map", k3.id, u, acc.cost(k3, u), 0.5),
            acc.call("map", k3.id, u, acc.cost(k3, u, batch=True), 0.0)]
    acc.remember("s", rows)
    assert [r["time"] for r in acc.calls] == [5.0, 5.0]
    assert rows[1]["cost"] == pytest.approx(rows[0]["cost"] * model_table.BATCH_DISCOUNT)
    assert acc.totals() == {"total": pytest.approx(rows[0]["cost"] + rows[1]["cost"]),
                            "by_model": {k3.id: pytest.approx(rows[0]["cost"] + rows[1]["cost"])},
                            "turns": 2}


def test_auto_picks_the_cheapest_served_model_that_fits():
    with Simulator(port=0) as sim:
        client = KimiClient(sim.url, "sk-parts-0123456789")
        choice = ModelChoice(Settings(), client.models, lambda: True)
        served = [choice.model(m) for m in model_table.MODELS if m in client.models()]
        cheapest = min(served, key=lambda m: (m.cache_miss or 0, m.output or 0))
        notices: list[str] = []
        assert choice.choose("auto", 1_000, Options(), notices).id == cheapest.id
        assert notices and cheapest.id in notices[0]
        biggest = max(served, key=lambda m: m.context_length)
        picked, why = choice.pick(biggest.context_length * 2, 1_000)
        assert picked.context_length == biggest.context_length and "compacted" in why
        client.close()


def test_a_retired_model_is_refused_in_one_line():
    choice = ModelChoice(Settings(), dict, lambda: False)
    with pytest.raises(SessionError, match="retired"):
        choice.choose(model_table.RETIRED_EXAMPLES[1], 10, Options(), [])


def test_a_failing_observer_never_stops_the_others():
    events, seen = Events(), []

    def broken(event, detail):
        raise RuntimeError("a broken view")

    events.subscribe(broken)
    stop = events.subscribe(lambda event, detail: seen.append(event))
    events.notify("turn")
    stop()
    events.notify("reset")
    assert seen == ["turn"]


def test_the_connection_makes_its_client_once_and_only_with_a_key():
    made = []

    def provider() -> KimiClient:
        made.append(KimiClient("http://127.0.0.1:9/v1", "sk-test"))
        return made[-1]

    link = Connection(Settings(api_key=""), provider=provider)
    assert not link.ready
    assert link.client is link.client is made[0] and len(made) == 1 and link.ready
    link.drop()
    assert link.client is made[1], "after drop, the next call asks the provider again"
    with pytest.raises(KimiError, match="MOONSHOT_API_KEY"):
        _ = Connection(Settings(api_key="")).client


def test_the_head_commits_a_context_with_its_call_row_and_reads_it_back(tmp_path):
    path = tmp_path / "store.sqlite"
    settings = Settings(api_key="sk-test", system="Be brief.")
    first = Session("h", settings, store=Store(path))
    assert first.context.system.text == "Be brief.", "a new head has the default prompt"
    ctx = first.context.append(Message.of("user", "hi"), Message.of("assistant", "hello"))
    row = first.accounting.call("chat", "kimi-k2.6", Usage(prompt_tokens=5, exact=True),
                                0.001, 0.1)
    first.head.commit(ctx, call=row, new_history=True)
    first.head.record_calls([first.accounting.call("map", "kimi-k2.6", Usage(exact=True),
                                                    0.002, 0.1)])
    again = Session("h", settings, store=Store(path))
    assert again.context.wire() == ctx.wire()
    assert [c["kind"] for c in again.calls] == ["chat", "map"]
    assert again.head.state() == first.head.state()


def test_a_new_layer_takes_what_the_server_counted_beyond_the_prose_and_learns_from_it():
    # Where the server cannot count a prefix (vLLM, llama.cpp), the turn after a first pin
    # teaches the pins' calibration: the prose keeps its calibrated figure, the pin the rest.
    acc = Accounting(Settings(), clock=lambda: 5.0)
    acc.calibrate(110, 100)
    pin = Message.of("system", "0.125,0.25,0.375\n" * 60)
    user = Message.of("user", "Which row has the largest value, and why does it matter?")
    prose = acc.message_tokens(user)
    acc.learn([("pins", pin), ("history", user)], prose + 300)
    assert acc.message_tokens(user) == prose and acc.message_tokens(pin) == 300
    assert acc.factor("pins") == pytest.approx(300 / pin.tokens)
    other = Message.of("system", "0.5,0.75,0.875\n" * 60)
    assert abs(acc.message_tokens(other, "pins") - 300) < 30, "the next pin is estimated near"
