"""Write notebooks/quickstart.ipynb (outputs stripped) from the cells below.

The notebook is generated so that its source stays reviewable here; run this after editing.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# kimi_magic quickstart

A notebook is a good place for long work with Kimi: the kernel keeps the conversation, you pin
data into it, snapshot it, roll it back, compress it and recall what was compressed away — and
you always see what the context holds and what it costs.

This notebook talks to Kimi when `MOONSHOT_API_KEY` is set, and otherwise to the local Kimi
simulator bundled with kimi_magic (replies are then simulated, but every request, token count,
cache hit and cost is computed the real way)."""),
    ("code", """import os

from kimi_magic.simulator import Simulator

if not os.environ.get("MOONSHOT_API_KEY"):
    simulator = Simulator(port=0).start()
    os.environ["MOONSHOT_BASE_URL"] = simulator.url
    os.environ["MOONSHOT_API_KEY"] = "sk-local-simulator"
    print(f"No MOONSHOT_API_KEY set: using the bundled Kimi simulator at {simulator.url}")
else:
    print("Using Kimi at", os.environ.get("MOONSHOT_BASE_URL", "https://api.moonshot.ai/v1"))"""),
    ("code", "%load_ext kimi_magic"),
    ("md", "## A conversation the kernel keeps\nEach `%%kimi` cell sends the whole context; "
           "the reply streams in, then one line says what it cost."),
    ("code", """%%kimi
I run a bakery. Last week our best seller was the almond croissant: 412 sold at $3.80 each.
The oven firmware version is OVN-2.4.1 and the supplier invoice is INV-20931."""),
    ("code", """%%kimi --out answer
What was our best seller last week, and how many did we sell?"""),
    ("code", "print(answer)"),
    ("md", "## Pin data into the context\nPinned data sits right after the system prompt, "
           "re-rendered before each request only if it changed (so the prompt cache keeps "
           "hitting)."),
    ("code", """import pandas as pd

sales = pd.DataFrame({
    "day": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
    "croissants": [48, 52, 61, 55, 70, 74, 52],
    "revenue": [612.5, 640.0, 731.2, 688.9, 845.0, 910.4, 655.3],
})
%kimi pin sales"""),
    ("code", """%%kimi
Which day in the pinned `sales` table had the highest revenue?"""),
    ("md", "## Snapshot, experiment, roll back"),
    ("code", "%kimi snapshot before-experiment"),
    ("code", """%%kimi
Brainstorm a wild idea: a croissant subscription. Our sales table has shape {sales.shape}."""),
    ("code", "%kimi rollback before-experiment"),
    ("code", "%kimi snapshots"),
    ("md", "## Compress without losing facts, and recall what was compressed away\n"
           "The summary is checked against the original rounds: every number, identifier "
           "and path it lacks is restored verbatim."),
    ("code", "%kimi compress --keep-rounds 1"),
    ("code", "%kimi recall almond croissant"),
    ("code", "%kimi status"),
    ("md", "## Agent mode: Kimi looks at the notebook\n"
           "With `--agent` the model may list and inspect your variables, read recent cells, "
           "propose a cell, and run code in this kernel — each run shows the code and asks "
           "`Run this code? [y/N]` first (`--yes` approves this one cell; here it keeps the "
           "notebook running unattended). Secrets in what it sees become `[hidden]`. Every "
           "prompt also carries a short note of the cells you ran since your last turn."),
    ("code", """best_day = sales.loc[sales.revenue.idxmax(), "day"]"""),
    ("code", """%%kimi --agent --yes
Use run_python to compute "sales.revenue.sum()", then tell me the week's total revenue."""),
    ("md", "## The dashboard\nToken usage, cost, cache state, pins and snapshot history, "
           "with buttons for snapshot, compress and rollback."),
    ("code", "%kimi widget"),
    ("code", "%kimi export quickstart_conversation.md"),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                for kind, src in CELLS]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"quickstart-{i:02d}"
    return nb


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
    nbformat.write(build(), path)
    print(f"wrote {path}")
