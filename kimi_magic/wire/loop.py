"""The client's own event loop, on a daemon thread, for async calls (fan-out, map).

``AsyncOpenAI``'s connection pool belongs to the loop that first used it, and a notebook
kernel already runs a loop in the main thread; one long-lived loop per client lets every
fan-out reuse the same pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop started on first use and stopped by ``stop``."""

    def __init__(self, name: str = "kimi-client-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop, or None before the first ``submit`` (and after ``stop``)."""
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop, starting it if needed."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=self.name, daemon=True).start()
                self._loop = loop
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self, last: Coroutine[Any, Any, Any] | None = None, timeout: float = 5) -> None:
        """Run ``last`` (closing what lives on the loop), then stop the loop."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            if last is not None:
                last.close()
            return
        if last is not None:
            if loop.is_running():
                try:
                    asyncio.run_coroutine_threadsafe(last, loop).result(timeout=timeout)
                except Exception:  # what will not close cleanly is dropped with the loop
                    pass
            else:
                last.close()
        loop.call_soon_threadsafe(loop.stop)
