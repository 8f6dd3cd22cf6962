"""Fan-out (``--map``): one prompt per item, concurrently, in order, against the simulator."""

from __future__ import annotations

import asyncio
import time

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from kimi_magic import Fanout, MapFailure, Message, Pin, Settings, map_prompts
from kimi_magic.fanout import RateLimit, fill, pin_results
from kimi_magic.notebook.magics import KimiMagic


def chats(sim):
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


@pytest.fixture
def fast(session):
    """Rate limits out of the way (the simulator has none) so tests run in seconds."""
    session.settings.map_concurrency = 8
    session.settings.map_rpm = 0
    session.settings.retry_base = 0.001
    return session


def test_defaults_are_safe_for_a_tier0_account():
    assert Settings().map_concurrency == 1 and Settings().map_rpm == 3
    assert KimiMagic.map_concurrency.default_value == 1
    assert KimiMagic.map_rpm.default_value == 3


def test_fill_replaces_item_and_leaves_other_braces():
    assert fill('Give {"name": ...} for {item} and {other}', "Ada") == \
        'Give {"name": ...} for Ada and {other}'
    assert fill("Describe {item.name}", type("Row", (), {"name": "Ada"})()) == "Describe Ada"
    assert fill("No placeholder", 7) == "No placeholder\n\n7"


def test_fifty_items_survive_rate_limits_and_come_back_in_order(fast, sim):
    fast.ask("My favourite number is 42.")
    history_before = fast.history()
    sim.fail("rate_limit", times=5)
    fan = Fanout(fast, "Repeat the word token{item} exactly.", list(range(50)))
    results = fan.run()

    assert len(results) == 50 and not fan.failures
    for i, text in enumerate(results):
        assert f"token{i} " in text, (i, text)
    assert len(chats(sim)) == 1 + 50 + 5, "five 429s were retried"
    # Not in the conversation: history untouched, costs recorded as "map" turns.
    assert fast.history() == history_before
    rows = [t for t in fast.store.turns("t") if t["kind"] == "map"]
    assert len(rows) == 50
    assert sum(r["cost"] for r in rows) == pytest.approx(fan.cost)
    assert fast.cost()["total"] == pytest.approx(sum(t["cost"] for t in fast.calls))
    assert "50 of 50 items answered" in fan.line()


def test_items_share_system_and_pins_but_not_history(fast, sim):
    fast.set_pin(Pin("glossary", "text", "cell", Message.of("system", "kimi means Kimi."),
                     frozen=True))
    fast.ask("Some earlier conversation about apples.")
    sim.clear_requests()
    map_prompts(fast, "Define {item}", ["alpha", "beta"])
    for body in chats(sim):
        assert [m["role"] for m in body["messages"]] == ["system", "system", "user"]
        assert body["messages"][1]["content"] == "kimi means Kimi."
        assert "apples" not in str(body["messages"])
        assert body["messages"][-1]["content"] in ("Define alpha", "Define beta")
        assert "stream" not in body or body["stream"] is False


def test_a_failed_item_is_marked_and_the_rest_complete(session, sim):
    session.settings.map_rpm = 0
    sim.fail("content_filter", times=1)  # not retryable: the first item fails for good
    results = map_prompts(session, "Say {item}", ["first", "second", "third"])
    assert isinstance(results[0], MapFailure)
    assert results[0].startswith("[failed] Blocked by Kimi's content filter")
    assert results[0].index == 0 and results[0].item == "first"
    assert [r for r in results[1:] if "second" in r or "third" in r] == results[1:]
    assert [t["kind"] for t in session.calls].count("map") == 2


def test_a_series_gives_a_series_with_the_same_index(fast):
    names = pd.Series(["Ada", "Grace", "Linus"], index=["a", "b", "c"], name="who")
    out = map_prompts(fast, "Greet {item}", names)
    assert isinstance(out, pd.Series)
    assert list(out.index) == ["a", "b", "c"] and out.name == "who"
    assert "Grace" in out["b"]


def test_json_mode_parses_each_reply(fast, sim):
    from kimi_magic import Options

    out = map_prompts(fast, 'Return {"name": "{item}"} as JSON.', ["x", "y"],
                      options=Options(json=True))
    assert all(isinstance(o, dict) for o in out)
    assert chats(sim)[-1]["response_format"] == {"type": "json_object"}


def test_rate_limit_allows_at_most_n_starts_per_window():
    limit = RateLimit(2, window=0.3)
    starts = []

    async def go():
        for _ in range(5):
            await limit.wait()
            starts.append(time.monotonic())

    asyncio.run(go())
    for i in range(len(starts) - 2):
        assert starts[i + 2] - starts[i] >= 0.29, "never three starts within one window"


def test_pin_results_puts_the_pairs_into_the_context(fast, sim):
    items = ["alpha", "beta"]
    results = map_prompts(fast, "Define {item}", items)
    pin = pin_results(fast, items, results, "definitions")
    assert pin.frozen and pin.kind == "map"
    fast.ask("Use the definitions.")
    sent = chats(sim)[-1]["messages"]
    block = next(m["content"] for m in sent if 'name="definitions"' in str(m["content"]))
    assert "alpha" in block and results[1] in block


# -- the magic -------------------------------------------------------------------------------------

@pytest.fixture
def shell(ipython):
    ipython.run_line_magic("config", "KimiMagic.map_concurrency = 4")
    ipython.run_line_magic("config", "KimiMagic.map_rpm = 0")
    return ipython


def test_magic_map_keeps_item_placeholder_and_stores_results(shell, sim):
    shell.user_ns.update(fruits=["apple", "pear"], item="SHADOWED", tone="friendly")
    with capture_output() as out:
        shell.run_cell_magic("kimi", "--map fruits --out notes",
                             'In a {tone} tone, describe {item} as {"kind": "fruit"}.')
    notes = shell.user_ns["notes"]
    assert len(notes) == 2
    prompts = [b["messages"][-1]["content"] for b in chats(sim)]
    assert sorted(prompts) == ['In a friendly tone, describe apple as {"kind": "fruit"}.',
                               'In a friendly tone, describe pear as {"kind": "fruit"}.']
    shown = out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)
    assert "--map kimi-k2.6: 2/2" in shown, "a text progress line outside a kernel"
    assert "2 of 2 items answered" in shown


@pytest.mark.parametrize("expr", ["df.city", "df['city']"])
def test_magic_maps_a_dataframe_column(shell, sim, expr):
    shell.user_ns["df"] = pd.DataFrame({"city": ["Oslo", "Lima"]}, index=[10, 20])
    with capture_output():
        shell.run_cell_magic("kimi", f"--map {expr} --out where --pin-results cities",
                             "Where is {item}?")
    where = shell.user_ns["where"]
    assert isinstance(where, pd.Series) and list(where.index) == [10, 20]
    assert "Lima" in where[20]
    session = shell.magics_manager.registry["KimiMagic"].session
    assert session.context.pin("cities") is not None
    assert session.context.history == (), "the fan-out is not in the history"


@pytest.mark.parametrize("expr, words", [
    ("missing_name", "NameError"),
    ("df", "DataFrame"),
    ("'just text'", "str"),
    ("[]", "empty"),
])
def test_magic_map_bad_input_is_one_line(shell, sim, expr, words):
    shell.user_ns["df"] = pd.DataFrame({"a": [1]})
    with pytest.raises(UsageError, match=words):
        shell.run_cell_magic("kimi", f"--map {expr}", "Do {item}")
    assert chats(sim) == []


def test_magic_map_without_out_returns_the_results(shell, sim):
    shell.user_ns["xs"] = ("a", "b")
    with capture_output():
        value = shell.run_cell_magic("kimi", "--map xs", "Echo {item}")
    assert isinstance(value, list) and len(value) == 2


def test_unload_closes_the_client_and_its_fanout_loop(ipython):
    import time

    ipython.user_ns["fruits"] = ["apple", "pear"]
    ipython.run_cell("%%kimi --map fruits --out answers\nOne word about {item}.")
    assert len(ipython.user_ns["answers"]) == 2
    client = ipython.magics_manager.registry["KimiMagic"].sessions._client
    loop = client.loop
    assert loop is not None and loop.is_running()
    ipython.run_line_magic("unload_ext", "kimi_magic")
    deadline = time.monotonic() + 5
    while loop.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loop.is_running() and client._sdk is None and client._async_sdk is None
