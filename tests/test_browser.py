"""The dashboard in a real browser: JupyterLab in headless Chromium, driven by Playwright.

The test process runs the simulator and starts JupyterLab on 127.0.0.1 with every Jupyter
directory in a temp dir; the notebook runs real ``%%kimi`` cells, shows ``%kimi widget``, and
the test clicks Compress and Rollback as a user would, reading the token count the widget shows.
A second notebook shows every kind of cell output (a reply with dollar amounts and real math,
a ``--json`` reply, ``%kimi status``, ``history``, ``cost`` and ``sessions``), and the test
reads them in the DOM in the light and dark themes, wide and in a 420 px window: our figures
are never typeset, math is, nothing scrolls sideways, text contrasts with its background.
It saves ``dashboard.png``, ``dashboard-dark.png``, ``outputs.png``, ``outputs-dark.png`` and
the outputs at 420 px (``outputs-420.png``, ``outputs-dark-420.png``) in ``out/`` (plus the
narrow dashboard); with ``KIMI_MAGIC_UPDATE_DOCS=1`` it refreshes the copies in ``docs/``.

Needs ``/usr/bin/chromium`` (Debian's ``chromium``) and an emoji font (``fonts-noto-color-emoji``):
skipped without them unless ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from kimi_magic.simulator import Simulator

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
# Screenshots go to out/ (ignored by git); KIMI_MAGIC_UPDATE_DOCS=1 refreshes the README's.
OUT = ROOT / "out"
DOCS = ROOT / "docs" if os.environ.get("KIMI_MAGIC_UPDATE_DOCS") == "1" else OUT
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

TOPICS = [
    ("We are training a small text classifier on the support-ticket corpus (42,180 tickets, "
     "7 classes). The baseline is logistic regression on TF-IDF features with macro-F1 0.71."),
    ("The first fine-tuning run used learning rate 3e-5, batch size 32 and 3 epochs on one "
     "GPU; macro-F1 rose to 0.78 but the 'billing' class stayed at 0.52 recall."),
    ("Error analysis: most billing misses are refund requests phrased as complaints. We agreed "
     "to add 1,200 relabelled examples and to keep the validation split fixed at seed 1234."),
    ("The second run with the relabelled data reached macro-F1 0.83; billing recall 0.74. "
     "Training took 41 minutes; the checkpoint is runs/ft-2/best.pt."),
    ("Open items: calibrate probabilities with temperature scaling, write the model card, and "
     "compare against the distilled model that serves in 18 ms per ticket."),
    ("Summarise where we are and what the next two steps should be, in three bullet points."),
]


#: Prose without numbers or identifiers: what a summary can shrink without losing facts.
BACKGROUND = " ".join([
    "Background for the record: the team prefers small, reviewable changes and keeps the",
    "experiment log tidy so that every result can be reproduced later by someone else.",
    "We discuss trade-offs openly, write down why a decision was taken, and revisit it when",
    "the evidence changes. Long explanations are welcome here, because the conversation is",
    "the place where the reasoning lives until it is written up properly in the report.",
] * 3)


def _need_browser() -> None:
    """Skip with a reason on a dev machine without Chromium; on CI a skip would hide a gap."""
    problems = []
    if not Path(CHROMIUM).exists():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    # Without an emoji font Chromium draws the 📌 pin marker as an empty box: the screenshots
    # would show what no user sees (Debian: fonts-noto-color-emoji, as .ci/run installs).
    fonts = subprocess.run(["fc-list", ":charset=1f4cc"], capture_output=True, text=True,
                           check=False).stdout if shutil.which("fc-list") else ""
    if not fonts.strip():
        problems.append("a font with the 📌 glyph is missing (apt-get install "
                        "fonts-noto-color-emoji)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is missing (pip install playwright)")
    if problems and os.environ.get("CI") != "true":
        pytest.skip("browser test needs " + " and ".join(problems))
    assert not problems, "CI=true: the browser test must run, but " + "; ".join(problems)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cells = ["%load_ext kimi_magic",
             "%%kimi_pin conventions\nAnswer in short sentences. Use SI units. "
             "Name every file you touch."]
    for i, topic in enumerate(TOPICS):
        cells.append(f"%%kimi\n{topic}\n\n{BACKGROUND}")
        if i == 2:
            cells.append("%kimi snapshot plan-agreed")
    cells.append("%kimi widget")
    _write(nb, cells, path)


def _write(nb: nbformat.NotebookNode, cells: list[str], path: Path) -> None:
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


#: A fact with dollar amounts and real math in one sentence: the reply that recalls it must
#: show the dollars as typed and typeset only the math.
REVENUE = "Revenue was $36,050 at S01 and $44,939 at S02, and the error grows as $x^2$."


def _outputs_notebook(path: Path) -> None:
    """Every kind of cell output, in its own session (the store is shared with test.ipynb)."""
    _write(nbformat.v4.new_notebook(), [
        "%load_ext kimi_magic",
        "%kimi use outputs",
        "%%kimi_pin conventions\nAnswer in short sentences. Use SI units.",
        f"%%kimi\n{REVENUE}",
        "%%kimi\nWhat was the revenue?",
        "%%kimi --json\nList three colours as JSON",
        "%kimi status",
        "%kimi history",
        "%kimi cost",
        "%kimi sessions",
    ], path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """JupyterLab on a free local port with a token, its own dirs, and the simulator."""
    _need_browser()
    tmp = tmp_path_factory.mktemp("lab")
    root, config, data, runtime = (tmp / n for n in ("root", "config", "data", "runtime"))
    for d in (root, config, data, runtime):
        d.mkdir()
    # No news toast over the widget, and no dialog asking which kernel to start.
    user = config / "lab" / "user-settings" / "@jupyterlab"
    for plugin, values in (("apputils-extension/notification",
                            {"fetchNews": "false", "checkForUpdates": False}),
                           # Every cell attached and laid out, so the test can measure it.
                           ("notebook-extension/tracker", {"autoStartDefaultKernel": True,
                                                           "windowingMode": "none"})):
        path = user / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    _notebook(root / "test.ipynb")
    _outputs_notebook(root / "outputs.ipynb")
    sim = Simulator(port=0).start()
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "MOONSHOT_API_KEY": "sk-browser-test", "MOONSHOT_BASE_URL": sim.url,
           "KIMI_MAGIC_STORE": str(tmp / "store.sqlite"), "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_DATA_DIR": str(data), "JUPYTER_RUNTIME_DIR": str(runtime),
           "IPYTHONDIR": str(tmp / "ipython"), "JUPYTER_PLATFORM_DIRS": "1"}
    env.pop("MOONSHOT_MODEL", None)
    log = open(tmp / "lab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
         "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + (tmp / "lab.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        yield {"base": base, "token": token, "sim": sim, "log": tmp / "lab.log", "tmp": tmp}
    finally:
        _stop(proc)
        log.close()
        sim.stop()


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server we started; it shuts its kernels down on SIGTERM."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def page(lab: dict) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def _tokens(page) -> int:
    return int(page.locator(".kimi-dashboard .kimi-tokens").first.get_attribute("data-tokens"))


def _wait_idle(page) -> None:
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')


def _wait_kernel_connected(lab: dict, notebook: str, seconds: float = 60) -> None:
    """Until ``notebook``'s kernel websocket is up: Run All before that runs nothing."""
    deadline = time.monotonic() + seconds
    kernels: object = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{lab['base']}/api/sessions?token={lab['token']}") as r:
                kernels = [s["kernel"] for s in json.load(r) if s["path"] == notebook]
        except urllib.error.HTTPError as err:
            # jupyter_server answers 500 while a kernel is half-started (its last_activity is
            # still None): not ready yet, ask again.
            kernels = f"HTTP {err.code}"
            time.sleep(0.3)
            continue
        if any(k["connections"] > 0 and k["execution_state"] == "idle" for k in kernels):
            return
        time.sleep(0.3)
    raise AssertionError(f"no kernel connected within {seconds}s: {kernels}")


def _menu(page, *path: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=path[0]).first.click()
    for item in path[1:]:
        page.locator(".lm-Menu:visible .lm-Menu-itemLabel").get_by_text(item, exact=True).click()


def _run(scenario, lab: dict, page, shot: str) -> None:
    """Run ``scenario``; on failure keep a screenshot of the page (in ``out/``) and the
    server log's tail for whoever reads it."""
    try:
        scenario(lab, page)
    except BaseException:
        OUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT / shot), full_page=True)
        sys.stderr.write(f"\nbrowser test failed; page at {OUT / shot}; lab log tail:\n"
                         + lab["log"].read_text(errors="replace")[-4000:] + "\n")
        raise


def test_dashboard_in_jupyterlab_compress_rollback_and_themes(lab: dict, page) -> None:
    _run(_scenario, lab, page, "failure.png")


def _scenario(lab: dict, page) -> None:
    from playwright.sync_api import expect

    page.goto(f"{lab['base']}/lab/tree/test.ipynb?token={lab['token']}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
    _wait_kernel_connected(lab, "test.ipynb")
    _wait_idle(page)
    select = page.locator(".jp-Dialog .jp-mod-accept", has_text="Select")
    if select.count():  # older Labs may still ask which kernel to start
        select.click()
        _wait_idle(page)

    _menu(page, "Run", "Run All Cells")
    dashboard = page.locator(".kimi-dashboard")
    dashboard.wait_for(state="visible", timeout=90_000)
    page.wait_for_selector(".kimi-dashboard .kimi-tokens")
    _wait_idle(page)
    page.wait_for_timeout(500)  # let the last widget messages land
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert "Traceback" not in " ".join(errors.all_inner_texts())

    before = _tokens(page)
    rounds_before = len(TOPICS)
    assert before > 1000
    assert f"{rounds_before} rounds" in dashboard.locator(".kimi-context").inner_text()
    assert dashboard.locator('.kimi-layer[data-layer="pins"]').count() == 1
    assert "plan-agreed" in dashboard.inner_text()

    dashboard.locator("button.kimi-compress").click()
    page.wait_for_function(
        f"() => +document.querySelector('.kimi-dashboard .kimi-tokens').dataset.tokens < {before}")
    compressed = _tokens(page)
    expect(dashboard.locator(".kimi-status")).to_contain_text("Compressed")
    assert dashboard.locator('.kimi-layer[data-layer="summary"]').count() == 1

    dashboard.locator("button.kimi-rollback").click()
    page.wait_for_function(
        "() => +document.querySelector('.kimi-dashboard .kimi-tokens').dataset.tokens > "
        f"{compressed}")
    assert _tokens(page) >= before * 0.9
    assert f"{rounds_before} rounds" in dashboard.locator(".kimi-context").inner_text()
    expect(dashboard.locator(".kimi-status")).to_contain_text("Rolled back")
    assert dashboard.locator('.kimi-layer[data-layer="summary"]').count() == 0

    DOCS.mkdir(exist_ok=True)
    dashboard.scroll_into_view_if_needed()
    DOCS.mkdir(exist_ok=True)
    dashboard.screenshot(path=str(DOCS / "dashboard.png"))

    # A narrow column (a split view, a side panel) must not overflow sideways.
    dashboard.evaluate("el => { const out = el.closest('.jp-OutputArea-output');"
                       " out.style.flex = '0 0 380px'; out.style.width = '380px'; }")
    page.wait_for_timeout(300)
    overflow = dashboard.evaluate("el => el.scrollWidth - el.clientWidth")
    assert overflow <= 1, f"the dashboard overflows a 380px column by {overflow}px"
    dashboard.screenshot(path=str(lab["tmp"] / "narrow.png"))
    dashboard.evaluate("el => { const out = el.closest('.jp-OutputArea-output');"
                       " out.style.flex = ''; out.style.width = ''; }")

    _menu(page, "Settings", "Theme", "JupyterLab Dark")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
    page.wait_for_timeout(500)
    dashboard.scroll_into_view_if_needed()
    dashboard.screenshot(path=str(DOCS / "dashboard-dark.png"))
    text, card = dashboard.evaluate(
        "el => [getComputedStyle(el.querySelector('.kimi-summary')).color,"
        " getComputedStyle(el.querySelector('.kimi-summary > div:nth-child(3) > div'))"
        ".backgroundColor]")
    assert _brightness(text) > 150 > _brightness(card), \
        f"light text on dark cards in the dark theme, got {text} on {card}"

    # A 420 px window (file browser closed): snapshot and pin rows wrap, nothing is cut off.
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
    page.wait_for_selector("#jp-left-stack", state="hidden")
    page.set_viewport_size({"width": 420, "height": 1400})
    page.wait_for_timeout(600)
    narrow = dashboard.evaluate(READ_DASHBOARD)
    assert narrow["width"] < 400, f"the dashboard did not narrow: {narrow['width']}px"
    assert narrow["rows"] >= 2, f"no snapshot or pin rows: {narrow}"
    assert narrow["scroll"] <= 1, f"the dashboard scrolls sideways by {narrow['scroll']}px"
    dashboard.scroll_into_view_if_needed()
    OUT.mkdir(exist_ok=True)
    dashboard.screenshot(path=str(OUT / "dashboard-dark-420.png"))
    assert not narrow["clipped"], f"cut off at 420 px: {narrow['clipped']}"


#: The dashboard's layout: sideways scroll, and any row text or button cut off.
READ_DASHBOARD = """el => {
  const box = el.getBoundingClientRect();
  const rows = [...el.querySelectorAll('.kimi-row')];
  const clipped = [
    ...rows.flatMap(r => [...r.children])
      .filter(s => s.scrollWidth > s.clientWidth + 1).map(s => s.textContent),
    ...rows.map(r => r.getBoundingClientRect()).filter(r => r.right > box.right + 1)
      .map(r => `row ends at ${r.right} > ${box.right}`),
    ...[...el.querySelectorAll('button')].filter(b => b.offsetParent !== null)
      .map(b => [b, b.getBoundingClientRect()])
      .filter(([b, r]) => r.right > box.right + 1 || b.scrollWidth > b.clientWidth + 1)
      .map(([b]) => `button ${b.textContent}`)];
  return {width: Math.round(box.width), rows: rows.length, clipped,
          scroll: Math.max(el.scrollWidth - el.clientWidth,
            ...[...el.querySelectorAll('.widget-box')].map(b => b.scrollWidth - b.clientWidth))};
}"""


def _brightness(css_colour: str) -> float:
    r, g, b = (float(x) for x in re.findall(r"[\d.]+", css_colour)[:3])
    return (r + g + b) / 3


#: Reads every cell output of the visible notebook: what the user sees and how it is laid out.
READ_OUTPUTS = """() => {
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')]
    .find(p => p.offsetParent !== null);
  const outputs = [...panel.querySelectorAll('.jp-OutputArea-output')];
  const ours = [...panel.querySelectorAll('.kimi-table, .kimi-status, .mathjax_ignore')];
  const rgba = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const opacity = el => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= +getComputedStyle(e).opacity;
    return o;
  };
  // Brightness difference between a text and what is behind it, opacity included.
  const contrast = el => {
    const fg = rgba(getComputedStyle(el).color).slice(0, 3), bg = background(el);
    const o = opacity(el), mix = fg.map((v, i) => bg[i] + (v - bg[i]) * o);
    const b = c => (c[0] * 299 + c[1] * 587 + c[2] * 114) / 1000;
    return Math.abs(b(mix) - b(bg));
  };
  const texts = [...panel.querySelectorAll(
    '.kimi-table td, .kimi-table th, .kimi-table caption, .kimi-status, ' +
    '.jp-RenderedMarkdown p, .jp-RenderedMarkdown pre')];
  const right = panel.querySelector('.jp-Notebook').getBoundingClientRect().right;
  const codes = [...panel.querySelectorAll('.jp-RenderedMarkdown pre code')].map(c => {
    try { return {ok: true, value: JSON.parse(c.innerText)}; }
    catch (e) { return {ok: false, text: c.innerText}; }
  });
  return {
    text: outputs.map(o => o.innerText).join('\\n'),
    replies: outputs.filter(o => o.matches('.jp-RenderedMarkdown'))
      .map(o => ({text: o.innerText, math: o.querySelectorAll('mjx-container').length})),
    typesetInOurs: ours.reduce((n, el) => n + el.querySelectorAll('mjx-container').length, 0),
    tables: panel.querySelectorAll('.kimi-table').length,
    stacked: [...panel.querySelectorAll('.kimi-stack thead')]
      .map(t => getComputedStyle(t).display === 'none'),
    codes,
    overflows: [
      ...outputs.map(o => [o.scrollWidth - o.clientWidth, o.innerText.slice(0, 60)]),
      ...[...panel.querySelectorAll('.kimi-table, .kimi-status')]
        .map(t => [Math.round(t.getBoundingClientRect().right - right),
                   t.innerText.slice(0, 60)])].filter(([px]) => px > 1),
    page: document.scrollingElement.scrollWidth - window.innerWidth,
    notebookScroll: (el => el.scrollWidth - el.clientWidth)(
      panel.querySelector('.jp-WindowedPanel-outer') || panel.querySelector('.jp-Notebook')),
    width: Math.round(panel.querySelector('.jp-OutputArea-output').getBoundingClientRect().width),
    worstContrast: Math.min(...texts.map(contrast)),
    // A text squeezed into a sliver (a few letters a line) is as unreadable as one cut off.
    crushed: texts.filter(t => t.innerText.trim().length > 12
                          && t.getBoundingClientRect().width < 48).map(t => t.innerText),
  };
}"""


def test_cell_outputs_read_right_in_both_themes_and_at_420px(lab: dict, page) -> None:
    view = page.context.browser.new_page(viewport={"width": 900, "height": 2300})
    view.set_default_timeout(60_000)
    try:
        _run(_outputs_scenario, lab, view, "failure-outputs.png")
    finally:
        view.close()


def _outputs_scenario(lab: dict, page) -> None:
    page.set_viewport_size({"width": 900, "height": 2300})
    # A workspace of its own, so the dashboard notebook is not restored beside this one.
    page.goto(f"{lab['base']}/lab/workspaces/outputs/tree/outputs.ipynb?reset&token={lab['token']}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
    _wait_kernel_connected(lab, "outputs.ipynb")
    _wait_idle(page)
    # The notebook alone, as a user on a narrow screen has it: the file browser closed.
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
    page.wait_for_selector("#jp-left-stack", state="hidden")
    _menu(page, "Run", "Run All Cells")
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-NotebookPanel .kimi-table').length >= 4",
        timeout=90_000)
    _wait_idle(page)
    page.wait_for_timeout(800)  # MathJax typesets after the Markdown is attached
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert "Traceback" not in " ".join(errors.all_inner_texts())

    DOCS.mkdir(exist_ok=True)
    notebook = page.locator(".jp-NotebookPanel:visible .jp-Notebook")
    for theme, suffix in (("JupyterLab Light", ""), ("JupyterLab Dark", "-dark")):
        page.set_viewport_size({"width": 900, "height": 2300})
        _menu(page, "Settings", "Theme", theme)
        page.wait_for_function("dark => (document.body.dataset.jpThemeLight === 'false') === dark",
                               arg=bool(suffix))
        page.wait_for_timeout(500)
        page.mouse.move(0, 0)  # no cell toolbar from a hover in the screenshot
        seen = page.evaluate(READ_OUTPUTS)
        _check_outputs(seen, f"{theme}, 900 px window")
        assert seen["stacked"] == [False], f"{theme}: the sessions table stacked when wide"
        notebook.screenshot(path=str(DOCS / f"outputs{suffix}.png"))

        page.set_viewport_size({"width": 420, "height": 4200})
        page.wait_for_timeout(600)
        narrow = page.evaluate(READ_OUTPUTS)
        _check_outputs(narrow, f"{theme}, 420 px window")
        assert narrow["width"] < 400, f"the outputs did not narrow: {narrow['width']}px"
        # The six-column sessions table stacks its rows; the others wrap their cells.
        assert narrow["stacked"] == [True], f"{theme}: the sessions table did not stack"
        notebook.screenshot(path=str(DOCS / f"outputs{suffix}-420.png"))


def _check_outputs(seen: dict, where: str) -> None:
    text = seen["text"]
    # Our figures are never typeset: dollars read as typed in status, cost, sessions, history.
    assert seen["typesetInOurs"] == 0, f"{where}: MathJax typeset our figures"
    assert seen["tables"] >= 4, f"{where}: {seen['tables']} tables"
    assert re.search(r"\$\d+\.\d{4} total, last \$\d+\.\d{4}", text), f"{where}: {text}"
    assert "📌 conventions" in text, f"{where}: history lacks the pin"
    # The reply recalling the fact: currency as typed, the math typeset.
    (recall,) = [r for r in seen["replies"] if "You told me earlier" in r["text"]]
    assert "$36,050 at S01 and $44,939 at S02" in recall["text"], f"{where}: {recall['text']}"
    assert recall["math"] == 1, f"{where}: $x^2$ was not typeset once: {recall}"
    assert "x^2" not in recall["text"], f"{where}: the math shows as source: {recall['text']}"
    # The --json reply is a code block holding valid JSON.
    assert any(c["ok"] and isinstance(c["value"], dict | list) for c in seen["codes"]), \
        f"{where}: no JSON code block: {seen['codes']}"
    # Nothing scrolls sideways or sticks out of the notebook.
    assert not seen["overflows"], f"{where}: outputs overflow (px, text): {seen['overflows']}"
    assert seen["page"] <= 1 and seen["notebookScroll"] <= 1, \
        f"{where}: the page scrolls sideways ({seen['page']}, {seen['notebookScroll']}px)"
    assert not seen["crushed"], f"{where}: text squeezed into a sliver: {seen['crushed']}"
    # Readable: every text differs clearly from what is behind it (dark theme included).
    assert seen["worstContrast"] > 60, f"{where}: text barely differs from its background " \
                                       f"({seen['worstContrast']:.0f})"
