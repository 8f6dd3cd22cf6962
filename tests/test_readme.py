"""Every code block of the README runs as printed (the two shell commands aside, which CI runs).

Blocks that use magics run, in order, in one real ``InteractiveShell`` talking to the
simulator; the plain-Python block runs in a fresh interpreter with no IPython imported, twice,
against one store, because a user runs an example more than once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in FENCE.findall((ROOT / "README.md").read_text())]


def notebook_blocks() -> list[str]:
    return [body for lang, body in blocks()
            if lang in ("", "python", "ipython") and body.lstrip().startswith("%")]


def python_blocks() -> list[str]:
    return [body for lang, body in blocks()
            if lang == "python" and not body.lstrip().startswith("%")]


def test_the_readme_has_both_kinds_of_example():
    assert notebook_blocks() and python_blocks()


def test_notebook_examples_run_as_printed(ipython, sim):
    for body in notebook_blocks():
        result = ipython.run_cell(body)
        assert result.success, f"README block failed:\n{body}\n{result.error_in_exec!r}"
    assert any(r["path"].endswith("/chat/completions") for r in sim.requests)


@pytest.mark.parametrize("body", python_blocks())
def test_plain_python_examples_run_twice_without_ipython(body, sim, tmp_path):
    code = ("import sys\n" + body + "\nassert 'IPython' not in sys.modules, 'imported IPython'\n")
    env = {**os.environ, "MOONSHOT_API_KEY": "sk-readme-test-0123456789",
           "MOONSHOT_BASE_URL": sim.url, "KIMI_MAGIC_STORE": str(tmp_path / "store.sqlite")}
    for attempt in (1, 2):
        run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"run {attempt} of:\n{body}\n{run.stdout}{run.stderr}"


def layout() -> str:
    """The README's layout block: the tree as the README tells it."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout")
    return FENCE.search(text, start).group(2)


def test_the_layout_section_names_every_module_and_folder():
    told = layout()
    package = ROOT / "kimi_magic"
    missing = [str(p.relative_to(ROOT)) for p in sorted(package.rglob("*.py"))
               if p.name != "__init__.py" and p.name not in told]
    folders = {p.parent for p in package.rglob("*.py")} - {package}
    missing += [f"{f.relative_to(package)}/" for f in sorted(folders)
                if f"{f.name}/" not in told]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    top = {t.split("/")[0] for t in tracked if "/" in t and not t.startswith(".")}
    missing += [f"{d}/" for d in sorted(top) if f"{d}/" not in told]
    assert missing == [], "the README's layout leaves these out"
    named = set(re.findall(r"[\w]+\.py\b", told))
    on_disk = {p.name for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    assert sorted(named - on_disk) == [], "the README's layout names files that do not exist"
