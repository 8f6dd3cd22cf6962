"""The simulator's "Kimi tokenizer": a deterministic, fast stand-in for the real one.

Rules (the same for ``usage``, the window checks and ``/v1/tokenizers/estimate-token-count``):

* text counts ``ceil(utf8_bytes / 4)`` tokens;
* one message counts ``ceil(bytes of all its text / 4) + 4``, where its text is the content
  (a string, or the ``text`` parts of a list), ``reasoning_content`` and the ``arguments``
  of its tool calls;
* each image part (``image_url``) counts a flat 256 tokens, whatever its size;
* a request's prompt is the sum over its messages, plus ``ceil(len(tools JSON) / 4)`` when
  it has ``tools``.

The same pass that counts a message also hashes its canonical form (role, content, reasoning,
tool calls, tool id, name), so the prompt cache can compare whole messages by hash: a 1 MB
body is counted and hashed in a few milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

#: Flat cost of one image part.
IMAGE_TOKENS = 256
#: Per-message overhead for the role and the chat template's separators.
MESSAGE_OVERHEAD = 4

_SEP = b"\x1f"


def text_tokens(text: str) -> int:
    """Tokens for a piece of generated or prompt text."""
    return bytes_tokens(len(text.encode("utf-8", "surrogatepass")))


def bytes_tokens(n_bytes: int) -> int:
    return (n_bytes + 3) // 4


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the ``text`` parts of a list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


def _dump(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class PromptDigest:
    """Per-message token counts and chained hashes of one request's prompt.

    ``chain[i]`` hashes messages ``0..i`` together, so two prompts share their first ``k``
    messages exactly when ``chain[k-1]`` is equal.
    """

    tokens: tuple[int, ...]
    chain: tuple[bytes, ...]
    tools_tokens: int

    @property
    def total(self) -> int:
        return sum(self.tokens) + self.tools_tokens

    def prefix_tokens(self, n_messages: int) -> int:
        return sum(self.tokens[:n_messages])


def _message_digest(message: dict[str, Any]) -> tuple[int, bytes]:
    """Token count and hash of one message, from one pass over its text."""
    h = hashlib.blake2b(digest_size=16)
    n_bytes = 0
    images = 0
    h.update(str(message.get("role", "")).encode())
    h.update(_SEP)
    content = message.get("content")
    if isinstance(content, str):
        raw = content.encode("utf-8", "surrogatepass")
        n_bytes += len(raw)
        h.update(raw)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                raw = str(part.get("text", "")).encode("utf-8", "surrogatepass")
                n_bytes += len(raw)
                h.update(raw)
            else:
                # Images (and any other part) are opaque: a flat cost, hashed as JSON.
                images += 1
                h.update(_dump(part))
            h.update(b"\x1e")
    elif content is not None:
        h.update(_dump(content))
    h.update(_SEP)
    reasoning = message.get("reasoning_content")
    if reasoning:
        raw = str(reasoning).encode("utf-8", "surrogatepass")
        n_bytes += len(raw)
        h.update(raw)
    h.update(_SEP)
    for call in message.get("tool_calls") or ():
        function = (call or {}).get("function") or {}
        args = str(function.get("arguments") or "").encode("utf-8", "surrogatepass")
        n_bytes += len(args)
        h.update(str(call.get("id", "")).encode())
        h.update(str(function.get("name", "")).encode())
        h.update(args)
        h.update(b"\x1e")
    h.update(_SEP)
    h.update(str(message.get("tool_call_id", "")).encode())
    h.update(_SEP)
    h.update(str(message.get("name", "")).encode())
    h.update(b"p" if message.get("partial") else b"-")
    return bytes_tokens(n_bytes) + MESSAGE_OVERHEAD + images * IMAGE_TOKENS, h.digest()


def digest_prompt(messages: list[dict[str, Any]], tools: Any = None) -> PromptDigest:
    """Count and hash a prompt (messages plus optional tools)."""
    tokens: list[int] = []
    chain: list[bytes] = []
    previous = b""
    for message in messages:
        n, digest = _message_digest(message)
        tokens.append(n)
        previous = hashlib.blake2b(previous + digest, digest_size=16).digest()
        chain.append(previous)
    tools_tokens = bytes_tokens(len(_dump(tools))) if tools else 0
    return PromptDigest(tuple(tokens), tuple(chain), tools_tokens)


def count_prompt_tokens(messages: list[dict[str, Any]], tools: Any = None) -> int:
    """Prompt tokens of a request, as reported in ``usage.prompt_tokens``."""
    return digest_prompt(messages, tools).total
