"""What a notebook shows for replies, status, history and tables: the Markdown and HTML our
outputs carry, as JupyterLab receives them.

JupyterLab typesets ``$…$`` in Markdown and HTML outputs (MathJax 3); the browser test checks
the rendering itself, these check the bundles that make it right.
"""

from __future__ import annotations

import json
import re

import pytest
from IPython.utils.capture import capture_output

from kimi_magic.notebook.display import (
    NO_MATH,
    StreamView,
    currency_markdown,
    dollars,
    table_bundle,
)
from kimi_magic.wire.events import ContentDelta, ReasoningDelta

SHIELD = f'<span class="{NO_MATH}">\\$</span>'
#: A text cell breaks anywhere once no space is left; a number stays whole.
WRAPS = "overflow-wrap:break-word;word-break:normal"
BREAKS = "overflow-wrap:anywhere;word-break:normal"
WHOLE = "white-space:nowrap"


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    assert result.success, result.error_in_exec
    return out


def shown(out, mime: str) -> list[str]:
    return [o.data[mime] for o in out.outputs if mime in o.data]


def test_a_dollar_figure_is_one_format_everywhere():
    assert dollars(0.00437) == "$0.0044" and dollars(None) == "unknown"
    assert dollars(1234.5, 2) == "$1234.50"


@pytest.mark.parametrize("text, expected", [
    ("revenue was $36,050 at S01 and $44,939",
     f"revenue was {SHIELD}36,050 at S01 and {SHIELD}44,939"),
    ("it costs $0.0044 (or \\$1.2M)", f"it costs {SHIELD}0.0044 (or {SHIELD}1.2M)"),
    ("math stays: $x^2$, $2^n$, $5$ and $$\\sum_i a_i$$",
     "math stays: $x^2$, $2^n$, $5$ and $$\\sum_i a_i$$"),
    ("code stays: `$5` and\n```sh\necho $5 $HOME\n```\nafter $3",
     f"code stays: `$5` and\n```sh\necho $5 $HOME\n```\nafter {SHIELD}3"),
    ("streaming code:\n```python\nprice = '$5'", "streaming code:\n```python\nprice = '$5'"),
])
def test_currency_dollars_are_shielded_and_math_and_code_are_not(text, expected):
    assert currency_markdown(text) == expected


def test_our_html_outputs_are_never_typeset():
    table = table_bundle(["model", "cost"], [["kimi-k2.6", "$0.0044"], ["total", "$0.0044"]])
    assert f'class="kimi-table {NO_MATH}"' in table["text/html"]


def test_text_columns_are_left_aligned_and_number_columns_right_aligned():
    html = table_bundle(["name", "tokens", "note"], [["df", "~569", "a dataframe"],
                                                     ["notes", "1,204", ""]])["text/html"]
    cells = re.findall(r'<t([hd]) style="text-align:(\w+);([^"]*)">([^<]*)<', html)
    assert ("d", "left", WRAPS, "df") in cells and ("d", "right", WHOLE, "~569") in cells
    assert ("d", "left", WRAPS, "a dataframe") in cells
    assert ("h", "right", WRAPS, "tokens") in cells and ("h", "left", WRAPS, "name") in cells


def test_table_text_wraps_in_a_narrow_column_and_numbers_stay_whole():
    path = "/home/me/.local/share/kimi_magic/store.sqlite"
    html = table_bundle(["name", "cost"], [[path, "$0.0044"], ["default", "$0.0100"]],
                        f"Sessions in {path}")["text/html"]
    assert 'class="kimi-table' in html and 'style="max-width:100%"' in html
    # Words wrap whole; only a word too long for any column may break anywhere.
    assert f'<caption style="text-align:left;{BREAKS}">Sessions in /home' in html
    assert f'style="text-align:left;{BREAKS}">{path}<' in html
    assert f'style="text-align:left;{WRAPS}">default<' in html
    assert f'style="text-align:right;{WHOLE}">$0.0044<' in html
    assert "kimi-stack" not in html and "@container" not in html


def test_a_wide_table_stacks_its_rows_in_a_narrow_output():
    headers = ["name", "model", "turns", "snapshots", "cost", "updated"]
    html = table_bundle(headers, [["* default", "kimi-k2.6", 3, 0, "$0.0014",
                                   "2026-12-02 01:47"]])["text/html"]
    assert re.search(r"<style>@container kimi-table \(max-width: [\d.]+em\) \{.*"
                     r"\.kimi-stack thead \{ display: none; \}.*"
                     r"\.kimi-stack td::before \{ content: attr\(data-label\);", html)
    assert 'style="container: kimi-table / inline-size;' in html
    assert 'class="kimi-table kimi-stack' in html
    assert '<td data-label="snapshots" style="text-align:right;' in html


def test_reasoning_reads_as_secondary_prose():
    view = StreamView(display=lambda *a, **k: None)
    view(ReasoningDelta("First compare $5 with <b>unbroken_long_words</b>.\n\nThen answer."))
    view(ContentDelta("Done."))
    md = view.bundle()["text/markdown"]
    pre = re.search(r'<pre class="kimi-reasoning [^"]*" style="([^"]*)">([^<]*)</pre>', md)
    style, body = pre[1], pre[2]
    assert "font-family: var(--jp-content-font-family" in style
    assert "word-break: normal" in style and "overflow-wrap: break-word" in style
    assert "color: var(--jp-content-font-color2" in style
    assert "&#36;5" in body and "&lt;b&gt;" in body and "$" not in body


def test_json_reply_is_a_json_code_block(ipython):
    out = run(ipython, "%%kimi --json --out data\nList three colours as JSON")
    md = shown(out, "text/markdown")[-1]
    block = re.search(r"```json\n(.*)\n```", md, re.S)
    assert block, md
    assert json.loads(block[1]) == ipython.user_ns["data"]


def test_format_code_has_a_language_tag(ipython):
    out = run(ipython, "%%kimi --format code\nWrite code")
    md = shown(out, "text/markdown")[-1]
    assert md.lstrip().startswith("```python\n") or re.search(r"^```\w+\n", md, re.M), md


def test_prefix_is_shown_with_the_reply(ipython):
    out = run(ipython, "%%kimi --prefix Answer: --out reply\nSay hello")
    text = ipython.user_ns["reply"]
    assert text.startswith("Answer:")
    assert text in shown(out, "text/plain")
    assert text in shown(out, "text/markdown")[-1]


def test_reply_with_dollar_amounts_and_status_line(ipython):
    run(ipython, "%%kimi\nRevenue was $36,050 at S01 and $44,939 at S02.")
    out = run(ipython, "%%kimi\nWhat was the revenue?")
    md = shown(out, "text/markdown")[-1]
    assert f"{SHIELD}36,050 at S01 and {SHIELD}44,939" in md
    status = shown(out, "text/html")[-1]
    assert f'class="kimi-status {NO_MATH}"' in status and "$" in status


def test_status_cost_and_history_tables(ipython):
    run(ipython, "%%kimi_pin notes\nUse SI units.")
    run(ipython, "%%kimi\nHello")
    for cell in ("%kimi status", "%kimi cost", "%kimi history"):
        html = shown(run(ipython, cell), "text/html")[-1]
        assert NO_MATH in html, cell
    html = shown(run(ipython, "%kimi history"), "text/html")[-1]
    assert "<pinned" not in html and "&lt;pinned" not in html
    assert re.search(r"📌 notes \(text, ~\d+ tokens\)", html), html
    status = shown(run(ipython, "%kimi status"), "text/html")[-1]
    assert re.search(r"\$\d\.\d{4} total, last \$\d\.\d{4}", status)
