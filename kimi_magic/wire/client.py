"""The one module that knows Kimi's wire format.

Builds request bodies (``max_completion_tokens`` clamped to the window, sampling parameters
only when asked, thinking and effort switches, partial mode, JSON mode), reads replies and
streams (usage in ``chunk.usage`` or ``choices[0].usage``, cached tokens at the top level or
under ``prompt_tokens_details``, ``reasoning_content`` outside the SDK's types), classifies
errors by ``error.type`` and retries only what is worth retrying. Works the same against
Moonshot, self-hosted OpenAI-compatible servers (vLLM, SGLang, llama.cpp) and the simulator.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from ..core.models import Model

T = TypeVar("T")

#: Kinds of server, which decide the output-cap field and what usage to expect.
SERVER_KINDS = ("auto", "moonshot", "vllm", "llama.cpp", "openai")

#: Output cap when the user sets none; thinking needs >= 16K to finish its reasoning.
DEFAULT_COMPLETION_TOKENS = 32_768

SAMPLING_PARAMS = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")

# error.type (or an HTTP status when a server sends none) -> our kind.
_TYPE_KINDS = {
    "invalid_authentication_error": "auth",
    "incorrect_api_key_error": "auth",
    "authentication_error": "auth",
    "permission_denied_error": "permission",
    "exceeded_current_quota_error": "quota",
    "insufficient_quota": "quota",
    "resource_not_found_error": "not_found",
    "not_found_error": "not_found",
    "rate_limit_reached_error": "rate_limit",
    "engine_overloaded_error": "overloaded",
    "server_error": "server",
    "content_filter": "content_filter",
    "invalid_request_error": "bad_request",
}
_STATUS_KINDS = {400: "bad_request", 401: "auth", 403: "permission", 404: "not_found",
                 429: "rate_limit", 500: "server", 502: "server", 503: "server", 504: "server"}
RETRYABLE = frozenset({"rate_limit", "overloaded", "server", "connection", "timeout"})
_TOKEN_LIMIT = re.compile(r"input token length too long|exceeded model token limit|"
                          r"context length|maximum context|too many tokens", re.I)


class KimiError(Exception):
    """A failed call, described in one line that says what happened and what to do."""

    def __init__(self, kind: str, detail: str, *, status: int | None = None,
                 retry_after: float | None = None, partial: str = "") -> None:
        self.kind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        #: Text streamed before the failure (shown to the user, never recorded).
        self.partial = partial
        #: Whether any of the reply (text, reasoning or a tool call) reached the user: then
        #: a retry would show it twice, so none is made.
        self.streamed = False
        super().__init__(self.line())

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    def line(self) -> str:
        advice = _ADVICE.get(self.kind, "")
        status = f" ({self.status})" if self.status else ""
        detail = self.detail.strip().rstrip(".")
        tail = f" {advice}" if advice else ""
        return f"{_TITLES.get(self.kind, 'Request failed')}{status}: {detail}.{tail}"


_TITLES = {
    "auth": "Kimi rejected the API key",
    "permission": "Permission denied",
    "quota": "Your Kimi account is out of quota",
    "not_found": "Not found",
    "rate_limit": "Rate limited",
    "overloaded": "Kimi is overloaded",
    "server": "Server error",
    "content_filter": "Blocked by Kimi's content filter",
    "bad_request": "The server refused the request",
    "token_limit": "The context does not fit the model's window",
    "connection": "Could not reach the server",
    "timeout": "The server did not answer in time",
    "stream_cut": "The reply stream broke off",
    "malformed": "The server sent a malformed reply",
    "no_key": "No API key",
}
_ADVICE = {
    "auth": "Check MOONSHOT_API_KEY or %config KimiMagic.api_key (keys from api.moonshot.cn "
            "do not work on api.moonshot.ai).",
    "permission": "This key may not use that model or endpoint.",
    "quota": "Top up or raise the limit on the Moonshot platform; not retried.",
    "not_found": "The model id may be retired: %kimi models lists today's.",
    "rate_limit": "Retried with backoff and gave up; wait a minute or lower the concurrency.",
    "overloaded": "Retried with backoff and gave up; try again shortly.",
    "server": "Retried and gave up; try again shortly.",
    "content_filter": "Rephrase the prompt.",
    "token_limit": "Run %kimi compress or %kimi truncate, or pick a larger model.",
    "connection": "Is the server running and the base URL right (%config KimiMagic.base_url)?",
    "timeout": "Try again, or raise %config KimiMagic.timeout.",
    "stream_cut": "Nothing was recorded; run the cell again.",
    "malformed": "Nothing was recorded; run the cell again.",
}


def classify(exc: BaseException, base_url: str = "") -> KimiError:
    """Turn an SDK or transport exception into a ``KimiError``, by ``error.type`` first."""
    import openai

    if isinstance(exc, KimiError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return KimiError("timeout", f"no answer from {_host(base_url)}")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        why = str(cause) if cause else str(exc)
        return KimiError("connection", f"{_host(base_url)}: {_short(why)}")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        etype = str(body.get("type") or body.get("code") or "")
        message = str(body.get("message") or exc.message or "")
        kind = _TYPE_KINDS.get(etype) or _STATUS_KINDS.get(exc.status_code, "bad_request")
        if exc.status_code >= 500 and kind == "bad_request":
            kind = "server"
        if kind == "bad_request" and _TOKEN_LIMIT.search(message):
            kind = "token_limit"
        retry_after = _retry_after(exc.response.headers.get("retry-after"))
        label = f"{etype}: " if etype and etype not in message else ""
        return KimiError(kind, _short(label + message) or f"HTTP {exc.status_code}",
                         status=exc.status_code, retry_after=retry_after)
    if isinstance(exc, openai.APIError):
        body = exc.body if isinstance(exc.body, dict) else {}
        etype = str(body.get("type") or "")
        kind = _TYPE_KINDS.get(etype, "server")
        return KimiError(kind, _short(str(body.get("message") or exc.message)))
    if isinstance(exc, json.JSONDecodeError):
        return KimiError("malformed", f"a stream chunk was not JSON ({exc.msg})")
    name = type(exc).__name__
    if "Timeout" in name:
        return KimiError("timeout", f"no answer from {_host(base_url)}")
    if any(w in name for w in ("Protocol", "Read", "Connect", "Network", "Closed")):
        return KimiError("stream_cut", f"{_host(base_url)} closed the connection ({name})")
    raise exc


def _host(base_url: str) -> str:
    return urlparse(base_url).netloc or base_url or "the server"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def detect_server(base_url: str, owned_by: str = "") -> str:
    """Guess the server kind from its URL, then from ``/v1/models``' ``owned_by``."""
    host = urlparse(base_url).netloc
    if "moonshot" in host:
        return "moonshot"
    owner = owned_by.lower()
    if owner in ("moonshot", "moonshotai"):
        return "moonshot"
    if owner in ("vllm", "sglang"):
        return "vllm"
    if owner in ("me", "llamacpp", "llama.cpp"):
        return "llama.cpp"
    return "openai"


@dataclass
class Usage:
    """Token counts of one call; ``exact`` is False when the server sent none (estimates)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    exact: bool = True

    def add(self, other: Usage) -> None:
        """Accumulate another call's counts (a tool loop, a fan-out); estimates stay marked."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.exact = self.exact and other.exact

    @classmethod
    def parse(cls, raw: Any) -> Usage | None:
        """Read usage wherever Kimi put it: top-level or nested cached/cache-write tokens."""
        if raw is None:
            return None
        data = raw if isinstance(raw, dict) else _dump(raw)
        if not data or "prompt_tokens" not in data:
            return None
        details = data.get("prompt_tokens_details") or {}
        out_details = data.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            cached_tokens=int(data.get("cached_tokens") or details.get("cached_tokens") or 0),
            cache_write_tokens=int(data.get("cache_write_tokens")
                                   or details.get("cache_write_tokens") or 0),
            reasoning_tokens=int(out_details.get("reasoning_tokens") or 0),
        )


def _dump(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_none=True)
    return dict(obj) if isinstance(obj, dict) else {}


@dataclass
class Reply:
    """An assistant message exactly as the server produced it, with its usage."""

    message: dict[str, Any]
    usage: Usage | None
    finish_reason: str | None
    model: str
    seconds: float = 0.0

    @property
    def content(self) -> str:
        return self.message.get("content") or ""

    @property
    def reasoning(self) -> str:
        return self.message.get("reasoning_content") or ""

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return self.message.get("tool_calls") or []


#: Receives ("reasoning" | "content" | "tool_call", text) while a reply streams.
OnDelta = Callable[[str, str], None]


class Assembler:
    """Builds a ``Reply`` from stream chunks (sync or async), whatever the server's dialect."""

    def __init__(self, model: str, on_delta: OnDelta | None = None) -> None:
        self.model = model
        self.on_delta = on_delta
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.started = False

    def feed(self, chunk: Any) -> None:
        usage = Usage.parse(getattr(chunk, "usage", None))
        for choice in chunk.choices or ():
            extra = choice.model_extra or {}
            usage = usage or Usage.parse(extra.get("usage"))
            delta = choice.delta
            if delta is not None:
                reasoning = getattr(delta, "reasoning_content", None) or (
                    (delta.model_extra or {}).get("reasoning_content"))
                if reasoning:
                    self._emit("reasoning", reasoning, self.reasoning)
                if delta.content:
                    self._emit("content", delta.content, self.content)
                for call in delta.tool_calls or ():
                    self._tool_delta(call)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        if usage:
            self.usage = usage

    def _emit(self, kind: str, text: str, sink: list[str]) -> None:
        self.started = True
        sink.append(text)
        if self.on_delta:
            self.on_delta(kind, text)

    def _tool_delta(self, call: Any) -> None:
        self.started = True
        slot = self.tools.setdefault(call.index, {"id": "", "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
        if call.id:
            slot["id"] = call.id
        if call.type:
            slot["type"] = call.type
        fn = call.function
        if fn is not None:
            if fn.name:
                slot["function"]["name"] += fn.name
                if self.on_delta:
                    self.on_delta("tool_call", fn.name)
            if fn.arguments:
                slot["function"]["arguments"] += fn.arguments

    @property
    def partial_text(self) -> str:
        return "".join(self.content)

    def finish(self, seconds: float) -> Reply:
        if self.finish_reason is None:
            # A stream that ends without finish_reason is cut, even if the socket closed cleanly.
            raise KimiError("stream_cut", "the stream ended before the reply was finished",
                            partial=self.partial_text)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tools:
            message["tool_calls"] = [self.tools[i] for i in sorted(self.tools)]
        return Reply(message, self.usage, self.finish_reason, self.model, seconds)


def reply_from_completion(completion: Any, model: str, seconds: float) -> Reply:
    choice = completion.choices[0]
    raw = _dump(choice.message)
    message: dict[str, Any] = {"role": "assistant", "content": raw.get("content") or ""}
    for key in ("reasoning_content", "tool_calls", "name"):
        if raw.get(key):
            message[key] = raw[key]
    if message.get("tool_calls"):
        message["tool_calls"] = [_clean_call(c) for c in message["tool_calls"]]
    usage = Usage.parse(getattr(completion, "usage", None)) or Usage.parse(
        (choice.model_extra or {}).get("usage"))
    return Reply(message, usage, choice.finish_reason, model, seconds)


def batch_line(custom_id: str, body: dict[str, Any]) -> str:
    """One line of a Batch API input file (``body`` as ``wire_body`` gives it)."""
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": body}, ensure_ascii=False)


def parse_batch_line(entry: dict[str, Any], model: str) -> tuple[str, Reply | KimiError]:
    """``(custom_id, Reply or KimiError)`` of one line of a batch's output or error file."""
    from openai.types.chat import ChatCompletion

    custom_id = str(entry.get("custom_id", ""))
    response = entry.get("response") or {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    status = response.get("status_code")
    error = entry.get("error") or (body.get("error") if isinstance(body, dict) else None)
    if error or status != 200:
        error = error if isinstance(error, dict) else {}
        etype = str(error.get("code") or error.get("type") or "")
        kind = _TYPE_KINDS.get(etype) or _STATUS_KINDS.get(status or 0, "bad_request")
        label = f"{etype}: " if etype else ""
        return custom_id, KimiError(kind, _short(label + str(error.get("message") or
                                                             f"HTTP {status}")), status=status)
    try:
        completion = ChatCompletion.model_validate(body)
        return custom_id, reply_from_completion(completion, model, 0.0)
    except Exception as exc:
        return custom_id, KimiError("malformed", f"batch line {custom_id}: {_short(str(exc))}")


def _clean_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"id": call.get("id", ""), "type": call.get("type", "function"),
            "function": {"name": fn.get("name", ""), "arguments": fn.get("arguments") or ""}}


@dataclass
class Options:
    """Per-call choices the user can make; ``None`` means "leave it to the server"."""

    max_completion_tokens: int | None = None
    think: bool | None = None
    effort: str | None = None
    prefix: str | None = None
    json: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    sampling: dict[str, Any] = field(default_factory=dict)
    cache_ttl: str | None = None
    stream: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def wire_body(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON body a ``build_request`` result puts on the wire (``extra_body`` merged in).

    A Batch API line carries this body, since no SDK is there to merge it.
    """
    body = {k: v for k, v in request.items() if k != "extra_body"}
    body.update(request.get("extra_body") or {})
    return body


def build_request(model: Model, messages: list[dict[str, Any]], opts: Options,
                  input_tokens: int, server: str = "moonshot") -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create``: only what Kimi wants sent."""
    if opts.prefix is not None and opts.json:
        raise KimiError("bad_request", "--prefix (partial mode) cannot be combined with --json")
    body: dict[str, Any] = {"model": model.id, "messages": list(messages)}
    if opts.prefix is not None:
        body["messages"].append({"role": "assistant", "content": opts.prefix, "partial": True})
    extra: dict[str, Any] = dict(opts.extra)
    # Input + output must fit the window; the cap also counts against rate limits, so it is
    # always sent explicitly rather than left to the server's default.
    room = max(model.context_length - input_tokens, 1)
    cap = max(1, min(opts.max_completion_tokens or DEFAULT_COMPLETION_TOKENS, room))
    if server == "llama.cpp":
        body["max_tokens"] = cap
    elif server == "openai":
        body["max_completion_tokens"] = cap
        body["max_tokens"] = cap
    else:
        body["max_completion_tokens"] = cap
    if model.thinking == "default" and opts.think is False:
        extra["thinking"] = {"type": "disabled"}
    elif model.thinking == "default" and opts.think is True and server == "moonshot":
        extra["thinking"] = {"type": "enabled"}
    if opts.effort:
        body["reasoning_effort"] = opts.effort
    if opts.json:
        body["response_format"] = {"type": "json_object"}
    if opts.tools:
        body["tools"] = opts.tools
        if opts.tool_choice is not None:
            body["tool_choice"] = opts.tool_choice
    for name, value in opts.sampling.items():
        if value is not None:
            body[name] = value
    if opts.cache_ttl:
        extra["prompt_cache_options"] = {"ttl": opts.cache_ttl}
    if opts.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if extra:
        body["extra_body"] = extra
    return body


class KimiClient:
    """One HTTP connection pool per backend, reused for every call (no client per prompt).

    The key lives only in the SDK client; ``repr`` and errors never contain it.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 600.0,
                 max_retries: int = 4, retry_base: float = 1.0, server: str = "auto") -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_base = retry_base
        self._server = server
        self._sdk: Any = None
        self._async_sdk: Any = None
        self._models: dict[str, dict[str, Any]] | None = None
        self._loop: Any = None
        self._loop_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KimiClient(base_url={self.base_url!r}, server={self.server!r})"

    # -- plumbing -----------------------------------------------------------------------
    @property
    def sdk(self) -> Any:
        if self._sdk is None:
            self._sdk = self._make_sdk("OpenAI")
        return self._sdk

    @property
    def async_sdk(self) -> Any:
        if self._async_sdk is None:
            self._async_sdk = self._make_sdk("AsyncOpenAI")
        return self._async_sdk

    def _make_sdk(self, kind: str) -> Any:
        # Imported on first use so that %load_ext stays as fast as importing the SDK alone;
        # the SDK's own retries are off because ours classify by error.type.
        import openai

        return getattr(openai, kind)(base_url=self.base_url, api_key=self._api_key,
                                     timeout=self.timeout, max_retries=0)

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, "[key hidden]") if self._api_key else text

    def error(self, exc: BaseException) -> KimiError:
        err = classify(exc, self.base_url)
        err.detail = self.redact(err.detail)
        err.args = (err.line(),)
        return err

    @property
    def server(self) -> str:
        if self._server == "auto":
            host = urlparse(self.base_url).netloc
            if "moonshot" in host:
                return "moonshot"
            self.models()
            return self._server if self._server != "auto" else "openai"
        return self._server

    # -- models -------------------------------------------------------------------------
    def models(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """``GET /v1/models`` once per client, cached; ``{}`` if the server will not say."""
        if self._models is None or refresh:
            try:
                page = self.sdk.models.list()
                self._models = {m.id: _dump(m) for m in page.data}
            except Exception as exc:
                err = classify(exc, self.base_url) if _is_api_error(exc) else None
                if err is not None and err.kind in ("auth", "connection", "timeout"):
                    raise self.error(exc) from None
                self._models = {}
            if self._server == "auto":
                owners = {str(m.get("owned_by", "")) for m in self._models.values()}
                owner = next(iter(owners), "")
                self._server = detect_server(self.base_url, owner)
        return self._models

    # -- chat ---------------------------------------------------------------------------
    def chat(self, body: dict[str, Any], on_delta: OnDelta | None = None,
             sleep: Callable[[float], None] = time.sleep) -> Reply:
        """One chat completion with retries; streams through ``on_delta`` when asked.

        Retries rate limits, overload, 5xx and connection errors with exponential backoff
        and jitter (honouring Retry-After), but only while nothing has been streamed yet.
        """
        def once() -> Reply:
            started = time.perf_counter()
            assembler = Assembler(body["model"], on_delta)
            try:
                if not body.get("stream"):
                    completion = self.sdk.chat.completions.create(**body)
                    return reply_from_completion(completion, body["model"],
                                                 time.perf_counter() - started)
                stream = self.sdk.chat.completions.create(**body)
                try:
                    for chunk in stream:
                        assembler.feed(chunk)
                finally:
                    stream.close()
                return assembler.finish(time.perf_counter() - started)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                err = self.error(exc)
                if err.kind == "connection" and assembler.started:
                    # The server answered and then hung up mid-reply: a cut stream, not an
                    # unreachable server (and not retried: part of it was already shown).
                    err = KimiError("stream_cut", f"{_host(self.base_url)} closed the "
                                    "connection in the middle of the reply")
                err.partial = err.partial or assembler.partial_text
                err.streamed = assembler.started
                raise err from None

        return self._retrying(once, sleep)

    def retry_delay(self, err: KimiError, attempt: int) -> float | None:
        """The retry policy, shared by every caller: seconds to wait, or None to give up.

        Rate limits, overload, 5xx and connection errors are retried (never quota, auth or
        bad requests), but only while nothing has been streamed to the user yet.
        """
        if not err.retryable or err.streamed or attempt >= self.max_retries:
            return None
        return self.backoff(attempt, err.retry_after)

    async def achat(self, body: dict[str, Any],
                    before_attempt: Callable[[], Awaitable[None]] | None = None) -> Reply:
        """``chat`` for ``async_sdk`` (run it on ``self.submit``): same policy, no streaming.

        ``before_attempt`` is awaited before every attempt, retries included, so a caller's
        rate limiter counts each request the server sees.
        """
        import asyncio

        body = {**body, "stream": False}
        body.pop("stream_options", None)
        attempt = 0
        while True:
            if before_attempt is not None:
                await before_attempt()
            started = time.perf_counter()
            try:
                completion = await self.async_sdk.chat.completions.create(**body)
                return reply_from_completion(completion, body["model"],
                                             time.perf_counter() - started)
            except (KeyboardInterrupt, asyncio.CancelledError):
                raise
            except Exception as exc:
                err = self.error(exc)
                delay = self.retry_delay(err, attempt)
                if delay is None:
                    raise err from None
                await asyncio.sleep(delay)
                attempt += 1

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on this client's own event loop (a daemon thread).

        ``async_sdk``'s connection pool belongs to the loop that first used it, and a notebook
        kernel already runs a loop in the main thread; one long-lived loop per client lets
        every fan-out reuse the same pool.
        """
        import asyncio
        import threading

        with self._loop_lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="kimi-client-loop",
                                 daemon=True).start()
                self._loop = loop
        return self.submit_on(self._loop, coro)

    def close(self) -> None:
        """Close both connection pools and stop the fan-out loop (on unload or reconfigure)."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if self._async_sdk is not None and loop is not None and loop.is_running():
            try:
                self.submit_on(loop, self._async_sdk.close()).result(timeout=5)
            except Exception:  # a pool that will not close cleanly is dropped anyway
                pass
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._sdk is not None:
            self._sdk.close()
        self._sdk = self._async_sdk = None

    @staticmethod
    def submit_on(loop: Any, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, loop)

    # -- files and batches ----------------------------------------------------------------
    def _retrying(self, call: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                err = self.error(exc)
                delay = self.retry_delay(err, attempt)
                if delay is None:
                    raise err from None
                sleep(delay)
                attempt += 1

    def upload_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """``POST /v1/files``; the file object (``id``, ``bytes``, ``purpose``...)."""
        return _dump(self._retrying(
            lambda: self.sdk.files.create(file=(filename, data), purpose=purpose)))

    def create_batch(self, input_file_id: str, metadata: dict[str, str] | None = None,
                     completion_window: str = "24h") -> dict[str, Any]:
        """``POST /v1/batches`` for chat completions; the batch object."""
        kwargs: dict[str, Any] = {"input_file_id": input_file_id,
                                  "endpoint": "/v1/chat/completions",
                                  "completion_window": completion_window}
        if metadata:
            kwargs["metadata"] = metadata
        return _dump(self._retrying(lambda: self.sdk.batches.create(**kwargs)))

    def batch(self, batch_id: str) -> dict[str, Any]:
        """``GET /v1/batches/{id}``: status, ``request_counts``, output and error file ids."""
        return _dump(self._retrying(lambda: self.sdk.batches.retrieve(batch_id)))

    def file_content(self, file_id: str) -> bytes:
        """``GET /v1/files/{id}/content`` as bytes (a batch's output or error JSONL)."""
        return self._retrying(lambda: self.sdk.files.content(file_id).read())

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt + 1``: Retry-After if sent, else exp + jitter."""
        if retry_after is not None:
            return min(retry_after, 120.0)
        return self.retry_base * (2 ** attempt) * (0.5 + random.random())

    def estimate_tokens(self, model: str, messages: Iterable[dict[str, Any]]) -> int | None:
        """Moonshot's token-count endpoint; ``None`` where the server has none."""
        try:
            resp = self.sdk.post("/tokenizers/estimate-token-count",
                                 body={"model": model, "messages": list(messages)}, cast_to=object)
            return int(resp["data"]["total_tokens"])
        except Exception:
            return None

    def extract_file(self, path: str) -> str:
        """Text of a PDF or Office file through Moonshot's ``file-extract`` purpose.

        Uploads the file (``POST /v1/files``), reads ``GET /v1/files/{id}/content`` (JSON with
        ``content``) and deletes the upload, since an account may hold only 1,000 files.
        """
        try:
            with open(path, "rb") as f:
                uploaded = self.sdk.files.create(file=f, purpose="file-extract")
            try:
                raw = self.sdk.files.content(uploaded.id).text
            finally:
                try:
                    self.sdk.files.delete(uploaded.id)
                except Exception:  # the text is what matters; a stale upload is harmless
                    pass
            data = json.loads(raw)
        except OSError:
            raise
        except json.JSONDecodeError as exc:
            raise KimiError("malformed", f"file-extract answered with non-JSON ({exc.msg})"
                            ) from None
        except Exception as exc:
            raise self.error(exc) from None
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            raise KimiError("malformed", "file-extract answered without a 'content' field")
        return data["content"]


def _is_api_error(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, openai.APIError)
