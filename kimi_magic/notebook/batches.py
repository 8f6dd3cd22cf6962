"""``%kimi batches``: list the Batch API jobs in the store, or collect one (resumes after a
kernel restart)."""

from __future__ import annotations

import time
from typing import Any

from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display

from ..batch import collect, find, jobs
from .display import status_bundle, table_bundle


def collect_magic(magic: Any, rest: str) -> Any:
    """``%kimi batches`` lists batches; ``%kimi batches collect [ID] [--out VAR]`` resumes."""
    parser = MagicArgumentParser(prog="%kimi batches", add_help=False)
    parser.add_argument("action", nargs="?", default="list", choices=["list", "collect"])
    parser.add_argument("id", nargs="?")
    parser.add_argument("--out")
    args = parser.parse_argstring(rest)
    store = magic.sessions.store
    if args.action == "list":
        known = jobs(store)
        if not known:
            print("No batches yet: %%kimi --map VAR --batch submits one.")
            return None
        rows = [[j.id, j.session, j.model, j.items, j.status,
                 "yes" if j.collected else "no",
                 f"${j.cost:.4f}" if j.cost is not None else "",
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(j.created))] for j in known]
        display(table_bundle(["batch", "session", "model", "items", "status", "collected",
                              "cost", "created"], rows, "Batches"), raw=True)
        return None
    job = find(store, args.id)
    session = magic.sessions.get(job.session)
    results, summary = collect(session, job.id, progress=True)
    display(status_bundle(summary.line(), summary.notices), raw=True)
    out = args.out or job.out
    if out:
        magic.shell.user_ns[out] = results
        print(f"Results of {job.id} are in {out}.")
        return None
    return results
