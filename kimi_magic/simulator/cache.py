"""Kimi's automatic prompt cache, as the simulator models it.

Per API key, every request leaves its prompt as an entry. A later request is charged as
cached for the longest run of leading messages it shares, byte for byte, with any live entry,
provided that run is more than 256 tokens. An entry lives 300 s (3600 s when the request
asked for ``prompt_cache_options``) after its creation or its last hit; a hit renews it.
Times come from the simulator's clock so tests can expire entries with ``advance()``.

Messages are compared through the chained hashes of :class:`PromptDigest`, so finding the
shared prefix is a binary search over hashes, never a character-by-character compare.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from kimi_magic.core.models import CACHE_TTL_LONG_SECONDS, CACHE_TTL_SECONDS

from .clock import SimClock
from .tokens import PromptDigest

#: A shared prefix must be longer than this to count as cached.
MIN_CACHED_TOKENS = 256
#: Entries kept per API key; the least recently used go first.
ENTRIES_PER_KEY = 64


@dataclass
class _Entry:
    chain: tuple[bytes, ...]
    ttl: float
    expires: float


def _shared_messages(a: tuple[bytes, ...], b: tuple[bytes, ...]) -> int:
    """How many leading messages two chains share (chains make equality monotone)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[mid - 1] == b[mid - 1]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class CacheResult:
    cached_tokens: int
    write_tokens: int


class PromptCache:
    def __init__(self, clock: SimClock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[str, OrderedDict[bytes, _Entry]] = {}

    def clear(self) -> None:
        with self._lock:
            self._by_key.clear()

    def use(self, api_key: str, digest: PromptDigest, long_ttl: bool = False) -> CacheResult:
        """Charge one request against the cache, then remember its prompt."""
        ttl = CACHE_TTL_LONG_SECONDS if long_ttl else CACHE_TTL_SECONDS
        total = digest.total
        with self._lock:
            now = self._clock.now()
            entries = self._by_key.setdefault(api_key, OrderedDict())
            for key in [k for k, e in entries.items() if e.expires <= now]:
                del entries[key]
            best, hits = 0, []
            for key, entry in entries.items():
                shared = _shared_messages(entry.chain, digest.chain)
                if shared > best:
                    best, hits = shared, [key]
                elif shared == best and shared:
                    hits.append(key)
            cached = digest.prefix_tokens(best)
            if cached <= MIN_CACHED_TOKENS:
                cached = 0
            else:
                for key in hits:
                    entry = entries[key]
                    entry.ttl = max(entry.ttl, ttl)
                    entry.expires = now + entry.ttl
                    entries.move_to_end(key)
            self._store(entries, digest, ttl, now)
        write = total - cached if total > MIN_CACHED_TOKENS else 0
        return CacheResult(cached, write)

    @staticmethod
    def _store(entries: OrderedDict[bytes, _Entry], digest: PromptDigest, ttl: float,
               now: float) -> None:
        if not digest.chain:
            return
        key = digest.chain[-1]
        entry = entries.get(key)
        if entry is None:
            entries[key] = _Entry(digest.chain, ttl, now + ttl)
        else:
            entry.ttl = max(entry.ttl, ttl)
            entry.expires = now + entry.ttl
            entries.move_to_end(key)
        while len(entries) > ENTRIES_PER_KEY:
            entries.popitem(last=False)
