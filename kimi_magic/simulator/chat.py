"""``POST /v1/chat/completions``: request checks, token accounting and reply shapes.

The checks follow Moonshot's API: retired or unknown models are 404; sampling knobs and
``thinking: disabled`` are refused by the models that always think; ``reasoning_effort``
exists only on models with an effort setting; a request that thinks (any always-thinking
model, or kimi-k2.6 unless thinking is disabled) insists that every earlier assistant tool
call comes back with a ``reasoning_content`` (an empty string counts) and may not offer the
builtin ``$web_search``, which needs thinking disabled; an assistant message may not have
empty content (a tool-call message omits it instead); the context window is enforced in two
steps (input alone, then input plus the requested completion budget).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kimi_magic.core.models import EFFORTS, Model, is_retired, resolve

from .cache import CacheResult
from .errors import invalid, not_found
from .replies import Reply, build_reply, split_deltas
from .tokens import PromptDigest, bytes_tokens, digest_prompt, text_tokens

SAMPLING_KNOBS = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")
ROLES = ("system", "user", "assistant", "tool")
MAX_TOOLS = 128
_TOOL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$")
BUILTIN_TOOLS = ("$web_search",)


@dataclass
class Checked:
    """A request that passed validation, with what the checks learned about it."""

    body: dict[str, Any]
    model: Model
    thinks: bool
    effort: str | None
    digest: PromptDigest
    max_tokens: int | None


@dataclass
class Completion:
    """A finished (possibly truncated) reply with its token accounting."""

    id: str
    created: int
    model: Model
    reply: Reply
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cache: CacheResult
    thinks: bool


#: What ``GET /v1/models`` says about a model id: ``context_length``, ``supports_reasoning``.
ModelInfo = Mapping[str, Mapping[str, Any]]


def check_model(model_id: Any, served: list[str], info: ModelInfo | None = None) -> Model:
    """The served model ``model_id`` names; ``info`` describes ids the table lacks."""
    if not isinstance(model_id, str) or not model_id:
        raise invalid("model is required")
    if is_retired(model_id) or model_id not in served:
        raise not_found(f"Not found the model {model_id} or Permission denied")
    return resolve(model_id, info)


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise invalid(f"messages[{i}] must be an object with a role in {', '.join(ROLES)}")
        if message["role"] == "assistant" and not message.get("partial"):
            _check_assistant_content(i, message)
    return messages


def _is_empty(content: Any) -> bool:
    if isinstance(content, list):
        return all(isinstance(p, dict) and p.get("type") == "text"
                   and not str(p.get("text") or "").strip() for p in content)
    return not str(content or "").strip()


def _check_assistant_content(i: int, message: dict[str, Any]) -> None:
    """Moonshot's chat docs: content must not be empty. A tool-call message may omit it
    (Moonshot's own client does), but not send it empty, though Kimi's replies carry it so."""
    if message.get("tool_calls"):
        if "content" in message and message["content"] is not None \
                and _is_empty(message["content"]):
            raise invalid(f"Invalid request: text content is empty in the message at position "
                          f"{i} with role 'assistant'; omit content on a tool call message")
    elif _is_empty(message.get("content")):
        raise invalid(f"Invalid request: the message at position {i} with role 'assistant' "
                      "must not be empty")


def _check_tools(body: dict[str, Any], model: Model) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
            raise invalid(f"tools must be a list of at most {MAX_TOOLS} tools")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict):
                raise invalid(f"tools[{i}].function is required")
            name = str(function.get("name", ""))
            if tool.get("type") == "builtin_function":
                if name not in BUILTIN_TOOLS:
                    raise invalid(f"tools[{i}]: unknown builtin function {name!r}")
                continue
            if tool.get("type") != "function":
                raise invalid(f"tools[{i}].type must be 'function' or 'builtin_function'")
            if not _TOOL_NAME.match(name):
                raise invalid(f"tools[{i}].function.name {name!r} is invalid")
            parameters = function.get("parameters")
            if parameters is not None and (
                    not isinstance(parameters, dict) or parameters.get("type") != "object"):
                raise invalid(f"tools[{i}].function.parameters must have type 'object' at root")
    choice = body.get("tool_choice")
    # Models that think without an effort setting cannot be forced to call a tool.
    if choice == "required" and model.thinking != "never" and not model.effort:
        raise invalid(f"tool_choice 'required' is not supported by {model.id}")
    if choice is not None and not isinstance(choice, dict) and choice not in (
            "auto", "none", "required"):
        raise invalid("tool_choice must be 'auto', 'none', 'required' or a function")


def _check_thinking(body: dict[str, Any], model: Model) -> tuple[bool, str | None]:
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not model.effort:
            raise invalid(f"reasoning_effort is not supported by {model.id}")
        if effort not in EFFORTS:
            raise invalid(f"reasoning_effort must be one of {', '.join(EFFORTS)}")
    thinking = body.get("thinking")
    if thinking is not None and (not isinstance(thinking, dict)
                                 or thinking.get("type") not in ("enabled", "disabled")):
        raise invalid("thinking must be {'type': 'enabled'} or {'type': 'disabled'}")
    disabled = isinstance(thinking, dict) and thinking.get("type") == "disabled"
    if disabled and model.thinking == "always":
        # Moonshot answers 400 here (kimi-k2.7-code*, and K3's docs: thinking cannot be
        # turned off); it does not quietly reason anyway.
        raise invalid(f"thinking cannot be disabled for {model.id}: it always thinks")
    thinks = model.thinking == "always" or (model.thinking == "default" and not disabled)
    return thinks, effort


def _check_history(messages: list[dict[str, Any]], thinks: bool) -> None:
    if not thinks:
        return
    for i, message in enumerate(messages):
        # Presence is what counts: an empty string is how a turn made without thinking
        # comes back, and Kimi accepts it.
        if (message.get("role") == "assistant" and message.get("tool_calls")
                and not isinstance(message.get("reasoning_content"), str)):
            raise invalid("thinking is enabled but reasoning_content is missing in assistant "
                          f"tool call message at index {i}")


def _check_web_search(body: dict[str, Any], model: Model, thinks: bool) -> None:
    """Moonshot's web-search guide: ``$web_search`` works only with thinking disabled."""
    if not thinks:
        return
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") == "builtin_function" and isinstance(function, dict) and \
                function.get("name") == "$web_search":
            if model.thinking == "always":
                raise invalid(f"$web_search requires thinking to be disabled, and {model.id} "
                              "always thinks")
            raise invalid("$web_search requires thinking to be disabled: send "
                          '"thinking": {"type": "disabled"}')


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid("max_completion_tokens must be a positive integer")
    return value


def check_request(body: Any, served: list[str], reject_sampling: bool,
                  info: ModelInfo | None = None) -> Checked:
    """Validate a chat request the way Moonshot does; raise ApiError on the first problem."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = check_model(body.get("model"), served, info)
    messages = _check_messages(body.get("messages"))
    if reject_sampling and model.thinking == "always":
        for knob in SAMPLING_KNOBS:
            if body.get(knob) is not None:
                raise invalid(f"{knob} is not supported by {model.id}; remove it")
    thinks, effort = _check_thinking(body, model)
    _check_tools(body, model)
    _check_web_search(body, model, thinks)
    _check_history(messages, thinks)
    last = messages[-1]
    if last.get("role") == "assistant" and last.get("partial"):
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_object":
            raise invalid("partial mode cannot be combined with response_format json_object")
    max_tokens = _max_tokens(body)
    digest = digest_prompt(messages, body.get("tools"))
    window = model.context_length
    if digest.total > window:
        raise invalid("Input token length too long")
    if max_tokens is not None and digest.total + max_tokens > window:
        raise invalid(f"Your request exceeded model token limit: {window}")
    return Checked(body, model, thinks, effort, digest, max_tokens)


def _clip(text: str, tokens: int) -> str:
    """The longest start of ``text`` that fits in ``tokens`` (4 UTF-8 bytes per token)."""
    return text.encode()[: tokens * 4].decode("utf-8", "ignore")


def fit_reply(reply: Reply, limit: int | None) -> tuple[Reply, int, int]:
    """Apply the completion budget: reasoning first, then content, then tool calls."""
    reasoning_tokens = text_tokens(reply.reasoning or "")
    content_tokens = text_tokens(reply.content)
    call_tokens = sum(
        bytes_tokens(len(c["function"]["name"]) + len(c["function"]["arguments"].encode()))
        for c in reply.tool_calls or ())
    if limit is None or reasoning_tokens + content_tokens + call_tokens <= limit:
        return reply, reasoning_tokens + content_tokens + call_tokens, reasoning_tokens
    reasoning = _clip(reply.reasoning or "", limit) if reply.reasoning else None
    reasoning_tokens = text_tokens(reasoning or "")
    content = _clip(reply.content, limit - reasoning_tokens)
    # A tool call cut in half is useless: a truncated reply simply has none.
    cut = Reply(content=content, reasoning=reasoning, tool_calls=None, finish_reason="length")
    return cut, reasoning_tokens + text_tokens(content), reasoning_tokens


def complete(checked: Checked, cache: CacheResult, fidelity: str, created: int,
             empty_reasoning: bool = False) -> Completion:
    """The reply to a checked request; ``empty_reasoning`` thinks but sends ``""`` as reasoning."""
    reply = build_reply(checked.body, thinks=checked.thinks, effort=checked.effort,
                        fidelity=fidelity)
    if empty_reasoning and reply.reasoning is not None:
        reply = replace(reply, reasoning="")
    reply, completion_tokens, reasoning_tokens = fit_reply(reply, checked.max_tokens)
    return Completion(
        id=f"chatcmpl-{os.urandom(12).hex()}", created=created, model=checked.model,
        reply=reply, prompt_tokens=checked.digest.total, completion_tokens=completion_tokens,
        reasoning_tokens=reasoning_tokens, cache=cache, thinks=checked.thinks)


def usage_of(c: Completion, cached_field: str) -> dict[str, Any]:
    """The usage object, with cache figures where ``cached_field`` puts them."""
    usage: dict[str, Any] = {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }
    writes = c.model.cache_write is not None  # only models that bill cache writes report them
    if cached_field == "top":
        usage["cached_tokens"] = c.cache.cached_tokens
        if writes:
            usage["cache_write_tokens"] = c.cache.write_tokens
            usage["prompt_tokens_details"] = {"cache_write_tokens": c.cache.write_tokens}
    elif cached_field == "nested":
        details = {"cached_tokens": c.cache.cached_tokens}
        if writes:
            details["cache_write_tokens"] = c.cache.write_tokens
        usage["prompt_tokens_details"] = details
    if c.thinks:
        usage["completion_tokens_details"] = {"reasoning_tokens": c.reasoning_tokens}
    return usage


def _message(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning is not None:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    return message


def response_body(c: Completion, usage: str, cached_field: str,
                  finish: bool = True) -> dict[str, Any]:
    """A ``chat.completion`` object; ``finish=False`` leaves ``finish_reason`` null."""
    body: dict[str, Any] = {
        "id": c.id, "object": "chat.completion", "created": c.created, "model": c.model.id,
        "choices": [{"index": 0, "message": _message(c.reply),
                     "finish_reason": c.reply.finish_reason if finish else None}],
    }
    if usage != "none":
        body["usage"] = usage_of(c, cached_field)
    return body


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Event:
    """One SSE event (``data`` already framed) and the tokens it carries, for pacing."""

    data: bytes
    tokens: int = 0


CUT = Event(b"")  # sentinel: drop the connection here


def stream_events(c: Completion, usage: str, cached_field: str, include_usage: bool,
                  fault: str | None = None, cut_after: int = 3) -> Iterator[Event]:
    """The SSE events of a streamed reply, ending with ``data: [DONE]``.

    Reasoning deltas come before content deltas, tool calls last. The usage object rides on
    the final chunk; when the client asked for ``stream_options.include_usage`` with usage at
    the top level it comes, as OpenAI sends it, in an extra chunk with empty ``choices``.
    ``fault`` shapes the stream for the delivery failures (cut, no finish, bad JSON line).
    """
    head = (f'{{"id":"{c.id}","object":"chat.completion.chunk","created":{c.created},'
            f'"model":{_dumps(c.model.id)},"choices":')

    def chunk(delta: dict[str, Any], finish: str | None = None, in_choice: str = "",
              top: str = "") -> bytes:
        choice = (f'[{{"index":0,"delta":{_dumps(delta)},'
                  f'"finish_reason":{_dumps(finish)}{in_choice}}}]')
        return f"data: {head}{choice}{top}}}\n\n".encode()

    deltas: list[tuple[dict[str, Any], int]] = []
    if c.reply.reasoning == "":
        deltas.append(({"reasoning_content": ""}, 0))
    for piece in split_deltas(c.reply.reasoning or ""):
        deltas.append(({"reasoning_content": piece}, text_tokens(piece)))
    for piece in split_deltas(c.reply.content):
        deltas.append(({"content": piece}, text_tokens(piece)))
    for index, call in enumerate(c.reply.tool_calls or ()):
        name = call["function"]["name"]
        deltas.append(({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                        "function": {"name": name, "arguments": ""}}]},
                       text_tokens(name)))
        args = call["function"]["arguments"]
        for j in range(0, len(args), 16):
            piece = args[j:j + 16]
            deltas.append(({"tool_calls": [{"index": index, "function": {"arguments": piece}}]},
                           text_tokens(piece)))

    yield Event(chunk({"role": "assistant", "content": ""}))
    for i, (delta, tokens) in enumerate(deltas):
        if fault == "stream_cut" and i >= cut_after:
            yield CUT
            return
        if fault == "malformed_chunk" and i == len(deltas) // 2:
            yield Event(b'data: {"id":"' + c.id.encode() + b'","choices":[{"delta":\n\n')
        yield Event(chunk(delta), tokens)
    if fault == "stream_cut":
        yield CUT
        return
    finish = None if fault == "no_finish" else c.reply.finish_reason
    usage_json = _dumps(usage_of(c, cached_field)) if usage != "none" else None
    if usage_json is None:
        yield Event(chunk({}, finish))
    elif usage == "choice":
        yield Event(chunk({}, finish, in_choice=f',"usage":{usage_json}'))
    elif include_usage:
        yield Event(chunk({}, finish))
        yield Event(f'data: {head}[],"usage":{usage_json}}}\n\n'.encode())
    else:
        yield Event(chunk({}, finish, top=f',"usage":{usage_json}'))
    yield Event(b"data: [DONE]\n\n")
