"""Replies as the server produced them: ``Reply`` and ``Usage`` from a completion, from a
stream (``Assembler``, whatever the server's dialect) or from a Batch API output line.

Usage sits in ``chunk.usage`` or ``choices[0].usage``; cached tokens at the top level or under
``prompt_tokens_details``; ``reasoning_content`` outside the SDK's types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import KimiError, error_from_entry, short
from .events import ContentDelta, OnEvent, ReasoningDelta, TextDelta, ToolCallStarted
from .messages import MessageFields


@dataclass
class Usage:
    """Token counts of one call; ``exact`` is False when the server sent none (estimates)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    exact: bool = True

    def add(self, other: Usage) -> None:
        """Accumulate another call's counts (a tool loop, a fan-out); estimates stay marked."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.exact = self.exact and other.exact

    @classmethod
    def parse(cls, raw: Any) -> Usage | None:
        """Read usage wherever Kimi put it: top-level or nested cached/cache-write tokens."""
        if raw is None:
            return None
        data = raw if isinstance(raw, dict) else dump(raw)
        if not data or "prompt_tokens" not in data:
            return None
        details = data.get("prompt_tokens_details") or {}
        out_details = data.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            cached_tokens=int(data.get("cached_tokens") or details.get("cached_tokens") or 0),
            cache_write_tokens=int(data.get("cache_write_tokens")
                                   or details.get("cache_write_tokens") or 0),
            reasoning_tokens=int(out_details.get("reasoning_tokens") or 0),
        )


def dump(obj: Any) -> dict[str, Any]:
    """An SDK object (or a dict) as a plain dict, without the fields the server left out."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_none=True)
    return dict(obj) if isinstance(obj, dict) else {}


@dataclass
class Reply(MessageFields):
    """An assistant message exactly as the server produced it, with its usage."""

    message: dict[str, Any]
    usage: Usage | None
    finish_reason: str | None
    model: str
    seconds: float = 0.0

    @property
    def content(self) -> str:
        return self.message.get("content") or ""

    @property
    def cut(self) -> bool:
        """The reply stopped at its output cap (``finish_reason`` ``length``)."""
        return self.finish_reason == "length"

    @property
    def wants_tools(self) -> bool:
        """The reply stopped to have its tool calls run (``finish_reason`` ``tool_calls``)."""
        return bool(self.tool_calls) and self.finish_reason == "tool_calls"

    @property
    def wire_data(self) -> dict[str, Any]:
        return self.message


class Assembler:
    """Builds a ``Reply`` from stream chunks (sync or async), whatever the server's dialect."""

    def __init__(self, model: str, on_delta: OnEvent | None = None) -> None:
        self.model = model
        self.on_delta = on_delta
        self.content: list[str] = []
        self.reasoning: list[str] = []
        #: A ``reasoning_content`` arrived, even an empty one: it goes back as received.
        self.reasoned = False
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.started = False

    def feed(self, chunk: Any) -> None:
        usage = Usage.parse(getattr(chunk, "usage", None))
        for choice in chunk.choices or ():
            extra = choice.model_extra or {}
            usage = usage or Usage.parse(extra.get("usage"))
            delta = choice.delta
            if delta is not None:
                reasoning = getattr(delta, "reasoning_content", None)
                if reasoning is None:
                    reasoning = (delta.model_extra or {}).get("reasoning_content")
                if isinstance(reasoning, str):
                    self.reasoned = True
                    if reasoning:
                        self._emit(ReasoningDelta(reasoning), self.reasoning)
                if delta.content:
                    self._emit(ContentDelta(delta.content), self.content)
                for call in delta.tool_calls or ():
                    self._tool_delta(call)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        if usage:
            self.usage = usage

    def _emit(self, event: TextDelta, sink: list[str]) -> None:
        self.started = True
        sink.append(event.text)
        if self.on_delta:
            self.on_delta(event)

    def _tool_delta(self, call: Any) -> None:
        self.started = True
        slot = self.tools.setdefault(call.index, {"id": "", "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
        if call.id:
            slot["id"] = call.id
        if call.type:
            slot["type"] = call.type
        fn = call.function
        if fn is not None:
            if fn.name:
                slot["function"]["name"] += fn.name
                if self.on_delta:
                    self.on_delta(ToolCallStarted(fn.name))
            if fn.arguments:
                slot["function"]["arguments"] += fn.arguments

    @property
    def partial_text(self) -> str:
        return "".join(self.content)

    def finish(self, seconds: float) -> Reply:
        if self.finish_reason is None:
            # A stream that ends without finish_reason is cut, even if the socket closed cleanly.
            raise KimiError("stream_cut", "the stream ended before the reply was finished",
                            partial=self.partial_text)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoned:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tools:
            message["tool_calls"] = [self.tools[i] for i in sorted(self.tools)]
        return Reply(message, self.usage, self.finish_reason, self.model, seconds)


def reply_from_completion(completion: Any, model: str, seconds: float) -> Reply:
    """A ``Reply`` from a non-streamed ``ChatCompletion``."""
    choice = completion.choices[0]
    raw = dump(choice.message)
    message: dict[str, Any] = {"role": "assistant", "content": raw.get("content") or ""}
    if isinstance(raw.get("reasoning_content"), str):
        message["reasoning_content"] = raw["reasoning_content"]  # kept even when empty
    for key in ("tool_calls", "name"):
        if raw.get(key):
            message[key] = raw[key]
    if message.get("tool_calls"):
        message["tool_calls"] = [_clean_call(c) for c in message["tool_calls"]]
    usage = Usage.parse(getattr(completion, "usage", None)) or Usage.parse(
        (choice.model_extra or {}).get("usage"))
    return Reply(message, usage, choice.finish_reason, model, seconds)


def parse_batch_line(entry: dict[str, Any], model: str) -> tuple[str, Reply | KimiError]:
    """``(custom_id, Reply or KimiError)`` of one line of a batch's output or error file."""
    from openai.types.chat import ChatCompletion

    custom_id = str(entry.get("custom_id", ""))
    response = entry.get("response") or {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    status = response.get("status_code")
    error = entry.get("error") or (body.get("error") if isinstance(body, dict) else None)
    if error or status != 200:
        return custom_id, error_from_entry(error if isinstance(error, dict) else {}, status)
    try:
        completion = ChatCompletion.model_validate(body)
        return custom_id, reply_from_completion(completion, model, 0.0)
    except Exception as exc:
        return custom_id, KimiError("malformed", f"batch line {custom_id}: {short(str(exc))}")


def _clean_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"id": call.get("id", ""), "type": call.get("type", "function"),
            "function": {"name": fn.get("name", ""), "arguments": fn.get("arguments") or ""}}
