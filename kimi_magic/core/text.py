"""Text helpers every layer shares: one clipper for everything shown or sent in short form."""

from __future__ import annotations

from typing import Any


def clip(text: Any, limit: int, *, marker: str = "…") -> str:
    """``text`` on one line (white space folded), cut to ``limit`` characters with ``marker``.

    >>> clip("a  long\\n line of text", 12)
    'a long line…'
    >>> clip("short", 12)
    'short'
    """
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    return flat[: max(limit - len(marker), 0)] + marker
