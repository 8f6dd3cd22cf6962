"""The package as users install it: a wheel built from the tree, installed (not editable) in a
fresh virtual environment, loads as an extension and answers a ``%%kimi`` cell.

The editable install the suite runs from would hide a module or data file missing from the
wheel; this test runs from a directory outside the tree, so only the wheel can be imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

from kimi_magic.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the built wheel installed and the suite's packages visible."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    # Build from a clean copy: setuptools reuses a build/ folder left in the tree, which
    # could put a module that no longer exists (or hide one that is missing) in the wheel.
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "out", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis", "*.sqlite", "*.sqlite-*"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(dist), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("kimi_magic-*.whl")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    # The dependencies come from the suite's own environment (no network needed); a path
    # added by a .pth line is not a site directory, so the editable install's own .pth hook
    # there is not run and cannot shadow the wheel.
    (site / "suite-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def test_the_built_wheel_loads_and_answers_a_cell(wheel_env: Path, tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import kimi_magic, pathlib, sys
        from IPython.core.interactiveshell import InteractiveShell
        assert "site-packages" in kimi_magic.__file__, kimi_magic.__file__
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "kimi_magic")
        result = shell.run_cell_magic("kimi", "--no-stream", "Say hello.")
        shell.run_line_magic("kimi", "status")
        print("FILE", kimi_magic.__file__)
    """)
    with Simulator(port=0) as sim:
        env = {**os.environ, "MOONSHOT_API_KEY": "sk-wheel-test-0123456789",
               "MOONSHOT_BASE_URL": sim.url, "KIMI_MAGIC_STORE": str(tmp_path / "s.sqlite"),
               "PYTHONPATH": ""}
        run = subprocess.run([str(wheel_env), "-c", script], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        requests = sim.requests
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FILE " + str(ROOT) not in run.stdout
    assert "Kimi session" in run.stdout
    chats = [r for r in requests if r["path"].endswith("/chat/completions")]
    assert chats and chats[-1]["body"]["messages"][-1] == {"role": "user", "content": "Say hello."}
