"""Figures that agree: every view shows the same number for the same thing, the layers sum to
the total, and the estimate stays near the server's count after tool turns, pins, rollbacks
and compressions. Typed as a user types it, through a real IPython shell and the simulator.
"""

from __future__ import annotations

import html
import re

import pytest
from IPython.utils.capture import capture_output

from kimi_magic.notebook.widget import Dashboard
from kimi_magic.simulator.tokens import count_prompt_tokens

#: The estimate must be within this share of the server's count of the same request.
TOLERANCE = 0.10

PROSE = ("We are tuning a small language model. The learning rate was 3e-4, the batch size "
         "64, and the loss plateaued after the warm-up; the team wants to know whether a "
         "longer schedule or a larger batch would help more, and why. ")


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    assert result.success, result.error_in_exec or result.error_before_exec
    return out


def text(out) -> str:
    return out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)


def number(s: str) -> int:
    return int(s.replace(",", "").lstrip("~"))


def chats(sim) -> list[dict]:
    return [r for r in sim.requests if r["path"].endswith("/chat/completions")]


def magic(shell):
    return shell.magics_manager.registry["KimiMagic"]


def status(shell) -> dict:
    """``%kimi status`` as the user reads it: total, layers, pins."""
    plain = text(run(shell, "%kimi status"))
    total = number(re.search(r"context\s+(~?[\d,]+) tokens", plain)[1])
    layers_line = re.search(r"layers\s+(.*)", plain)[1]
    layers = {k: number(v) for k, v in re.findall(r"(\w+) (~?[\d,]+)", layers_line)}
    pins_line = re.search(r"\npins\s+(.*)", plain)[1]
    pins = {n: number(v) for n, v in re.findall(r"(\S+) \(\w+, (~?[\d,]+)\)", pins_line)}
    return {"total": total, "layers": layers, "pins": pins}


def pins_view(shell) -> dict[str, int]:
    """``%kimi pins``: name → tokens."""
    rows = text(run(shell, "%kimi pins")).splitlines()[2:]
    return {r.split()[0]: number(r.split()[2]) for r in rows if r.strip()}


def snapshots_view(shell) -> list[tuple[bool, int, str, int]]:
    """``%kimi snapshots``: (marked current, id, label, tokens) per row."""
    rows = []
    for line in text(run(shell, "%kimi snapshots")).splitlines()[2:]:
        m = re.match(r"(→ |  )(\d+)\s+(.+?)\s+\d\d:\d\d:\d\d\s+\d+\s+([\d,]+)", line)
        if m:
            rows.append((m[1] == "→ ", int(m[2]), m[3], number(m[4])))
    return rows


def dashboard(shell) -> dict:
    """The dashboard's model: headline, layer segments, pin rows, the marked snapshot."""
    m = magic(shell)
    board = Dashboard(m.sessions, m.session.name)
    try:
        html = board.summary.value
        headline = int(re.search(r'class="kimi-tokens" data-tokens="(\d+)"', html)[1])
        layers = {k: int(v) for k, v in
                  re.findall(r'data-layer="(\w+)" data-tokens="(\d+)"', html)}
        pins = {}
        for row in board.pin_rows.children:
            value = row.children[0].value
            name = re.search(r">([^<>]+)</span>", value)[1]
            pins[name] = number(re.search(r"(~?[\d,]+) tokens", value)[1])
        here = []
        for row in board.snapshot_rows.children:
            value = row.children[0].value
            if "●" in value:
                here.append((int(re.search(r'data-snapshot="(\d+)"', value)[1]),
                             number(re.search(r"([\d,]+) tokens", value)[1])))
        return {"headline": headline, "layers": layers, "pins": pins, "here": here}
    finally:
        board.close()


def history_view(shell) -> list[int]:
    """``%kimi history``: the tokens column."""
    rows = text(run(shell, "%kimi history")).splitlines()[2:]
    return [number(r.split()[-1]) for r in rows if r.strip()]


def dry_run(shell, prompt: str = "", options: str = "") -> tuple[int, dict[str, int]]:
    """``%%kimi --dry-run``: the input tokens it predicts, and by layer."""
    plain = text(run(shell, f"%%kimi --dry-run {options}\n{prompt}"))
    m = re.search(r"input tokens\s+(~?[\d,]+) \((.*)\)", plain)
    return number(m[1]), {k: number(v) for k, v in re.findall(r"(\w+) (~?[\d,]+)", m[2])}


def assert_agree(shell) -> dict:
    """Every view shows the same figures, and the layers sum to the total."""
    st, dash = status(shell), dashboard(shell)
    s = magic(shell).session
    assert sum(st["layers"].values()) == st["total"] == dash["headline"] == s.tokens()
    assert {k: v for k, v in st["layers"].items() if v} == dash["layers"]
    assert sum(history_view(shell)) == st["total"]
    _, layers = dry_run(shell, "What next?")
    assert {k: v for k, v in layers.items() if k != "prompt"} == st["layers"]
    assert st["pins"] == pins_view(shell) == dash["pins"] if s.context.pins else True
    if s.context.pins:
        assert sum(st["pins"].values()) == st["layers"]["pins"]
    return st


def estimate_error(shell, sim, prompt: str, errors: dict, step: str) -> float:
    """Predict the next cell (dry run), run it, compare with what the server counted."""
    predicted, _ = dry_run(shell, prompt)
    before = len(chats(sim))
    run(shell, f"%%kimi\n{prompt}")
    (sent,) = chats(sim)[before:]
    counted = magic(shell).session.calls[-1]["prompt_tokens"]
    assert sent["body"]["messages"][-1]["content"].endswith(prompt)
    error = abs(predicted - counted) / counted
    errors[step] = round(error * 100, 1)
    assert error <= TOLERANCE, f"after {step}: estimated {predicted:,}, server {counted:,}"
    return error


@pytest.fixture
def shell(ipython):
    ipython.run_cell("def shelf_count(shelf: str) -> int:\n"
                     "    '''How many books a shelf holds.'''\n"
                     "    return len(shelf) * 7\n")
    return ipython


def test_figures_agree_and_estimates_hold_after_tools_pins_rollback_and_compress(shell, sim,
                                                                                capsys):
    errors: dict[str, float] = {}
    run(shell, f"%%kimi\n{PROSE}What would you try first?")
    run(shell, "%kimi tool shelf_count")
    run(shell, '%%kimi --tools\nUse shelf_count on "attic" and tell me the count.')
    tool_turn = chats(sim)[-2:]
    assert all("tools" in r["body"] for r in tool_turn), "the turn made two calls with tools"
    s = magic(shell).session
    assert 0.8 < s.accounting.calibration < 1.25, "a tool turn does not skew calibration"
    assert_agree(shell)
    estimate_error(shell, sim, PROSE + "Summarise the options in two lines.", errors,
                   "a --tools turn")

    shell.run_cell("import pandas as pd\n"
                   "df = pd.DataFrame({'shard': range(60), 'loss': [3.1 - i / 40 for i in "
                   "range(60)], 'tokens_seen': [i * 131072 for i in range(60)]})")
    out = text(run(shell, "%kimi pin df"))
    st = assert_agree(shell)
    assert f"~{st['pins']['df']:,} tokens" in out, "the pin notice says what the views say"
    estimate_error(shell, sim, "Which shard has the lowest loss?", errors, "a dataframe pin")

    run(shell, '%kimi snapshot "before more"')
    run(shell, f"%%kimi\n{PROSE}Anything else?")
    run(shell, '%kimi rollback "before more"')
    st = assert_agree(shell)
    (here,) = [r for r in snapshots_view(shell) if r[0]]
    assert here[2] == "before more" and here[3] == st["total"]
    assert dashboard(shell)["here"] == [(here[1], st["total"])]
    estimate_error(shell, sim, "Back to the loss: what next?", errors, "a rollback")

    for i in range(4):
        run(shell, f"%%kimi\nRound {i}: {PROSE}")
    run(shell, "%kimi compress")
    st = assert_agree(shell)
    compressed = magic(shell).session.context
    assert compressed.summary is not None
    marked = [r for r in snapshots_view(shell) if r[0]]
    assert not any("before compress" in r[2] or r[2].startswith("#") for r in marked), \
        "the snapshot taken before compress is not where the session is"
    assert marked == [] and dashboard(shell)["here"] == []
    estimate_error(shell, sim, "What did we decide so far?", errors, "a compress")
    with capsys.disabled():
        print(f"\nestimate error (% of the server's count) after {errors}")


def test_a_tools_cell_is_estimated_with_its_schemas(shell, sim):
    run(shell, f"%%kimi\n{PROSE}")
    run(shell, "%kimi tool shelf_count")
    run(shell, '%%kimi --tools\nUse shelf_count on "attic".')
    prompt = 'Use shelf_count on "cellar".'
    predicted, layers = dry_run(shell, prompt, "--tools")
    assert layers["tools"] > 0
    before = len(chats(sim))
    run(shell, f"%%kimi --tools\n{prompt}")
    first = chats(sim)[before]["body"]
    counted = count_prompt_tokens(first["messages"], first.get("tools"))
    assert abs(predicted - counted) <= TOLERANCE * counted, (predicted, counted)


def test_the_auto_notice_reserves_what_the_request_sends(shell, sim):
    for option in ("-m auto", "-m auto --max-tokens 2000"):
        out = text(run(shell, f"%%kimi {option}\nHello there."))
        reserved = number(re.search(r"~[\d,]+ \+ ([\d,]+) tokens fit", out)[1])
        assert chats(sim)[-1]["body"]["max_completion_tokens"] == reserved


def test_a_pasted_logs_round_has_one_size_in_every_view(ipython, sim):
    # A log tokenises very differently locally (cl100k) and on the server: the mask notice
    # said "(8,535 tokens)" for one block of a 5,432-token context, drop and diff gave the
    # local count too, while history and status gave the server's.
    log = "\n".join(f"2026-12-01 10:{i % 60:02d}:00 INFO step {i} compiled module_{i}.c ok "
                    f"(ID-{1000 + i})" for i in range(300))
    ipython.user_ns["log"] = log
    run(ipython, "%%kimi\nHere is the build log, find the failure:\n```\n{log}\n```")
    run(ipython, "%%kimi\nThanks.")
    first_round = sum(history_view(ipython)[1:3])
    total = status(ipython)["total"]
    run(ipython, "%kimi fork side")
    run(ipython, "%kimi use default")
    said = text(run(ipython, "%kimi diff default side"))
    a, b = (number(n) for n in re.findall(r"rounds, (~[\d,]+) tokens", said))
    assert a == b == total, said
    said = text(run(ipython, "%kimi drop 1"))
    assert f"~{first_round:,} tokens" in said, (said, first_round)
    run(ipython, "%kimi rollback")
    run(ipython, "%config KimiMagic.compact_at = 3000")
    run(ipython, "%config KimiMagic.keep_rounds = 1")
    said = text(run(ipython, "%%kimi\nAnd now?"))
    before, after = (number(n) for n in re.search(r"([\d,]+) → ([\d,]+) tokens", said).groups())
    sizes = [number(n) for n in re.findall(r"\(([\d,]+) tokens\)", said)]
    assert all(n <= before for n in sizes), said
    assert before >= first_round > after, said


def test_the_status_line_under_a_compaction_notice_gives_the_fill_after_it(ipython, sim):
    # The line read "context 2.1% of 262,144" right under "Masked ...: 5,432 → 208 tokens".
    run(ipython, "%config KimiMagic.compact_at = 2000")
    ipython.user_ns["log"] = "\n".join(f"2026-12-01 10:00:{i % 60:02d} INFO step {i} done "
                                       f"(ID-{1000 + i})" for i in range(200))
    said = text(run(ipython, "%%kimi\nHere is the log:\n\n{log}\n\nWhat failed?"))
    after = number(re.search(r"→ ([\d,]+) tokens", said)[1])
    fill = re.search(r"context ([\d.]+)% of ([\d,]+)", said)
    assert abs(float(fill[1]) - after / number(fill[2]) * 100) < 0.1, said
    assert after == status(ipython)["total"]


def test_snapshot_and_rollback_lines_mark_only_estimates(ipython, sim):
    run(ipython, f"%%kimi\n{PROSE}")
    m = ipython.magics_manager.registry["KimiMagic"]
    s = m.session
    assert s.status()["exact"], "the server counted this context"
    line = text(run(ipython, "%kimi snapshot"))
    # An unlabelled snapshot is not named twice ("#1 '#1'"); its size is the status figure.
    assert line.startswith("Snapshot #1: 1 round, ") and "'#1'" not in line
    assert f" {s.tokens():,} tokens." in line and "~" not in line
    run(ipython, "%%kimi\nAnd the batch size?")
    dash = Dashboard(m.sessions, s.name)
    dash._rollback(1)
    shown = html.unescape(dash.status_line.value)
    assert "Rolled back to snapshot #1: 1 round, " in shown
    assert f"{s.tokens():,} tokens" in shown
    assert ("~" in shown) != s.status()["exact"], "the mark follows the headline's exactness"
