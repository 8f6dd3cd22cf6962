"""The simulator's clock: real time plus an offset that tests can push forward.

Prompt-cache TTLs and batch timestamps read this clock, so a test can jump five minutes
ahead with ``advance(301)`` instead of sleeping.
"""

from __future__ import annotations

import threading
import time


class SimClock:
    """``now()`` is ``time.time()`` plus everything passed to ``advance()`` so far."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward (never backward) and return the new time."""
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        with self._lock:
            self._offset += float(seconds)
        return self.now()
