"""The README's quickstart: the notebook runs end to end in a real kernel (nbclient)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.kernel


def test_quickstart_runs_end_to_end_on_the_simulator(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MOONSHOT_API_KEY", "MOONSHOT_BASE_URL", "KIMI_MAGIC_STORE")}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "quickstart.py"),
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "No MOONSHOT_API_KEY set: using the bundled Kimi simulator" in done.stdout
    # The first thing a new user reads is the run, not a kernel warning about TCP traffic.
    assert "WARNING" not in done.stderr and "without encryption" not in done.stderr, done.stderr
    nb = nbformat.read(tmp_path / "quickstart.executed.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                     for o in outputs)
    assert "412 sold" in text, "the second cell remembers the first"
    assert "Pinned 'sales' (dataframe" in text
    assert "Rolled back to snapshot #1 'before-experiment'" in text
    assert "Compressed 2 rounds" in text and "Recalled for 'almond croissant'" in text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for o in outputs), "the dashboard is displayed"
    assert (tmp_path / "quickstart_conversation.md").read_text().count("almond croissant")
    assert "Kimi wants to run" in text and "sales.revenue.sum()" in text
    assert "run_python" in text and "5083." in text, "the agent ran code and saw its value"
