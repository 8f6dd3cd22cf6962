"""Pins through real HTTP to the simulator: what the request carries, turn after turn."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from IPython.core.error import UsageError  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402
from PIL import Image  # noqa: E402

from kimi_magic import Session, SessionError, Store  # noqa: E402
from kimi_magic import pins as pins_module  # noqa: E402
from kimi_magic.pins import pin, pin_text, refresher  # noqa: E402


def chats(sim) -> list[dict]:
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def sent(sim) -> list[dict]:
    """The messages of the last chat request, as the server received them."""
    return chats(sim)[-1]["messages"]


def blocks(sim, kind: str | None = None) -> list[str]:
    """Text of every pinned block in the last request (image pins: their text part)."""
    out = []
    for m in sent(sim):
        text = m["content"] if isinstance(m["content"], str) else "".join(
            p.get("text", "") for p in m["content"] if p["type"] == "text")
        if text.startswith("<pinned ") and (kind is None or f'kind="{kind}"' in text):
            out.append(text)
    return out


@pytest.fixture
def ns() -> dict:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": np.arange(10_000), "price": rng.normal(100, 15, 10_000).round(2),
                       "city": rng.choice(["Oslo", "Lima", "Pune"], 10_000)})
    return {"df": df}


@pytest.fixture
def live(session: Session, ns: dict) -> Session:
    session.refresh_pins = refresher(lambda: ns)
    return session


# -- dataframes ---------------------------------------------------------------------------
def test_dataframe_pin_follows_the_system_prompt_in_pin_order(live, ns, sim):
    pin(live, "df", ns)
    pin_text(live, "conventions", "Prices are in NOK.\nAnswer in one sentence.")
    live.ask("What is the mean price?")
    messages = sent(sim)
    assert [m["role"] for m in messages] == ["system", "system", "system", "user"]
    assert messages[0]["content"] == live.settings.system
    df_block = messages[1]["content"]
    assert df_block.startswith('<pinned name="df" kind="dataframe" source="variable df">')
    assert df_block.endswith("</pinned>")
    assert "shape: 10,000 rows × 3 columns" in df_block
    assert "price: float64" in df_block
    assert "rows: showing " in df_block and " of 10,000 (first " in df_block
    assert "summary (describe):" in df_block and "mean" in df_block
    assert messages[2]["content"].startswith('<pinned name="conventions" kind="text" '
                                             'source="cell">\nPrices are in NOK.')


def test_unchanged_pin_is_byte_identical_and_hits_the_prompt_cache(live, ns, sim):
    made = pin(live, "df", ns)
    first = live.ask("Describe the data.")
    second = live.ask("And the cities?")
    one, two = chats(sim)[-2:]
    assert json.dumps(one["messages"][1]) == json.dumps(two["messages"][1])
    assert live.context.pins[0].message is made.message
    assert first.notices == [] and second.notices == []
    assert second.usage.cached_tokens > 256


def test_rendering_is_deterministic(ns, session):
    a = pin(session, "df", ns).message.json
    b = pin(session, "df", {"df": ns["df"].copy()}).message.json
    assert a == b


def test_changed_dataframe_is_re_sent_in_place_with_one_notice(live, ns, sim, store_path):
    pin(live, "df", ns)
    pin_text(live, "notes", "Second pin, stays after df.")
    live.ask("First look.")
    ns["df"] = ns["df"].assign(price=ns["df"]["price"] * 2)
    turn = live.ask("Look again.")
    changed = [n for n in turn.notices if n.startswith("Pin 'df' changed (")]
    assert len(changed) == 1 and changed[0].endswith("tokens); re-sent.")
    messages = sent(sim)
    assert messages[1]["content"].startswith('<pinned name="df"')
    assert messages[2]["content"].startswith('<pinned name="notes"')
    mean = f"{ns['df']['price'].mean():.6g}"
    assert mean in messages[1]["content"]
    # The refreshed pin is what the store holds, even after an unrecorded --once turn:
    # it survives a kernel restart.
    ns["df"] = ns["df"].assign(price=ns["df"]["price"] + 1000)
    turn = live.ask("Once more, off the record.", once=True)
    assert len([n for n in turn.notices if n.startswith("Pin 'df' changed")]) == 1
    mean = f"{ns['df']['price'].mean():.6g}"
    live.store.close()
    reopened = Session("t", live.settings, store=Store(store_path))
    assert mean in reopened.context.pins[0].message.content
    assert len(reopened.context.rounds) == 2
    reopened.store.close()


def test_frozen_pin_keeps_its_rendering(live, ns, sim):
    made = pin(live, "df", ns, frozen=True)
    ns["df"] = ns["df"].head(3)
    turn = live.ask("Anything new?")
    assert turn.notices == []
    assert sent(sim)[1]["content"] == made.message.content
    assert "10,000 rows" in sent(sim)[1]["content"]


def test_vanished_variable_keeps_its_last_rendering_with_one_notice(live, ns, sim):
    made = pin(live, "df", ns)
    del ns["df"]
    turn = live.ask("Still there?")
    assert turn.notices == ["Pin 'df': variable df no longer exists; kept its last rendering."]
    assert sent(sim)[1]["content"] == made.message.content
    assert live.ask("And now?").notices == []


def test_expression_pin_and_series(live, ns, sim):
    pin(live, "df.head(100)", ns, name="top")
    pin(live, "df['price']", ns, name="prices")
    live.ask("Compare.")
    top, prices = blocks(sim)
    assert 'name="top" kind="dataframe" source="expression df.head(100)"' in top
    assert "shape: 100 rows × 3 columns" in top
    assert 'kind="series"' in prices and "Series 'price', dtype float64, length 10,000" in prices


def test_a_small_budget_shows_fewer_rows_and_says_so(ns, session):
    small = pin(session, "df", ns, max_tokens=600, name="small")
    big = pin(session, "df", ns, name="big")
    assert small.tokens <= 650 < big.tokens
    text = small.message.content
    shown = int(text.split("rows: showing ")[1].split(" ")[0])
    assert 0 < shown < 50 and f"showing {shown} of 10,000" in text


def test_wide_frame_lists_what_it_left_out(session):
    wide = pd.DataFrame(np.zeros((5, 400)), columns=[f"feature_{i}" for i in range(400)])
    text = pin(session, "wide", {"wide": wide}).message.content
    assert "more columns not listed" in text
    assert "first 50 of 400 columns" in text
    assert session.context.pins[0].tokens <= 4100


# -- files -------------------------------------------------------------------------------
def test_csv_tsv_and_parquet_files_are_rendered_as_dataframes(live, ns, tmp_path, sim):
    ns["df"].to_csv(tmp_path / "sales.csv", index=False)
    ns["df"].to_csv(tmp_path / "sales.tsv", sep="\t", index=False)
    ns["df"].to_parquet(tmp_path / "sales.parquet")
    for name in ("sales.csv", "sales.tsv", "sales.parquet"):
        pin(live, name, {}, cwd=str(tmp_path))
    live.ask("Which file is biggest?")
    got = blocks(sim, "dataframe")
    assert len(got) == 3
    for text, name in zip(got, ("sales.csv", "sales.tsv", "sales.parquet"), strict=True):
        assert f'name="{name}"' in text and f'source="file {tmp_path / name}"' in text
        assert "shape: 10,000 rows × 3 columns" in text and "city:" in text


FRENCH = ("Le café crème coûte quatre euros. Où est la bibliothèque? Nous étions très "
          "fatigués après la fête, mais la soirée était agréable et élégante. ") * 4


def test_json_notebook_and_text_files(live, tmp_path, sim):
    (tmp_path / "config.json").write_text('{"lr": 0.001, "layers": [64, 32]}')
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Cleaning"), nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, tmp_path / "clean.ipynb")
    (tmp_path / "notes.txt").write_bytes(FRENCH.encode("cp1252"))
    (tmp_path / "train.py").write_text("def train():\n    return 42\n")
    for name in ("config.json", "clean.ipynb", "notes.txt", "train.py"):
        pin(live, name, {}, cwd=str(tmp_path))
    live.ask("Summarise the pinned files.")
    json_block, nb_block, txt_block, code_block = blocks(sim)
    assert 'kind="json"' in json_block and '"lr": 0.001,\n  "layers": [' in json_block
    assert 'kind="notebook"' in nb_block
    assert "--- cell 1 [markdown] ---\n# Cleaning" in nb_block
    assert "--- cell 2 [code] ---\nx = 1" in nb_block
    assert 'kind="text"' in txt_block and "Le café crème coûte" in txt_block
    assert "not UTF-8" in txt_block or "latin-1" in txt_block
    assert 'kind="code"' in code_block and "def train():\n    return 42" in code_block


def test_long_text_file_is_truncated_and_says_so(session, tmp_path):
    (tmp_path / "app.log").write_text("".join(f"line {i} of the log\n" for i in range(20_000)))
    made = pin(session, "app.log", {}, cwd=str(tmp_path), max_tokens=300)
    assert made.tokens <= 340
    assert "[truncated to the pin's max of 300 tokens: showing lines 1–" in made.message.content
    assert "of 20,000; pin with --max-tokens N to see more]" in made.message.content


def test_live_file_pin_is_re_read_only_when_it_changed(live, tmp_path, sim):
    path = tmp_path / "todo.md"
    path.write_text("- write tests\n")
    made = pin(live, "todo.md", {}, cwd=str(tmp_path))
    assert live.ask("What is left?").notices == []
    assert live.context.pins[0].message is made.message
    path.write_text("- write tests\n- ship it\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    turn = live.ask("And now?")
    assert [n for n in turn.notices if "changed" in n] == [
        f"Pin 'todo.md' changed ({made.tokens:,} → {live.context.pins[0].tokens:,} tokens); "
        "re-sent."]
    assert "- ship it" in sent(sim)[1]["content"]


def simple_pdf(text: str) -> bytes:
    stream = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET".encode()
    return (b"%PDF-1.4\n1 0 obj\n<< /Length " + str(len(stream)).encode() + b" >>\nstream\n"
            + stream + b"\nendstream\nendobj\ntrailer\n<< >>\n%%EOF\n")


def test_pdf_is_extracted_through_the_files_api(live, tmp_path, sim):
    (tmp_path / "report.pdf").write_bytes(simple_pdf("Quarterly revenue was 42 million"))
    made = pin(live, "report.pdf", {}, cwd=str(tmp_path))
    assert made.kind == "document"
    uploads = [r for r in sim.requests if r["path"].endswith("/files") and r["method"] == "POST"]
    assert uploads, "the PDF went through POST /v1/files"
    live.ask("What was the revenue?")
    assert "Quarterly revenue was 42 million" in blocks(sim, "document")[0]


def image_part(sim) -> tuple[dict, bytes]:
    message = next(m for m in sent(sim) if isinstance(m["content"], list))
    url = message["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    return message, base64.b64decode(url.split(",", 1)[1])


def test_png_file_is_sent_as_an_image_scaled_down(live, tmp_path, sim):
    Image.new("RGB", (2048, 1024), (200, 30, 30)).save(tmp_path / "plot.png")
    made = pin(live, "plot.png", {}, cwd=str(tmp_path))
    assert made.kind == "image"
    live.ask("What colour is the image?")
    message, data = image_part(sim)
    assert message["role"] == "user"
    assert message["content"][0]["type"] == "text"
    assert 'name="plot.png" kind="image"' in message["content"][0]["text"]
    assert Image.open(io.BytesIO(data)).size == (1024, 512)
    assert "scaled down from 2048×1024" in message["content"][0]["text"]


def test_matplotlib_figure_and_pil_image(live, sim):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 2, 3], [3, 1, 2])
    ns = {"fig": fig, "img": Image.new("L", (64, 64), 128)}
    live.refresh_pins = refresher(lambda: ns)
    pin(live, "fig", ns)
    pin(live, "img", ns)
    live.ask("Describe the chart.")
    second = live.ask("Again.")
    plt.close(fig)
    assert second.notices == [], "an unchanged figure renders to the same bytes"
    images = [m for m in sent(sim) if isinstance(m["content"], list)]
    assert len(images) == 2
    assert 'source="variable fig"' in images[0]["content"][0]["text"]
    size = Image.open(io.BytesIO(base64.b64decode(
        images[0]["content"][1]["image_url"]["url"].split(",", 1)[1]))).size
    assert size == (400, 300)


# -- other variables ---------------------------------------------------------------------
def helper_function(x: int) -> int:
    """Doubles x."""
    return 2 * x


def test_functions_classes_and_bounded_reprs(session):
    assert "return 2 * x" in pin(session, "helper_function",
                                 {"helper_function": helper_function}).message.content
    big = pin(session, "big", {"big": list(range(1_000_000))})
    assert big.kind == "repr" and "type: list, length 1,000,000" in big.message.content
    assert "[bounded repr: the first items of 1,000,000]" in big.message.content
    assert big.tokens < 1000
    text = pin(session, "text", {"text": "word " * 10_000}, max_tokens=200).message.content
    assert "[truncated to the pin's max of 200 tokens" in text


# -- bad input ----------------------------------------------------------------------------
class BrokenRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr for you")


class HugeRepr:
    def __repr__(self) -> str:
        return "x" * 5_000_000


@pytest.mark.parametrize("target,message", [
    ("undefined_thing", "nothing named 'undefined_thing' to pin"),
    ("missing.csv", "no such file: "),
    ("data/missing.txt", "no such file: "),
    ("blob.bin", "is a binary file"),
    ("archive.dat", "is a binary file"),
    ("broken", "cannot pin broken: its repr raised ValueError: no repr for you"),
    ("huge", "its repr is 5,000,000 characters"),
    ("1 +", "no such file"),
])
def test_bad_input_is_one_line_and_changes_nothing(session, sim, tmp_path, target, message):
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02binary" * 100)
    # Compressed data has no NUL bytes to give it away, and no code page fits it.
    (tmp_path / "archive.dat").write_bytes(bytes(range(1, 256)) * 20)
    pin_text(session, "keep", "Something pinned before.")
    before, requests = session.context, len(sim.requests)
    with pytest.raises(SessionError) as err:
        pin(session, target, {"broken": BrokenRepr(), "huge": HugeRepr()}, cwd=str(tmp_path))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert session.context is before
    assert [r["path"] for r in sim.requests[requests:] if "chat" in r["path"]] == []


def test_a_pin_over_the_total_budget_is_refused(session, ns):
    session.settings.pin_budget = 1000
    with pytest.raises(SessionError, match="over the pin budget"):
        pin(session, "df", ns, max_tokens=3000)
    assert session.context.pins == ()


# -- lifecycle ----------------------------------------------------------------------------
def test_pins_survive_reset_rollback_truncate_and_compress(live, ns, sim, store_path):
    made = pin(live, "df", ns)
    live.ask("Round one: the mean price is about 100.")
    live.snapshot("with df")
    live.unpin("df")
    pin_text(live, "later", "Added after the snapshot.")
    live.rollback("with df")
    assert [p.name for p in live.context.pins] == ["df"]
    assert live.context.pins[0].message is made.message
    for i in range(4):
        live.ask(f"Round {i + 2}: note number {i}.")
    live.truncate(keep_rounds=3)
    live.compress(keep_rounds=1)
    live.reset()
    assert [p.name for p in live.context.pins] == ["df"]
    live.ask("After all that?")
    assert sent(sim)[1]["content"] == made.message.content
    live.store.close()
    reopened = Session("t", live.settings, store=Store(store_path))
    assert [(p.name, p.kind, p.source) for p in reopened.context.pins] == [
        ("df", "dataframe", "variable df")]
    assert reopened.context.pins[0].message.content == made.message.content
    reopened.store.close()


def test_recall_pin_uses_the_same_block(live, sim):
    live.ask("The launch code is tangerine.")
    live.ask("Another round.")
    live.truncate(keep_rounds=0)
    live.recall("tangerine", pin=True)
    text = live.context.pins[0].message.content
    assert text.startswith('<pinned name="recall: tangerine" kind="recall"')


# -- magics -------------------------------------------------------------------------------
def magic(shell, line: str) -> str:
    with capture_output() as out:
        shell.run_line_magic("kimi", line)
    return out.stdout + "".join(o.data.get("text/plain", "") for o in out.outputs)


def test_pin_magics_through_a_real_shell(ipython, sim, ns):
    ipython.user_ns["df"] = ns["df"]
    assert "Pinned 'df' (dataframe, ~" in magic(ipython, "pin df")
    with capture_output() as out:
        ipython.run_cell_magic("kimi_pin", "conventions", "Answer in French.\n")
    assert "Pinned 'conventions' (text" in out.stdout
    listing = magic(ipython, "pins")
    assert "df" in listing and "conventions" in listing and "dataframe" in listing
    with capture_output():
        ipython.run_cell_magic("kimi", "--pin df.describe() --no-stream", "Summarise.")
    names = [b.split('"')[1] for b in blocks(sim)]
    assert names == ["df", "conventions", "df.describe()"]
    assert "Unpinned df." in magic(ipython, "unpin df")
    with capture_output():
        ipython.run_cell_magic("kimi", "--no-stream", "Again.")
    assert [b.split('"')[1] for b in blocks(sim)] == ["conventions", "df.describe()"]
    ipython.user_ns["df"] = ns["df"].head(10)
    ipython.run_line_magic("kimi", "pin df --as small --frozen --max-tokens 500")
    assert ipython.magics_manager.registry["KimiMagic"].session.context.pins[-1].frozen
    with pytest.raises(UsageError, match="nothing named 'nope' to pin"):
        ipython.run_line_magic("kimi", "pin nope")
    ipython.run_cell("def clean(frame):\n    return frame.dropna()\n")
    assert "Pinned 'clean' (function" in magic(ipython, "pin clean")
    session = ipython.magics_manager.registry["KimiMagic"].session
    assert "return frame.dropna()" in session.context.pin("clean").message.content


def test_image_pins_respect_the_configured_max_side(session, monkeypatch):
    monkeypatch.setattr(pins_module, "IMAGE_MAX_SIDE", 100)
    made = pin(session, "img", {"img": Image.new("RGB", (400, 200))})
    data = base64.b64decode(made.message.content[1]["image_url"]["url"].split(",", 1)[1])
    assert Image.open(io.BytesIO(data)).size == (100, 50)


def test_pin_path_relative_to_working_directory(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("readme.md").write_text("# Project\n")
    made = pin(session, "readme.md", {})
    assert made.source == f"file {tmp_path / 'readme.md'}"
