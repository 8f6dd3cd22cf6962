"""The Batch API, moving forward one step per poll so tests never wait on a timer.

A new batch is ``validating``; the first ``GET`` moves it to ``in_progress``; each later
``GET`` runs up to ``lines_per_poll`` lines (all that remain when unset) and, once none are
left, the next ``GET`` completes it with an output file and, if any line failed, an error
file. With the default a batch is ``completed`` on the third poll.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kimi_magic.core.models import MODELS

from .chat import SAMPLING_KNOBS
from .errors import ApiError, invalid, not_found
from .files import FileStore

ENDPOINT = "/v1/chat/completions"
#: A line whose last user message contains this text fails, to exercise the error file.
FAIL_MARKER = "FAIL_THIS_LINE"

#: Runs one batch line's body: (body, api_key) -> chat.completion dict, or raises ApiError.
LineRunner = Callable[[dict[str, Any], str], dict[str, Any]]


@dataclass
class Batch:
    id: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, Any] | None
    created_at: int
    api_key: str
    lines: list[dict[str, Any]]
    status: str = "validating"
    done: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "batch", "endpoint": ENDPOINT, "errors": None,
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": self.created_at,
            "in_progress_at": self.times.get("in_progress"),
            "expires_at": self.created_at + 24 * 3600,
            "finalizing_at": self.times.get("finalizing"),
            "completed_at": self.times.get("completed"), "failed_at": None, "expired_at": None,
            "cancelling_at": self.times.get("cancelling"),
            "cancelled_at": self.times.get("cancelled"),
            "request_counts": {"total": len(self.lines), "completed": len(self.outputs),
                               "failed": len(self.errors)},
            "metadata": self.metadata,
        }


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    lines = []
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise invalid(f"batch input line {number} is not valid JSON") from None
        if (not isinstance(line, dict) or not line.get("custom_id")
                or line.get("method") != "POST" or line.get("url") != ENDPOINT
                or not isinstance(line.get("body"), dict)):
            raise invalid(f"batch input line {number} needs custom_id, method POST, "
                          f"url {ENDPOINT} and a body")
        # Moonshot's batch guide: sampling is fixed in batch jobs.
        knobs = [k for k in SAMPLING_KNOBS if line["body"].get(k) is not None]
        if knobs:
            raise invalid(f"batch input line {number}: {', '.join(knobs)} is not allowed in a "
                          "batch line (sampling parameters are fixed)")
        lines.append(line)
    if not lines:
        raise invalid("the batch input file has no lines")
    return lines


def _check_model(lines: list[dict[str, Any]]) -> None:
    models = {line["body"].get("model") for line in lines}
    if len(models) != 1:
        raise invalid("all lines of a batch must use the same model")
    model_id = models.pop()
    model = MODELS.get(model_id) if isinstance(model_id, str) else None
    if model is None or not model.batch:
        raise invalid(f"model {model_id} is not available in the Batch API")


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return json.dumps(message.get("content"), ensure_ascii=False)
    return ""


class BatchStore:
    def __init__(self, files: FileStore, run_line: LineRunner) -> None:
        self._files = files
        self._run_line = run_line
        self._batches: dict[str, Batch] = {}
        self._lock = threading.Lock()

    def create(self, body: Any, api_key: str, now: int) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        if body.get("endpoint") != ENDPOINT:
            raise invalid(f"endpoint must be {ENDPOINT}")
        if body.get("completion_window") != "24h":
            raise invalid("completion_window must be '24h'")
        source = self._files.get(str(body.get("input_file_id")))
        if source.purpose != "batch":
            raise invalid("the input file must be uploaded with purpose 'batch'")
        lines = _parse_lines(source.data)
        _check_model(lines)
        batch = Batch(f"batch_{os.urandom(10).hex()}", source.id, "24h", body.get("metadata"),
                      now, api_key, lines)
        with self._lock:
            self._batches[batch.id] = batch
        return batch.object()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [b.object() for b in self._batches.values()]

    def _get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found(f"batch {batch_id} not found")
        return batch

    def poll(self, batch_id: str, now: int, lines_per_poll: int | None) -> dict[str, Any]:
        """Advance the batch one step and return it."""
        with self._lock:
            batch = self._get(batch_id)
            if batch.status == "validating":
                batch.status = "in_progress"
                batch.times["in_progress"] = now
            elif batch.status == "in_progress":
                if batch.done < len(batch.lines):
                    self._run(batch, lines_per_poll or len(batch.lines))
                else:
                    self._finish(batch, "completed", now)
            elif batch.status == "cancelling":
                self._finish(batch, "cancelled", now)
            return batch.object()

    def cancel(self, batch_id: str, now: int) -> dict[str, Any]:
        with self._lock:
            batch = self._get(batch_id)
            if batch.status in ("validating", "in_progress"):
                batch.status = "cancelling"
                batch.times["cancelling"] = now
            return batch.object()

    def _run(self, batch: Batch, count: int) -> None:
        for line in batch.lines[batch.done:batch.done + count]:
            request_id = f"req-{os.urandom(8).hex()}"
            entry: dict[str, Any] = {"id": f"batch_req_{os.urandom(8).hex()}",
                                     "custom_id": line["custom_id"]}
            try:
                if FAIL_MARKER in _last_user_text(line["body"]):
                    raise invalid(f"line {line['custom_id']} was marked to fail")
                body = self._run_line(line["body"], batch.api_key)
            except ApiError as err:
                entry["response"] = {"status_code": err.status, "request_id": request_id,
                                     "body": err.body()}
                entry["error"] = {"code": err.type, "message": err.message}
                batch.errors.append(entry)
            else:
                entry["response"] = {"status_code": 200, "request_id": request_id, "body": body}
                entry["error"] = None
                batch.outputs.append(entry)
            batch.done += 1

    def _finish(self, batch: Batch, status: str, now: int) -> None:
        batch.times["finalizing"] = now
        batch.times[status] = now
        batch.status = status
        if batch.outputs:
            batch.output_file_id = self._write(batch.outputs, f"{batch.id}_output.jsonl", now)
        if batch.errors:
            batch.error_file_id = self._write(batch.errors, f"{batch.id}_error.jsonl", now)

    def _write(self, entries: list[dict[str, Any]], name: str, now: int) -> str:
        data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()
        return self._files.add(name, "batch_output", data, now).id
