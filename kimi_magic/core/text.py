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


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is one (the figures users read: "1 round").

    >>> counted(1, "round"), counted(0, "round"), counted(1_200, "snapshot")
    ('1 round', '0 rounds', '1,200 snapshots')
    """
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def bounded(text: str, limit: int) -> str:
    """``text`` kept whole up to ``limit`` characters, then a line saying what was cut: for
    long output that goes to the model (a tool result, a cell's output).

    >>> bounded("HEY" * 4, 5)
    'HEYHE\\n[... truncated: 5 of 12 characters]'
    >>> bounded("short", 5)
    'short'
    """
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... truncated: {limit:,} of {len(text):,} characters]"
