"""The message shapes Kimi reads: tool results, image parts, ``$web_search``, the assistant
message as it goes back (reasoning kept, partial prefix joined).

Code outside ``wire`` builds and inspects messages through these functions only.
"""

from __future__ import annotations

import base64
import json
from typing import Any

#: Kimi's builtin search tool: the server runs it; the client echoes its arguments back.
WEB_SEARCH = "$web_search"
WEB_SEARCH_TOOL: dict[str, Any] = {"type": "builtin_function",
                                   "function": {"name": WEB_SEARCH}}


def call_name(call: dict[str, Any]) -> str:
    """The function name of one of a reply's ``tool_calls``."""
    return str((call.get("function") or {}).get("name", ""))


def is_web_search(call: dict[str, Any]) -> bool:
    """Whether a tool call (or a tool spec) is Kimi's builtin ``$web_search``."""
    return call_name(call) == WEB_SEARCH


def tool_message(call: dict[str, Any], result: str) -> dict[str, Any]:
    """The ``tool`` message answering ``call`` with ``result``.

    >>> tool_message({"id": "c1", "function": {"name": "f"}}, "42")["role"]
    'tool'
    """
    return {"role": "tool", "tool_call_id": call.get("id", ""), "name": call_name(call),
            "content": result}


def text_part(text: str) -> dict[str, Any]:
    """A text part of a multi-part user message."""
    return {"type": "text", "text": text}


def image_part(data: bytes, mime: str) -> dict[str, Any]:
    """An image part of a user message, inlined as a base64 data URL."""
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


class MessageFields:
    """The fields a thinking model's reply carries, read the same way wherever a message is
    held (a stored ``Message``, a server ``Reply``): the holder names its dict in ``wire_data``.
    """

    __slots__ = ()

    @property
    def wire_data(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def reasoning(self) -> str:
        """The reasoning sent with the message (``reasoning_content``), ``""`` if none."""
        return self.wire_data.get("reasoning_content") or ""

    @property
    def tool_call_id(self) -> str:
        """The id of the call a ``tool`` message answers, ``""`` if none."""
        return self.wire_data.get("tool_call_id") or ""

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls the message makes, ``[]`` if none."""
        return self.wire_data.get("tool_calls") or []


def message_texts(data: dict[str, Any]) -> tuple[list[str], int]:
    """What a message carries that counts as tokens: its texts (content, reasoning, tool
    calls as JSON) and how many image parts.

    >>> message_texts({"role": "user", "content": [text_part("hi"), image_part(b"x", "a/b")]})
    (['hi'], 1)
    """
    texts: list[str] = []
    images = 0
    content = data.get("content")
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            else:
                images += 1
    if data.get("reasoning_content"):
        texts.append(data["reasoning_content"])
    if data.get("tool_calls"):
        texts.append(json.dumps(data["tool_calls"], ensure_ascii=False))
    return texts, images


def prefix_message(prefix: str) -> dict[str, Any]:
    """The assistant message partial mode sends last: the reply continues ``prefix``."""
    return {"role": "assistant", "content": prefix, "partial": True}


def assistant_message(message: dict[str, Any], prefix: str | None = None) -> dict[str, Any]:
    """A reply's message as history keeps it and sends it back.

    ``reasoning_content`` stays verbatim (thinking models want it back with tool calls); in
    partial mode the reply excludes the prefix, so they are joined, and the ``partial`` flag
    is never kept.
    """
    kept = dict(message)
    kept.pop("partial", None)
    if prefix is not None:
        kept["content"] = prefix + (kept.get("content") or "")
    return kept
