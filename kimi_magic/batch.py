"""``%%kimi --map VAR --batch``: the same fan-out through Moonshot's Batch API, at 60%.

Builds one JSONL line per item (``custom_id``, ``POST /v1/chat/completions``, the body),
uploads it (purpose "batch"), creates the batch (``completion_window`` 24h), polls with a
progress display, downloads the output and error files and maps lines back to items by
``custom_id``. The batch id and the item mapping live in the store's ``batches`` table, so
``%kimi batches collect`` resumes after a kernel restart. The API key is never written to
the JSONL or the store (the SDK sends it in a header).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .core import models as model_table
from .core.errors import SessionError
from .core.models import Model
from .core.session import Session
from .core.store import Store
from .core.text import clip
from .fanout import (
    MapFailure,
    as_items,
    choose_model,
    fill,
    item_requests,
    item_value,
    progress_bar,
)
from .wire.errors import KimiError
from .wire.reply import Reply, Usage, parse_batch_line
from .wire.request import Options, batch_line, wire_body

DISCOUNT_PERCENT = round(model_table.BATCH_DISCOUNT * 100)
#: Batch statuses after which nothing more will happen.
FINAL = ("completed", "failed", "expired", "cancelled")

@dataclass
class BatchJob:
    """A submitted batch as the store remembers it."""

    id: str
    session: str
    created: float
    model: str
    items: int
    status: str
    mapping: dict[str, Any] = field(repr=False)
    out: str | None = None
    source: str | None = None
    collected: float | None = None
    cost: float | None = None
    failed: int | None = None
    input_file: str | None = None


@dataclass
class BatchSummary:
    """What collecting a batch gave: counts, tokens and cost (at the batch price)."""

    job: BatchJob
    ok: int
    failures: list[MapFailure]
    usage: Usage
    cost: float | None
    recorded: bool
    notices: list[str] = field(default_factory=list)

    def line(self) -> str:
        u = self.usage
        cost = f"${self.cost:.4f}" if self.cost is not None else "unpriced"
        failed = f", {len(self.failures)} failed" if self.failures else ""
        again = "" if self.recorded else " (already recorded when first collected)"
        return (f"Batch {self.job.id} on {self.job.model} ({self.job.status}): {self.ok} of "
                f"{self.job.items} items answered{failed} · in {u.prompt_tokens:,} / out "
                f"{u.completion_tokens:,} tokens · {cost} at {DISCOUNT_PERCENT}% of the "
                f"price{again}")


def _job(row: dict[str, Any]) -> BatchJob:
    return BatchJob(row["id"], row["session"], row["created"], row["model"], row["items"],
                    row["status"], row["mapping"], row["out"], row["source"], row["collected"],
                    row["cost"], row["failed"], row.get("input_file"))


def jobs(store: Store, session: str | None = None) -> list[BatchJob]:
    """Batches in the store, newest first (all sessions unless one is named)."""
    return [_job(r) for r in store.jobs.all(session)]


def find(store: Store, batch_id: str | None = None) -> BatchJob:
    """The batch ``batch_id`` (default: the newest not yet collected)."""
    known = jobs(store)
    if not known:
        raise SessionError("no batches yet: %%kimi --map VAR --batch submits one")
    if not batch_id:
        pending = [j for j in known if j.collected is None]
        return pending[0] if pending else known[0]
    for j in known:
        if j.id == batch_id:
            return j
    raise SessionError(f"no batch {batch_id!r}; %kimi batches lists them")


def _batch_model(session: Session, requested: str | None, sub: Any, prompts: list[str],
                 opts: Options, notices: list[str]) -> Model:
    requested = requested or session.settings.model
    if requested == "auto":
        cheapest = min((m for m in model_table.MODELS.values() if m.batch),
                       key=lambda m: (m.cache_miss or 0, m.output or 0))
        notices.append(f"--model auto with --batch picked {cheapest.id}, the cheapest model "
                       "the Batch API serves")
        requested = cheapest.id
    model = choose_model(session, requested, sub, prompts, opts, notices)
    if not model.batch:
        served = ", ".join(m.id for m in model_table.MODELS.values() if m.batch)
        raise SessionError(f"{model.id} is not available in the Batch API ({served} are); "
                           "pick one with --model")
    return model


def check_options(opts: Options) -> None:
    """Refuse what a Batch API line may not carry: Moonshot's batch guide fixes sampling."""
    knobs = [name for name, value in opts.sampling.items() if value is not None]
    if knobs:
        raise SessionError(f"--batch: Batch API lines take no sampling parameters "
                           f"({', '.join(knobs)}); drop them or run without --batch")


def submit(session: Session, prompt: str, items: Any, *, model: str | None = None,
           options: Options | None = None, out: str | None = None,
           source: str | None = None) -> BatchJob:
    """Upload one line per item and create the batch; remembered in the store."""
    if not prompt.strip():
        raise SessionError("the prompt is empty: write it in the cell body, with {item}")
    check_options(options or Options())
    values, index = as_items(items)
    prompts = [fill(prompt, item) for item in values]
    opts = replace(options or Options(), stream=False, tools=None)
    built = item_requests(session, model, prompts, opts, [], choose=_batch_model)
    chosen = built.model
    lines = [batch_line(_custom_id(i), wire_body(body)) for i, body in enumerate(built.bodies)]
    session.guard.check_many("--batch", chosen,
                             [session.accounting.estimate(n) for n in built.sent],
                             built.options, batch=True)
    data = ("\n".join(lines) + "\n").encode()
    client = session.client
    uploaded = client.files.upload(data, f"kimi_magic-{session.name}-{len(lines)}.jsonl",
                                  "batch")
    created = client.batches.create(uploaded["id"], metadata={"session": session.name,
                                                            "items": str(len(lines))})
    mapping = {
        "items": [clip(v, 200) for v in values],
        "index": None if index is None else [_plain(k) for k in index],
        "name": getattr(items, "name", None) if index is not None else None,
        "json": bool(opts.json), "prefix": opts.prefix,
    }
    job = BatchJob(created["id"], session.name, time.time(), chosen.id, len(lines),
                   str(created.get("status") or "validating"), mapping, out, source,
                   input_file=uploaded["id"])
    with session.store.transaction() as conn:
        session.store.jobs.add(conn, {
            "id": job.id, "session": job.session, "created": job.created, "model": job.model,
            "items": job.items, "status": job.status, "input_file": uploaded["id"],
            "mapping": mapping, "out": out, "source": source})
    return job


def _custom_id(i: int) -> str:
    return f"item-{i}"


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def wait(session: Session, job: BatchJob, *, interval: float | None = None,
         progress: bool | None = None,
         sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll until the batch is finished; the final batch object."""
    every = session.settings.batch_poll_seconds if interval is None else interval
    bar = progress_bar(session, job.items, f"batch {job.id[-8:]}", progress)
    while True:
        info = session.client.batches.get(job.id)
        counts = info.get("request_counts") or {}
        done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
        status = str(info.get("status") or "")
        with session.store.transaction() as conn:
            session.store.jobs.update(conn, job.id, status=status,
                                      output_file=info.get("output_file_id"),
                                      error_file=info.get("error_file_id"))
        job.status = status
        if status in FINAL:
            bar.close(done, int(counts.get("failed") or 0), status)
            return info
        bar.update(done, int(counts.get("failed") or 0), status)
        sleep(every)


def collect(session: Session, batch_id: str | None = None, *, interval: float | None = None,
            progress: bool | None = None, sleep: Callable[[float], None] = time.sleep
            ) -> tuple[Any, BatchSummary]:
    """Wait for a batch, download its files and map lines back to items (input order).

    Results are a list, or a Series with the original index; failed lines are
    ``MapFailure`` strings. Costs are recorded once, as "map" turns at the batch price.
    """
    job = find(session.store, batch_id)
    info = wait(session, job, interval=interval, progress=progress, sleep=sleep)
    client = session.client
    replies: dict[str, Reply | KimiError] = {}
    for key in ("output_file_id", "error_file_id"):
        if info.get(key):
            for raw in client.files.content(info[key]).decode("utf-8", "replace").splitlines():
                if raw.strip():
                    custom_id, outcome = parse_batch_line(json.loads(raw), job.model)
                    replies[custom_id] = outcome
    model = session.model(job.model)
    mapping = job.mapping
    results: list[Any] = []
    failures: list[MapFailure] = []
    usage = Usage()
    cost: float | None = 0.0
    rows = []
    notices: list[str] = []
    for i in range(job.items):
        item = mapping["items"][i] if i < len(mapping.get("items", [])) else i
        outcome = replies.get(_custom_id(i))
        if isinstance(outcome, Reply):
            u = outcome.usage or Usage(exact=False)
            c = session.accounting.cost(model, u, batch=True)
            usage.add(u)
            cost = None if c is None or cost is None else cost + c
            rows.append(session.accounting.call("map", job.model, u, c, 0.0))
            value = item_value(i, item, outcome, mapping.get("prefix"), bool(mapping.get("json")))
            if isinstance(value, MapFailure):
                failures.append(value)
            results.append(value)
            continue
        if isinstance(outcome, KimiError):
            failure = MapFailure(i, item, f"line {_custom_id(i)}: {outcome.line()}",
                                 outcome.kind)
        else:
            failure = MapFailure(i, item, f"no result for {_custom_id(i)} (batch "
                                 f"{info.get('status')})", "missing")
        failures.append(failure)
        results.append(failure)
    recorded = job.collected is None

    def mark_collected(conn: Any) -> None:
        session.store.jobs.update(conn, job.id, collected=time.time(), cost=cost,
                                  failed=len(failures))

    # A batch's calls are recorded once, with the batch marked collected in the same
    # transaction, under the session that submitted it.
    session.record_calls(rows if recorded else [], owner=job.session,
                         detail=job if recorded else None, also=mark_collected)
    _delete_input(session, job, notices)
    job.collected, job.cost, job.failed = time.time(), cost, len(failures)
    if failures:
        notices.append("Failed lines: " + "; ".join(f"#{f.index} ({clip(f.item, 40)}): "
                                                    f"{str(f)[9:120]}" for f in failures[:5])
                       + (f"; and {len(failures) - 5} more" if len(failures) > 5 else ""))
    return _shape(results, mapping), BatchSummary(job, job.items - len(failures), failures,
                                                  usage, cost, recorded, notices)


def _delete_input(session: Session, job: BatchJob, notices: list[str]) -> None:
    """Delete the uploaded JSONL once collected: an account holds at most 1,000 files.

    The output and error files stay, so collecting again still works.
    """
    if not job.input_file:
        return
    try:
        session.client.files.delete(job.input_file)
    except KimiError as err:
        notices.append(f"The batch input file {job.input_file} was not deleted "
                       f"({err.line()}); Moonshot keeps at most 1,000 files per account.")
        return
    with session.store.transaction() as conn:
        session.store.jobs.update(conn, job.id, input_file=None)
    job.input_file = None


def _shape(results: list[Any], mapping: dict[str, Any]) -> Any:
    if mapping.get("index") is None:
        return results
    import pandas as pd

    return pd.Series(results, index=mapping["index"], name=mapping.get("name"), dtype=object)
