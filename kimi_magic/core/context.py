"""The context a request is built from: immutable messages in four layers.

``Context`` is a value: system prompt, pins, summary, history. Every change makes a new
``Context`` that shares the unchanged messages, so a snapshot is a reference (O(1) time and
memory) and rollback is an assignment. Requests are built in the same order every time —
system, pins, summary, then append-only history — so consecutive requests share a
byte-identical prefix and Kimi's prompt cache hits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from ..wire.messages import MessageFields
from . import tokens


class Message(MessageFields):
    """One wire message, immutable, kept exactly as sent or received.

    ``data`` is the OpenAI-format dict (assistant replies keep ``reasoning_content`` and
    ``tool_calls`` untouched); ``meta`` is ours and never sent (cell id, turn number).
    """

    __slots__ = ("data", "meta", "_tokens", "_hash", "__weakref__")

    def __init__(self, data: Mapping[str, Any], meta: Mapping[str, Any] | None = None):
        self.data = dict(data)
        self.meta = dict(meta or {})
        self._tokens: int | None = None
        self._hash: str | None = None

    @classmethod
    def of(cls, role: str, content: Any, **extra: Any) -> Message:
        return cls({"role": role, "content": content, **extra})

    @property
    def role(self) -> str:
        return self.data["role"]

    @property
    def content(self) -> Any:
        return self.data.get("content")

    @property
    def text(self) -> str:
        """The message's text content (image parts left out)."""
        content = self.content
        if isinstance(content, list):
            return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        return content or ""

    @property
    def wire_data(self) -> dict[str, Any]:
        return self.data

    @property
    def tokens(self) -> int:
        """Local estimate, computed once per message (never re-tokenised per turn)."""
        if self._tokens is None:
            self._tokens = tokens.count_message(self.data)
        return self._tokens

    @property
    def hash(self) -> str:
        """Content address: the same wire bytes give the same hash."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.json.encode()).hexdigest()[:32]
        return self._hash

    @property
    def json(self) -> str:
        return json.dumps(self.data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self.data == other.data

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        text = self.text.replace("\n", " ")
        return f"Message({self.role}: {text[:60]!r}{'...' if len(text) > 60 else ''})"


@dataclass(frozen=True)
class Pin:
    """Content pinned into the context: a rendered block plus how to re-render it."""

    name: str
    kind: str
    source: str
    message: Message
    frozen: bool = False
    updated: float = 0.0
    max_tokens: int | None = None

    @property
    def tokens(self) -> int:
        return self.message.tokens


def block(name: str, kind: str, source: str, body: str) -> str:
    """The delimited text of one pin, as the model sees it."""
    return (f'<pinned name="{_attr(name)}" kind="{_attr(kind)}" source="{_attr(source)}">\n'
            f"{body}\n</pinned>")


def _attr(value: str) -> str:
    return (value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;").replace("\n", " "))


def rounds(history: Iterable[Message]) -> list[list[Message]]:
    """Group history into rounds: a user message and everything up to the next one.

    Tool calls and their results always fall in the same round, so cutting between rounds
    never orphans a tool message.
    """
    out: list[list[Message]] = []
    for m in history:
        if m.role == "user" or not out:
            out.append([m])
        else:
            out[-1].append(m)
    return out


@dataclass(frozen=True)
class Context:
    """What the next request will contain, in the order it is sent."""

    system: Message | None = None
    pins: tuple[Pin, ...] = ()
    summary: Message | None = None
    history: tuple[Message, ...] = ()
    #: Store node of the last history message (None until persisted / when empty).
    node: int | None = field(default=None, compare=False)

    def messages(self) -> Iterator[Message]:
        if self.system is not None:
            yield self.system
        for pin in self.pins:
            yield pin.message
        if self.summary is not None:
            yield self.summary
        yield from self.history

    def wire(self) -> list[dict[str, Any]]:
        return [m.data for m in self.messages()]

    @cached_property
    def layers(self) -> dict[str, int]:
        """Estimated tokens per layer: system, pins, summary, history."""
        return {
            "system": self.system.tokens if self.system else 0,
            "pins": sum(p.tokens for p in self.pins),
            "summary": self.summary.tokens if self.summary else 0,
            "history": sum(m.tokens for m in self.history),
        }

    @property
    def tokens(self) -> int:
        return sum(self.layers.values())

    @property
    def rounds(self) -> list[list[Message]]:
        return rounds(self.history)

    def append(self, *messages: Message, node: int | None = None) -> Context:
        return replace(self, history=self.history + tuple(messages), node=node)

    def pin(self, name: str) -> Pin | None:
        return next((p for p in self.pins if p.name == name), None)


@dataclass(frozen=True)
class Snapshot:
    """A saved context: a reference to immutable messages, so taking one is O(1).

    The context may be given as a loader: a resumed session reads a snapshot's messages from
    the store only when ``context`` is first used, so resuming costs what the user sees, not
    rounds × snapshots.
    """

    id: int
    label: str
    time: float
    #: Rounds of history the snapshot holds.
    rounds: int
    tokens: int
    _context: Context | Callable[[], Context] = field(repr=False, compare=False)
    parent: int | None = None
    auto: bool = False

    @property
    def context(self) -> Context:
        if not isinstance(self._context, Context):
            object.__setattr__(self, "_context", self._context())
        return self._context  # type: ignore[return-value]

    def holds(self, ctx: Context) -> bool:
        """Whether this snapshot's context is ``ctx`` itself; never loads it (a context not
        loaded yet cannot be one the session holds)."""
        return self._context is ctx
