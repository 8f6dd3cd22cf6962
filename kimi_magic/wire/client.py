"""``KimiClient``: one connection pool per backend, the server's dialect, chat calls.

The client sends what ``request.build_request`` built, reads replies through ``reply``,
classifies failures through ``errors`` and retries them through ``retry``; files and batches
hang off it as ``client.files`` and ``client.batches``. Works the same against Moonshot,
self-hosted OpenAI-compatible servers (vLLM, SGLang, llama.cpp) and the simulator.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlparse

from ..core import hints
from ..core.redact import KEY_HIDDEN, redact
from ..core.text import clip
from .errors import KimiError, classify, host, is_api_error
from .events import OnEvent, Reset
from .files import Batches, Files
from .loop import LoopThread
from .reply import Assembler, Reply, dump, reply_from_completion
from .request import wire_body
from .retry import RetryPolicy

T = TypeVar("T")

#: A base URL path that ends in an API version (``/v1``, ``/api/v3``).
_VERSIONED = re.compile(r"/v\d+$")

def guess_server(base_url: str, owned_by: str = "") -> str:
    """The server kind from its URL, then from ``/v1/models``' ``owned_by``."""
    if "moonshot" in urlparse(base_url).netloc:
        return "moonshot"
    owner = owned_by.lower()
    if owner in ("moonshot", "moonshotai"):
        return "moonshot"
    if owner in ("vllm", "sglang"):
        return "vllm"
    if owner in ("me", "llamacpp", "llama.cpp"):
        return "llama.cpp"
    return "openai"


def as_sent(request: dict[str, Any]) -> dict[str, Any]:
    """``chat.completions.create`` keywords that send ``request`` without the SDK re-walking it.

    The SDK converts every keyword argument through its TypedDict transform, message by
    message (0.7 s of a 0.75 s turn at 2,000 messages), but merges ``extra_body`` into the
    JSON unconverted. Our messages are already wire dicts, so the whole body travels there;
    ``model``, an empty ``messages`` (both required arguments, overridden by the body) and
    ``stream`` (which picks the return type) stay keywords.
    """
    sent: dict[str, Any] = {"model": request["model"], "messages": [],
                            "extra_body": wire_body(request)}
    if "stream" in request:
        sent["stream"] = request["stream"]
    return sent


class KimiClient:
    """One HTTP connection pool per backend, reused for every call (no client per prompt).

    The key lives only in the SDK client; ``repr`` and errors never contain it.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 600.0,
                 max_retries: int = 4, retry_base: float = 1.0, server: str = "auto") -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.retry = RetryPolicy(self.error, max_retries=max_retries, base=retry_base)
        self._server = server
        self._sdk: Any = None
        self._async_sdk: Any = None
        self._models: dict[str, dict[str, Any]] | None = None
        self._loop_thread = LoopThread()
        self.files = Files(lambda: self.sdk, self.retry, self.error)
        self.batches = Batches(lambda: self.sdk, self.retry, self.error)

    def __repr__(self) -> str:
        return f"KimiClient(base_url={self.base_url!r}, server={self._server!r})"

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    @max_retries.setter
    def max_retries(self, value: int) -> None:
        self.retry.max_retries = value

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
        """``text`` with the API key replaced (servers echo refused keys back)."""
        return redact(text, [self._api_key], mark=KEY_HIDDEN)

    def error(self, exc: BaseException) -> KimiError:
        """``exc`` as a ``KimiError`` whose line never contains the key."""
        err = classify(exc, self.base_url)
        err.detail = self.redact(err.detail)
        return err.refresh()

    # -- the server's dialect ---------------------------------------------------------------
    @property
    def server(self) -> str:
        """The server kind as known so far: set, detected, or ``"auto"`` before detection."""
        return self._server

    def detect_server(self) -> str:
        """The server kind, found once: from the setting or URL, else ``GET /v1/models``.

        It decides the output-cap field and the thinking switch of every request body.
        """
        if self._server == "auto":
            if "moonshot" in urlparse(self.base_url).netloc:
                self._server = "moonshot"
            else:
                self.models()
                if self._server == "auto":
                    self._server = "openai"
        return self._server

    def models(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """``GET /v1/models`` once per client, cached; ``{}`` if the server will not say."""
        if self._models is None or refresh:
            try:
                page = self.sdk.models.list()
                self._models = {m.id: dump(m) for m in page.data}
            except Exception as exc:
                err = classify(exc, self.base_url) if is_api_error(exc) else None
                if err is not None and err.kind in ("auth", "connection", "timeout"):
                    raise self.error(exc) from None
                self._models = {}
            if self._server == "auto":
                owners = {str(m.get("owned_by", "")) for m in self._models.values()}
                self._server = guess_server(self.base_url, next(iter(owners), ""))
        return self._models

    def count_tokens(self, model: str, messages: list[dict[str, Any]]) -> int:
        """``POST /v1/tokenizers/estimate-token-count``: the server's count of ``messages``
        (tools schemas are not counted there). One attempt: a count is a refinement."""
        try:
            raw = self.sdk.post("/tokenizers/estimate-token-count",
                                body={"model": model, "messages": messages}, cast_to=object)
        except Exception as exc:
            raise self.error(exc) from None
        data = raw.get("data") if isinstance(raw, dict) else None
        total = data.get("total_tokens") if isinstance(data, dict) else None
        if not isinstance(total, int) or isinstance(total, bool):
            raise KimiError("bad_response", "the token count came back without "
                            "data.total_tokens")
        return total

    # -- chat ---------------------------------------------------------------------------
    def chat(self, body: dict[str, Any], on_delta: OnEvent | None = None,
             sleep: Callable[[float], None] = time.sleep) -> Reply:
        """One chat completion under the retry policy; streams events to ``on_delta``."""
        attempts = 0

        def attempt() -> Reply:
            nonlocal attempts
            if attempts and on_delta:
                on_delta(Reset())
            attempts += 1
            return self._chat_once(body, on_delta)

        return self.retry.run(attempt, sleep)

    def _chat_once(self, body: dict[str, Any], on_delta: OnEvent | None) -> Reply:
        started = time.perf_counter()
        assembler = Assembler(body["model"], on_delta)
        try:
            if not body.get("stream"):
                completion = self.sdk.chat.completions.create(**as_sent(body))
                return reply_from_completion(completion, body["model"],
                                             time.perf_counter() - started)
            stream = self.sdk.chat.completions.create(**as_sent(body))
            try:
                for chunk in stream:
                    assembler.feed(chunk)
            finally:
                stream.close()
            return assembler.finish(time.perf_counter() - started)
        except Exception as exc:
            err = self.error(exc)
            if err.kind == "connection" and assembler.started:
                # The server answered and then hung up mid-reply: a cut stream, not an
                # unreachable server (and not retried: part of it was already shown).
                err = KimiError("stream_cut", f"{host(self.base_url)} closed the "
                                "connection in the middle of the reply")
            if err.kind == "not_found":
                self._explain_not_found(err, body["model"])
            err.partial = err.partial or assembler.partial_text
            err.streamed = assembler.started
            raise err from None

    def _explain_not_found(self, err: KimiError, model_id: str) -> None:
        # A chat 404 is either a base URL without its API version (every path is unknown)
        # or a model this server does not serve; the generic "retired model" advice fits
        # neither well.
        if not _VERSIONED.search(urlparse(self.base_url).path):
            err.advice = (f"The base URL {self.base_url} probably lacks /v1: try "
                          f"{hints.setting('base_url', repr(self.base_url + '/v1'))}.")
        else:
            try:
                served = sorted(self.models(refresh=True))
            except KimiError:
                served = []
            if served and model_id not in served:
                err.advice = clip(f"This server does not serve {model_id!r}; it serves: "
                                  f"{', '.join(served)}.", 400)
        err.refresh()

    async def achat(self, body: dict[str, Any],
                    before_attempt: Callable[[], Awaitable[None]] | None = None) -> Reply:
        """``chat`` for ``async_sdk`` (run it on ``self.submit``): same policy, no streaming.

        ``before_attempt`` is awaited before every attempt, retries included, so a caller's
        rate limiter counts each request the server sees.
        """
        body = {**body, "stream": False}
        body.pop("stream_options", None)

        async def once() -> Reply:
            started = time.perf_counter()
            completion = await self.async_sdk.chat.completions.create(**as_sent(body))
            return reply_from_completion(completion, body["model"], time.perf_counter() - started)

        return await self.retry.arun(once, before_attempt)

    # -- the async loop -------------------------------------------------------------------
    @property
    def loop(self) -> Any:
        """The event loop ``submit`` runs on (None before the first fan-out)."""
        return self._loop_thread.loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on this client's own event loop (a daemon thread)."""
        return self._loop_thread.submit(coro)

    def close(self) -> None:
        """Close both connection pools and stop the fan-out loop (on unload or reconfigure)."""
        self._loop_thread.stop(self._async_sdk.close() if self._async_sdk is not None else None)
        if self._sdk is not None:
            self._sdk.close()
        self._sdk = self._async_sdk = None
