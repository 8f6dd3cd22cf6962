"""The one retry policy: which failures are retried, how long to wait, and the loop itself.

Rate limits, overload, 5xx and connection errors are retried with exponential backoff and
jitter (honouring Retry-After), never quota, auth or bad requests, and only while nothing
has been streamed to the user yet. Sync chat, async fan-out calls and file/batch calls all
run through ``RetryPolicy.run`` / ``RetryPolicy.arun``, which share one loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .errors import KimiError

T = TypeVar("T")

#: Longest wait a server's Retry-After may impose on one attempt.
MAX_RETRY_AFTER = 120.0


class RetryPolicy:
    """How often and how patiently a call is retried; ``to_error`` classifies failures."""

    def __init__(self, to_error: Callable[[BaseException], KimiError], *,
                 max_retries: int = 4, base: float = 1.0) -> None:
        self.to_error = to_error
        self.max_retries = max_retries
        self.base = base

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt + 1``: Retry-After if sent, else exp + jitter."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        return self.base * (2 ** attempt) * (0.5 + random.random())

    def delay(self, err: KimiError, attempt: int) -> float | None:
        """Seconds to wait before trying again after ``err``, or None to give up."""
        if not err.retryable or err.streamed or attempt >= self.max_retries:
            return None
        return self.backoff(attempt, err.retry_after)

    def run(self, call: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
        """``call()`` until it succeeds or the policy gives up (then its ``KimiError``)."""
        async def attempt() -> T:
            return call()

        async def pause(seconds: float) -> None:
            sleep(seconds)

        return _finish(self._loop(attempt, pause, None))

    async def arun(self, call: Callable[[], Awaitable[T]],
                   before_attempt: Callable[[], Awaitable[None]] | None = None) -> T:
        """``run`` for coroutines; ``before_attempt`` is awaited before every attempt."""
        import asyncio

        return await self._loop(call, asyncio.sleep, before_attempt)

    async def _loop(self, call: Callable[[], Awaitable[T]],
                    pause: Callable[[float], Awaitable[None]],
                    before_attempt: Callable[[], Awaitable[None]] | None) -> T:
        # KeyboardInterrupt and asyncio.CancelledError are not Exceptions: never retried.
        attempt = 0
        while True:
            if before_attempt is not None:
                await before_attempt()
            try:
                return await call()
            except Exception as exc:
                err = self.to_error(exc)
                seconds = self.delay(err, attempt)
                if seconds is None:
                    raise err from None
                await pause(seconds)
                attempt += 1


def _finish(coro: Coroutine[Any, Any, T]) -> T:
    # The sync path's awaits never suspend (the call and the sleep are plain functions), so
    # the loop's coroutine runs to completion in one step, on the caller's thread.
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a synchronous call suspended inside the retry loop")
