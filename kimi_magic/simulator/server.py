"""The HTTP side of the simulator: routing, keep-alive framing and the ``Simulator`` object.

Speed matters because benchmarks time the client against this server with 200K-token
prompts: connections are HTTP/1.1 keep-alive with TCP_NODELAY (no 40 ms Nagle/delayed-ACK
stalls), a JSON reply goes out as one write of headers plus body, and an unpaced stream is
coalesced into a few large chunked writes.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from kimi_magic.core.models import MODELS, resolve

from .batches import BatchStore
from .cache import PromptCache
from .chat import (
    CUT,
    Completion,
    check_model,
    check_request,
    complete,
    response_body,
    stream_events,
)
from .clock import SimClock
from .errors import ApiError, Failure, invalid, not_found
from .files import MAX_FILE_BYTES, FileStore
from .tokens import count_prompt_tokens

#: Requests kept in ``Simulator.requests``; older ones are dropped.
MAX_RECORDED = 500
#: Unpaced streams are written in chunks of about this size.
STREAM_WRITE_BYTES = 256 * 1024
#: ``created`` of every model in ``GET /v1/models``.
MODELS_CREATED = 1_767_225_600

_UNPARSED = object()
_USAGE = ("top", "choice", "none")
_CACHED_FIELD = ("top", "nested", "none")
_FIDELITY = ("faithful", "lossy")
_FILE_CONTENT = ("json", "text")


@dataclass(frozen=True)
class SimConfig:
    """Run-time behaviour switches; see the package docstring for what each one emulates."""

    usage: str = "top"
    cached_field: str = "top"
    tps: float | None = None
    models: tuple[str, ...] = tuple(MODELS)
    context_length_in_models: bool = True
    summary_fidelity: str = "faithful"
    record: bool = True
    reject_sampling: bool = True
    batch_lines_per_poll: int | None = None
    extra_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    empty_reasoning: bool = False
    file_content: str = "json"

    @property
    def served(self) -> list[str]:
        """Every id ``/v1/models`` lists: the table's chosen ones, then the extra ones."""
        return [*self.models, *(m for m in self.extra_models if m not in self.models)]

    def updated(self, **changes: Any) -> SimConfig:
        """A copy with ``changes`` applied; ValueError on an unknown name or a bad value."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown simulator option(s): {', '.join(sorted(unknown))}")
        if "models" in changes:
            models = changes["models"]
            if models is None:
                changes["models"] = tuple(MODELS)
            elif isinstance(models, str) or not all(isinstance(m, str) for m in models):
                raise ValueError("models must be a list of model ids")
            else:
                changes["models"] = tuple(models)
        if "extra_models" in changes:
            changes["extra_models"] = _extra_models(changes["extra_models"])
        new = replace(self, **changes)
        for name, allowed in (("usage", _USAGE), ("cached_field", _CACHED_FIELD),
                              ("summary_fidelity", _FIDELITY), ("file_content", _FILE_CONTENT)):
            if getattr(new, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        if new.tps is not None and not new.tps > 0:
            raise ValueError("tps must be positive (or None for no pacing)")
        if new.batch_lines_per_poll is not None and new.batch_lines_per_poll < 1:
            raise ValueError("batch_lines_per_poll must be at least 1")
        return new

    def model_object(self, model_id: str) -> dict[str, Any]:
        """What ``GET /v1/models`` says of ``model_id`` under this configuration."""
        model = resolve(model_id, self.extra_models)
        obj: dict[str, Any] = {"id": model_id, "object": "model", "created": MODELS_CREATED,
                               "owned_by": "moonshot"}
        if self.context_length_in_models:
            obj["context_length"] = model.context_length
        obj["supports_reasoning"] = model.thinking != "never"
        obj["supports_image_in"] = model.images
        return obj

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        return data


def _extra_models(value: Any) -> dict[str, dict[str, Any]]:
    """Validate ``extra_models``: ``{id: {"context_length": int, "supports_reasoning": bool}}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("extra_models must map model ids to their /v1/models fields")
    out = {}
    for model_id, info in value.items():
        if (not isinstance(info, dict) or not isinstance(info.get("context_length"), int)
                or not isinstance(info.get("supports_reasoning"), bool)):
            raise ValueError(f"extra_models[{model_id!r}] needs an int context_length and a "
                             "bool supports_reasoning")
        out[str(model_id)] = {"context_length": info["context_length"],
                              "supports_reasoning": info["supports_reasoning"]}
    return out


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY on every accepted socket
    server_version = "KimiSimulator/1.0"
    sim: Simulator  # set on the per-simulator subclass
    parsed: Any = None  # the JSON body once parsed (see json_body)

    def setup(self) -> None:
        super().setup()
        self.sim._connections.add(self.connection)

    def finish(self) -> None:
        self.sim._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: benchmarks and notebooks should not see a line per request."""

    def do_GET(self) -> None:  # the name http.server dispatches to
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        """CORS preflight, so a page in a browser can drive the simulator too."""
        self.send_bytes(204, b"", "text/plain", {
            "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600"})

    def _dispatch(self, method: str) -> None:
        try:
            raw = self._read_body()
            self.sim._handle(self, method, urlsplit(self.path).path, raw)
        except ApiError as err:
            self.send_json(err.status, err.body(), err.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a simulator bug should still answer, not hang the client
            self.send_json(500, {"error": {"type": "server_error",
                                           "message": f"simulator error: {exc!r}"}})

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            n = int(length)
            if n > MAX_FILE_BYTES + 1024 * 1024:
                self.close_connection = True  # we will not read it, so the stream is unusable
                raise invalid("request body exceeds the 100 MB limit")
            return self.rfile.read(n) if n else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def bearer(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[7:].strip() if value[:7].lower() == "bearer " else None

    def send_bytes(self, status: int, body: bytes, content_type: str,
                   headers: dict[str, str] | None = None) -> None:
        """Headers and body in a single write: no small-packet round trip."""
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                 f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
                 "Access-Control-Allow-Origin: *"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        self.send_bytes(status, body, "application/json", headers)

    def cut(self) -> None:
        """Drop the connection mid-reply, as a crashed upstream would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- request bodies and replies ----------------------------------------------------

    def json_body(self, raw: bytes) -> Any:
        """The request's JSON body, parsed once per request (bodies can be a megabyte)."""
        if self.parsed is _UNPARSED:
            try:
                self.parsed = json.loads(raw) if raw else {}
            except ValueError:
                raise invalid("the request body is not valid JSON") from None
        return self.parsed

    def object_body(self, raw: bytes) -> dict[str, Any]:
        body = self.json_body(raw)
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        return body

    def send_completion(self, obj: dict[str, Any], fault: str | None) -> None:
        """A non-streamed completion, or the injected fault that breaks it."""
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        if fault == "stream_cut":
            # Announce the full length, send half, hang up.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(data),
                                                                 data[: len(data) // 2]))
            self.cut()
            return
        if fault == "malformed_chunk":
            data = data[: len(data) // 2]
        self.send_bytes(200, data, "application/json")

    def send_stream(self, events: Iterable[Any], tps: float | None,
                    stopping: threading.Event) -> None:
        """Server-sent events, chunked: paced at ``tps`` tokens a second (else coalesced
        into large writes), cut where ``events`` says, abandoned when ``stopping`` is set."""
        pending = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                   b"Cache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n"]
        size = 0
        start = time.monotonic()
        tokens_sent = 0
        for event in events:
            if event is CUT:
                if pending:
                    self.wfile.write(b"".join(pending))
                self.cut()
                return
            if tps:
                # Pace by tokens against a fixed schedule so sleeps do not accumulate drift.
                tokens_sent += event.tokens
                delay = start + tokens_sent / tps - time.monotonic()
                if delay > 0:
                    if pending:
                        self.wfile.write(b"".join(pending))
                        pending, size = [], 0
                    if stopping.wait(delay):
                        self.cut()
                        return
            pending.append(_frame(event.data))
            size += len(event.data)
            if size >= STREAM_WRITE_BYTES:
                self.wfile.write(b"".join(pending))
                pending, size = [], 0
        pending.append(b"0\r\n\r\n")
        self.wfile.write(b"".join(pending))


Route = Callable[[_Handler, re.Match[str], bytes], None]


class Simulator:
    """A local, deterministic Kimi-compatible server (see the package docstring)."""

    def __init__(self, port: int = 0, api_keys: set[str] | None = None, **config: Any) -> None:
        self.port = port
        self.api_keys = set(api_keys) if api_keys is not None else None
        self.config = SimConfig().updated(**config)
        self.clock = SimClock()
        self.cache = PromptCache(self.clock)
        self.files = FileStore()
        self.batches = BatchStore(self.files, self._run_batch_line)
        self._requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED)
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Route]] = [
            ("GET", re.compile(r"/v1/models"), self._list_models),
            ("GET", re.compile(r"/v1/models/(?P<id>[^/]+)"), self._get_model),
            ("POST", re.compile(r"/v1/chat/completions"), self._chat),
            ("POST", re.compile(r"/v1/tokenizers/estimate-token-count"), self._estimate),
            ("POST", re.compile(r"/v1/files"), self._upload_file),
            ("GET", re.compile(r"/v1/files"), self._list_files),
            ("GET", re.compile(r"/v1/files/(?P<id>[^/]+)"), self._get_file),
            ("DELETE", re.compile(r"/v1/files/(?P<id>[^/]+)"), self._delete_file),
            ("GET", re.compile(r"/v1/files/(?P<id>[^/]+)/content"), self._file_content),
            ("POST", re.compile(r"/v1/batches"), self._create_batch),
            ("GET", re.compile(r"/v1/batches"), self._list_batches),
            ("GET", re.compile(r"/v1/batches/(?P<id>[^/]+)"), self._get_batch),
            ("POST", re.compile(r"/v1/batches/(?P<id>[^/]+)/cancel"), self._cancel_batch),
            ("POST", re.compile(r"/_sim/advance"), self._sim_advance),
            ("POST", re.compile(r"/_sim/fail"), self._sim_fail),
            ("POST", re.compile(r"/_sim/configure"), self._sim_configure),
            ("GET", re.compile(r"/_sim/config"), self._sim_config),
            ("GET", re.compile(r"/_sim/requests"), self._sim_requests),
            ("POST", re.compile(r"/_sim/clear"), self._sim_clear),
        ]

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> Simulator:
        """Serve on 127.0.0.1 from a daemon thread; returns self."""
        if self._server is not None:
            return self
        handler = type("SimHandler", (_Handler,), {"sim": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler, bind_and_activate=False)
        server.daemon_threads = True
        server.request_queue_size = 128  # many clients may connect at once in benchmarks
        server.server_bind()
        server.server_activate()
        self._server = server
        self.port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"kimi-simulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and wake any hanging request."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- test controls ----------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def advance(self, seconds: float) -> float:
        return self.clock.advance(seconds)

    def fail(self, kind: str, times: int = 1, **params: Any) -> Simulator:
        """Make the next ``times`` chat-completions requests fail as ``kind``."""
        failure = Failure(kind, times, params)
        with self._lock:
            self._failures.append(failure)
        return self

    def clear_failures(self) -> None:
        """Forget injected failures that no request has used up yet."""
        with self._lock:
            self._failures.clear()

    def configure(self, **config: Any) -> Simulator:
        self.config = self.config.updated(**config)
        return self

    def _take_failure(self) -> Failure | None:
        with self._lock:
            if not self._failures:
                return None
            failure = self._failures[0]
            failure.times -= 1
            if failure.times <= 0:
                self._failures.popleft()
            return failure

    # --- dispatch ---------------------------------------------------------------------

    def _handle(self, handler: _Handler, method: str, path: str, raw: bytes) -> None:
        handler.parsed = _UNPARSED
        path = path.rstrip("/") or "/"
        for route_method, pattern, candidate in self._routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                route = candidate
                break
        else:
            raise not_found(f"no route for {method} {path}")
        if path.startswith("/v1/"):
            self._authorize(handler)
            self._record(handler, method, path, raw)
        route(handler, match, raw)

    def _authorize(self, handler: _Handler) -> None:
        key = handler.bearer()
        if self.api_keys is not None and key not in self.api_keys:
            raise ApiError(401, "invalid_authentication_error",
                           "Invalid Authentication" if key else "No API key provided")

    def _record(self, handler: _Handler, method: str, path: str, raw: bytes) -> None:
        body = None
        content_type = handler.headers.get("Content-Type", "")
        if self.config.record and raw and content_type.startswith("application/json"):
            try:
                body = handler.json_body(raw)
            except ApiError:
                body = None
        # Only method, path, body and time: the Authorization header is never kept.
        entry = {"method": method, "path": path, "body": body, "time": self.clock.now()}
        with self._lock:
            self._requests.append(entry)

    # --- models and tokens ------------------------------------------------------------

    def _list_models(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, {"object": "list",
                          "data": [self.config.model_object(i) for i in self.config.served]})

    def _get_model(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        check_model(m["id"], self.config.served, self.config.extra_models)
        h.send_json(200, self.config.model_object(m["id"]))

    def _estimate(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        body = h.object_body(raw)
        check_model(body.get("model"), self.config.served, self.config.extra_models)
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(x, dict) for x in messages):
            raise invalid("messages must be a list of message objects")
        total = count_prompt_tokens(messages, body.get("tools"))
        h.send_json(200, {"code": 0, "data": {"total_tokens": total}, "scode": "0x0",
                          "status": True})

    # --- chat -------------------------------------------------------------------------

    def _completion(self, body: Any, api_key: str) -> Completion:
        config = self.config
        checked = check_request(body, config.served, config.reject_sampling,
                                config.extra_models)
        long_ttl = bool(body.get("prompt_cache_options"))
        cache = self.cache.use(api_key, checked.digest, long_ttl)
        return complete(checked, cache, config.summary_fidelity, int(self.clock.now()),
                        config.empty_reasoning)

    def _chat(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        body = h.json_body(raw)
        failure = self._take_failure()
        fault = None
        if failure is not None:
            model_id = body.get("model") if isinstance(body, dict) else None
            window = (resolve(model_id, self.config.extra_models).context_length
                      if isinstance(model_id, str) else None)
            error = failure.http_error(window)
            if error is not None:
                raise error
            if failure.kind == "hang":
                # Waits on the stop event so stop() is never held up by a hanging request.
                self._stopping.wait(float(failure.params.get("seconds", 30)))
            else:
                fault = failure.kind
        completion = self._completion(body, h.bearer() or "")
        config = self.config
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            cut_after = int(failure.params.get("after", 3)) if failure else 3
            h.send_stream(stream_events(completion, config.usage, config.cached_field,
                                        include_usage, fault, cut_after),
                          config.tps, self._stopping)
            return
        h.send_completion(response_body(completion, config.usage, config.cached_field,
                                        finish=fault != "no_finish"), fault)

    def _run_batch_line(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        config = self.config
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        completion = self._completion(body, api_key)
        return response_body(completion, config.usage, config.cached_field)

    # --- files and batches ------------------------------------------------------------

    def _upload_file(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        stored = self.files.upload(raw, h.headers.get("Content-Type", ""), int(self.clock.now()))
        h.send_json(200, stored.object())

    def _list_files(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, {"object": "list", "data": self.files.list(), "has_more": False})

    def _get_file(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, self.files.get(m["id"]).object())

    def _delete_file(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, self.files.delete(m["id"]))

    def _file_content(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        data, content_type = self.files.content(m["id"], self.config.file_content)
        h.send_bytes(200, data, content_type)

    def _create_batch(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, self.batches.create(h.json_body(raw), h.bearer() or "",
                                             int(self.clock.now())))

    def _list_batches(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, {"object": "list", "data": self.batches.list(), "has_more": False})

    def _get_batch(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, self.batches.poll(m["id"], int(self.clock.now()),
                                           self.config.batch_lines_per_poll))

    def _cancel_batch(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, self.batches.cancel(m["id"], int(self.clock.now())))

    # --- HTTP controls for other processes --------------------------------------------

    def _sim_advance(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        seconds = h.object_body(raw).get("seconds", 0)
        try:
            now = self.advance(float(seconds))
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc)) from None
        h.send_json(200, {"now": now})

    def _sim_fail(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        params = dict(h.object_body(raw))
        try:
            self.fail(params.pop("kind", ""), int(params.pop("times", 1)), **params)
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc)) from None
        h.send_json(200, {"ok": True, "pending": len(self._failures)})

    def _sim_configure(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        try:
            self.configure(**h.object_body(raw))
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc)) from None
        h.send_json(200, self.config.as_json())

    def _sim_config(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, self.config.as_json())

    def _sim_requests(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        h.send_json(200, self.requests)

    def _sim_clear(self, h: _Handler, m: re.Match[str], raw: bytes) -> None:
        self.clear_requests()
        h.send_json(200, {"ok": True})
