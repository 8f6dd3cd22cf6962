"""What a streaming turn tells its viewer, as typed events rather than strings.

A turn's callback receives one of these per thing that happened: a piece of reasoning or
answer text, a tool call starting, a tool's result, or a reset (a fresh attempt: drop the
answer shown so far).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TextDelta:
    """More of the reply's text; the subclass says which part it belongs to."""

    text: str


class ReasoningDelta(TextDelta):
    """More of the model's reasoning (``reasoning_content``)."""


class ContentDelta(TextDelta):
    """More of the answer text."""


@dataclass(frozen=True)
class ToolEvent:
    """Something that happened to a call of the tool ``name``."""

    name: str


class ToolCallStarted(ToolEvent):
    """The model began calling the tool ``name``."""


@dataclass(frozen=True)
class ToolResult(ToolEvent):
    """A tool call finished; ``result`` is what goes back to the model."""

    result: str


@dataclass(frozen=True)
class Reset:
    """A fresh attempt starts: the answer shown so far will be sent again."""


StreamEvent = ReasoningDelta | ContentDelta | ToolCallStarted | ToolResult | Reset

#: Receives every ``StreamEvent`` of a turn while it streams.
OnEvent = Callable[[StreamEvent], None]
