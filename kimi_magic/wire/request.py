"""Request bodies as Kimi wants them: the output cap clamped to the window, sampling only
when asked, thinking and effort switches, partial mode, JSON mode, prompt-cache options, and
history messages in the shape Kimi accepts back (see ``wire_messages``).

``build_request`` gives keyword arguments for ``chat.completions.create``; ``wire_body`` the
JSON those put on the wire; ``batch_line`` one Batch API input line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..core.models import Model
from .errors import KimiError
from .messages import prefix_message

#: Output cap when the user sets none; thinking needs >= 16K to finish its reasoning.
DEFAULT_COMPLETION_TOKENS = 32_768


@dataclass
class Options:
    """Per-call choices the user can make; ``None`` means "leave it to the server"."""

    max_completion_tokens: int | None = None
    think: bool | None = None
    effort: str | None = None
    prefix: str | None = None
    json: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    sampling: dict[str, Any] = field(default_factory=dict)
    cache_ttl: str | None = None
    stream: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def wire_body(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON body a ``build_request`` result puts on the wire (``extra_body`` merged in).

    A Batch API line carries this body, since no SDK is there to merge it.
    """
    body = {k: v for k, v in request.items() if k != "extra_body"}
    body.update(request.get("extra_body") or {})
    return body


def thinks(model: Model, opts: Options) -> bool:
    """Whether a request with ``opts`` makes ``model`` think (kimi-k2.6 does by default)."""
    return model.thinking == "always" or (model.thinking == "default" and opts.think is not False)


def wire_messages(messages: list[dict[str, Any]], thinking: bool) -> list[dict[str, Any]]:
    """The history as Kimi takes it back; the stored messages are left as they are.

    An assistant tool-call message without visible text omits ``content`` (Kimi refuses it
    empty; Moonshot's own client drops it). A thinking request needs a ``reasoning_content``
    on every assistant tool-call message: one made with thinking off (``--web``,
    ``--no-think``) has none, so it goes with an empty one, which Kimi accepts.
    """
    out = []
    for message in messages:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            fixed = dict(message)
            if not (fixed.get("content") or "").strip() and "content" in fixed:
                del fixed["content"]
            if thinking and not isinstance(fixed.get("reasoning_content"), str):
                fixed["reasoning_content"] = ""
            message = fixed
        out.append(message)
    return out


def build_request(model: Model, messages: list[dict[str, Any]], opts: Options,
                  input_tokens: int, server: str = "moonshot") -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create``: only what Kimi wants sent."""
    if opts.prefix is not None and opts.json:
        raise KimiError("bad_request", "--prefix (partial mode) cannot be combined with --json")
    body: dict[str, Any] = {"model": model.id,
                            "messages": wire_messages(messages, thinks(model, opts))}
    if opts.prefix is not None:
        body["messages"].append(prefix_message(opts.prefix))
    extra: dict[str, Any] = dict(opts.extra)
    # Input + output must fit the window; the cap also counts against rate limits, so it is
    # always sent explicitly rather than left to the server's default.
    room = max(model.context_length - input_tokens, 1)
    cap = max(1, min(opts.max_completion_tokens or DEFAULT_COMPLETION_TOKENS, room))
    if server == "llama.cpp":
        body["max_tokens"] = cap
    elif server == "openai":
        body["max_completion_tokens"] = cap
        body["max_tokens"] = cap
    else:
        body["max_completion_tokens"] = cap
    if model.thinking == "default" and opts.think is False:
        extra["thinking"] = {"type": "disabled"}
    elif model.thinking == "default" and opts.think is True and server == "moonshot":
        extra["thinking"] = {"type": "enabled"}
    if opts.effort:
        body["reasoning_effort"] = opts.effort
    if opts.json:
        body["response_format"] = {"type": "json_object"}
    if opts.tools:
        body["tools"] = opts.tools
        if opts.tool_choice is not None:
            body["tool_choice"] = opts.tool_choice
    for name, value in opts.sampling.items():
        if value is not None:
            body[name] = value
    if opts.cache_ttl:
        extra["prompt_cache_options"] = {"ttl": opts.cache_ttl}
    if opts.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if extra:
        body["extra_body"] = extra
    return body


def batch_line(custom_id: str, body: dict[str, Any]) -> str:
    """One line of a Batch API input file (``body`` as ``wire_body`` gives it)."""
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": body}, ensure_ascii=False)
