"""Long sessions: what each command costs as a session grows (rounds × snapshots).

``build`` writes a session of short rounds (~80 tokens a message, each round holding a few
facts: numbers, ids, paths) with snapshots spread over it, straight through the store
(asking 1,000 times would only measure the simulator). Each command is then timed the way
a user runs it: resume is ``%kimi use`` in a fresh process (time and resident memory it
adds), the others on the resumed session against the simulator:

* ``compress``: our CPU, i.e. the call's wall time minus the time on the wire;
* ``turn``: one more ``ask`` (wall time, client and simulator);
* ``snapshot`` / ``rollback``: one of each, core only (no dashboard);
* ``export``: ``%kimi export x.ipynb``.

``big_compress`` times one more case: ``%kimi compress`` of the benchmark workload's first 46
rounds (about 225K tokens of pasted code and logs), with the mask stage and without it.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kimi_magic import Message, Options, Session, Settings, Store
from kimi_magic.export import export
from kimi_magic.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
GRID = ((10, 0), (10, 200), (100, 0), (100, 200), (1000, 0), (1000, 200))
QUICK_GRID = ((10, 0), (100, 0), (100, 50))
NAME = "long"


def _round(i: int) -> tuple[Message, Message]:
    user = Message.of("user", (
        f"Step {i}: run r-{i:05d} used learning rate 0.{i % 97 + 1:03d} and batch size "
        f"{16 * (i % 7 + 1)}; the log is at /data/runs/step_{i}.csv and the loss fell to "
        f"{1 + (i % 89) / 100:.3f}. What should the next run change, and why?"))
    reply = Message({"role": "assistant", "content": (
        f"Run r-{i:05d} converged (loss {1 + (i % 89) / 100:.3f}). Keep the batch size, "
        f"lower the rate to 0.{(i + 3) % 97 + 1:03d} and watch epoch {i % 40 + 2}; if "
        f"ERR_{i % 13:02d} appears again, check /data/runs/step_{i}.csv first.")},
        {"model": "kimi-k2.6", "cost": 0.0001})
    return user, reply


def build(path: Path, rounds: int, snapshots: int, name: str = NAME) -> None:
    """A stored session of ``rounds`` rounds with ``snapshots`` snapshots evenly spread."""
    store = Store(path)
    settings = Settings(api_key="sk-bench", compact_mode="off")
    session = Session(name, settings, store=store)
    ctx = session.context
    every = max(1, rounds // snapshots) if snapshots else 0
    taken = 0
    parent = None
    with store.transaction() as conn:
        ctx = store.ensure_chain(conn, ctx)
        for i in range(rounds):
            user, reply = _round(i)
            node = store.append(conn, ctx.node if ctx.history else None, (user, reply))
            ctx = ctx.append(user, reply, node=node)
            store.record_turn(conn, name, {
                "time": time.time(), "kind": "chat", "model": "kimi-k2.6", "prompt_tokens": 0,
                "cached_tokens": 0, "cache_write_tokens": 0, "completion_tokens": 0,
                "cost": 0.0001, "seconds": 0.0, "exact": 0, "context_tokens": 0})
            if every and taken < snapshots and (i + 1) % every == 0:
                parent = store.add_snapshot(conn, name, f"#{taken + 1}", ctx, i + 1, 0,
                                            parent, False)
                taken += 1
        state = {"model": settings.model, "last_call": None, "calibration": 1.0,
                 "current_snapshot": parent}
        store.save_head(conn, name, ctx, settings.model, state)
    store.close()


_RESUME = """
import json, os, resource, sys, time
from IPython.core.interactiveshell import InteractiveShell
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "kimi_magic")
shell.run_line_magic("kimi", "status")  # the store is open: what %kimi use adds is measured
before, peak = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
shell.run_line_magic("kimi", "use " + sys.argv[1])
seconds = time.perf_counter() - t
after = rss()
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
print(json.dumps({"seconds": seconds, "rss_mb": (after - before) / 2**20,
                  "peak_mb": grown / 1024}))
"""


def resume(path: Path, url: str, reps: int = 3) -> dict[str, float]:
    """``%kimi use NAME`` in fresh processes: median seconds and resident MB it adds."""
    runs = []
    for _ in range(reps):
        env = {"KIMI_MAGIC_STORE": str(path), "MOONSHOT_API_KEY": "sk-bench",
               "MOONSHOT_BASE_URL": url, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        done = subprocess.run([sys.executable, "-c", _RESUME, NAME], capture_output=True,
                              text=True, env=env, timeout=300, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def commands(path: Path, url: str, tmp: Path) -> dict[str, float]:
    """Seconds of one compress (ours), turn, snapshot, rollback and .ipynb export."""
    settings = Settings(base_url=url, api_key="sk-bench", compact_mode="off", retry_base=0.01)
    out: dict[str, float] = {}
    store = Store(path)
    s = Session(NAME, settings, store=store)
    t = time.perf_counter()
    s.ask("One more question: which run had the lowest loss?", options=Options(think=False))
    out["turn"] = time.perf_counter() - t
    t = time.perf_counter()
    snap = s.snapshot()
    out["snapshot"] = time.perf_counter() - t
    first = s.snapshots[0].id
    t = time.perf_counter()
    s.rollback(first)
    out["rollback"] = time.perf_counter() - t
    s.rollback(snap.id)
    t = time.perf_counter()
    export(s, tmp / "x.ipynb")
    out["export"] = time.perf_counter() - t
    t = time.perf_counter()
    s.compress(keep_rounds=2)
    spent = time.perf_counter() - t
    wire = s.calls[-1]["seconds"]
    out["compress"] = spent - wire
    store.close()
    return {k: round(v, 4) for k, v in out.items()}


def _compress_cpu(s: Session) -> float:
    """Our CPU in one ``compress(keep_rounds=2)``: its wall time minus the call's wire time."""
    calls = len(s.calls)
    t = time.perf_counter()
    s.compress(keep_rounds=2)
    spent = time.perf_counter() - t
    return spent - sum(row["seconds"] or 0.0 for row in s.calls[calls:])


def big_compress(rounds: int = 46, reps: int = 3) -> dict[str, Any]:
    """Our CPU in ``%kimi compress`` of a ~225K-token session of the workload's pastes: median
    seconds with the mask stage (the default) and without it (``mask_tokens = None``)."""
    from . import workload

    work = workload.build()
    out: dict[str, Any] = {"rounds": rounds}
    with Simulator(port=0, record=False) as sim:
        settings = Settings(base_url=sim.url, api_key="sk-bench", compact_mode="off",
                            retry_base=0.01, max_completion_tokens=workload.MAX_OUTPUT)
        s = Session("big", settings, store=Store(":memory:"))
        for r in work.rounds[:rounds]:
            s.ask(r.prompt, options=Options(think=False))
        out["context_tokens"] = s.tokens()
        start = s.snapshot("before the timed compress")
        for key, size in (("compress_big", settings.mask_tokens), ("compress_big_no_mask", None)):
            s.settings.mask_tokens = size
            times = []
            for _ in range(reps):
                times.append(_compress_cpu(s))
                s.rollback(start.id)
            out[key] = round(statistics.median(times), 4)
        s.store.close()
    return out


def growth(small: float, large: float, factor: float) -> str:
    """The growth class from two sizes ``factor`` apart: constant, linear or superlinear."""
    if small <= 0 or large <= 0:
        return "constant"
    k = math.log(large / small) / math.log(factor)
    if k < 0.35:
        return "constant"
    if k < 1.35:
        return "linear"
    return f"superlinear (n^{k:.1f})"


def grid(quick: bool = False) -> dict[str, Any]:
    """Every command at every grid point, plus the growth class of each along rounds."""
    import nbformat  # noqa: F401  (its import is the import benchmark's, not the first export's)

    points = QUICK_GRID if quick else GRID
    rows = []
    with Simulator(port=0, record=False) as sim, tempfile.TemporaryDirectory() as tmp:
        for rounds, snaps in points:
            path = Path(tmp) / f"s{rounds}x{snaps}.sqlite"
            build(path, rounds, snaps)
            row: dict[str, Any] = {"rounds": rounds, "snapshots": snaps}
            r = resume(path, sim.url, reps=1 if quick else 3)
            row.update({"resume": r["seconds"], "resume_rss_mb": r["rss_mb"],
                        "resume_peak_mb": r["peak_mb"]})
            row.update(commands(path, sim.url, Path(tmp)))
            rows.append(row)
            print(f"  scale {rounds:>5} rounds × {snaps:>3} snapshots: " + ", ".join(
                f"{k} {v}" for k, v in row.items() if k not in ("rounds", "snapshots")),
                flush=True)
    big = big_compress(rounds=12, reps=1) if quick else big_compress()
    print(f"  compress of {big['context_tokens']:,} workload tokens: {big['compress_big']} s "
          f"(without the mask stage {big['compress_big_no_mask']} s)", flush=True)
    return {"scale": rows, "scale_growth": _classes(rows), "scale_compress_big": big}


def _classes(rows: list[dict[str, Any]]) -> dict[str, str]:
    by = {(r["rounds"], r["snapshots"]): r for r in rows}
    sizes = sorted({r["rounds"] for r in rows})
    if len(sizes) < 2:
        return {}
    lo, hi = sizes[-2], sizes[-1]
    snaps = max(s for (n, s) in by if n == hi and (lo, s) in by)
    out = {}
    for key in ("resume", "resume_rss_mb", "compress", "turn", "snapshot", "rollback",
                "export"):
        out[key] = growth(by[lo, snaps][key], by[hi, snaps][key], hi / lo)
    return out
