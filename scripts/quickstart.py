"""Run notebooks/quickstart.ipynb end to end in a real kernel (nbclient), headless.

Uses Kimi when MOONSHOT_API_KEY is set, else the bundled simulator (the notebook says which).
The executed copy and anything it exports land in ./out/; the conversation is stored in a
throw-away store there unless KIMI_MAGIC_STORE is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from traitlets.config import Config

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out",
                        help="where the executed copy and exports go (default: ./out)")
    out_dir = parser.parse_args(argv).out.resolve()
    source = ROOT / "notebooks" / "quickstart.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    if "KIMI_MAGIC_STORE" not in os.environ:
        # A throw-away store, fresh each run, so the quickstart always starts from nothing.
        store = out_dir / "quickstart-store.sqlite"
        for old in out_dir.glob(store.name + "*"):
            old.unlink()
        os.environ["KIMI_MAGIC_STORE"] = str(store)
    nb = nbformat.read(source, as_version=4)
    # The kernel talks over local Unix sockets, not TCP: a TCP kernel prints a warning about
    # unencrypted traffic as the first line a new user sees, for a run that never leaves
    # this machine. (A short temporary directory: socket paths have a length limit.)
    sockets = tempfile.TemporaryDirectory(prefix="kimi-qs-")
    ipc = Config({"KernelManager": {"transport": "ipc",
                                    "ip": os.path.join(sockets.name, "kernel")}})
    client = NotebookClient(nb, timeout=600, kernel_name="python3", config=ipc,
                            resources={"metadata": {"path": str(out_dir)}})
    target = out_dir / "quickstart.executed.ipynb"
    try:
        with sockets:
            client.execute()
    except CellExecutionError as err:
        nbformat.write(nb, target)
        print(f"The quickstart failed; partial output in {target}\n{err}", file=sys.stderr)
        return 1
    nbformat.write(nb, target)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "stdout" and "simulator" in output.get("text", ""):
                print(output["text"].strip())
    print(f"Quickstart ran end to end: {len(nb.cells)} cells. Executed copy: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
