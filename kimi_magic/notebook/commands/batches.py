"""``%kimi batches``: list the Batch API jobs in the store, or collect one (resumes after a
kernel restart)."""

from __future__ import annotations

import time
from typing import Any

from IPython.display import display

from ...batch import collect, find, jobs
from ...core.errors import SessionError
from ..display import status_bundle, table_bundle
from .registry import arg, command


@command("batches",
         arg("action", nargs="?", default="list", choices=["list", "collect"],
             metavar="list|collect", help="list (the default) or collect."),
         arg("id", nargs="?", metavar="ID", help="With collect: the batch id (default: the "
             "latest uncollected one)."),
         arg("--out", metavar="VAR", help="With collect: put the results in this variable "
             "(default: the --out the batch was submitted with)."))
def batches(magic: Any, args: Any) -> Any:
    """List the Batch API jobs, or wait for one and collect its results.

    %%kimi --map VAR --batch submits a job; if the kernel restarts while it runs,
    %kimi batches collect ID picks it up. Example: %kimi batches collect b-123 --out answers
    """
    store = magic.sessions.store
    if args.action == "list":
        if args.id or args.out:
            raise SessionError("%kimi batches list takes no ID or --out: use "
                               "%kimi batches collect ID [--out VAR]")
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
