"""What went wrong on the wire, in one line: ``KimiError``, classified by ``error.type``.

Every SDK or transport exception becomes a ``KimiError`` whose ``kind`` decides the title,
the advice shown to the user and whether the retry policy may try again.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlparse

from ..core import hints
from ..core.text import clip

# error.type (or an HTTP status when a server sends none) -> our kind.
TYPE_KINDS = {
    "invalid_authentication_error": "auth",
    "incorrect_api_key_error": "auth",
    "authentication_error": "auth",
    "permission_denied_error": "permission",
    "exceeded_current_quota_error": "quota",
    "insufficient_quota": "quota",
    "resource_not_found_error": "not_found",
    "not_found_error": "not_found",
    "rate_limit_reached_error": "rate_limit",
    "engine_overloaded_error": "overloaded",
    "server_error": "server",
    "content_filter": "content_filter",
    "invalid_request_error": "bad_request",
}
STATUS_KINDS = {400: "bad_request", 401: "auth", 403: "permission", 404: "not_found",
                429: "rate_limit", 500: "server", 502: "server", 503: "server", 504: "server"}
RETRYABLE = frozenset({"rate_limit", "overloaded", "server", "connection", "timeout"})
_TOKEN_LIMIT = re.compile(r"input token length too long|exceeded model token limit|"
                          r"context length|maximum context|too many tokens", re.I)

#: Longest server message quoted in an error line.
DETAIL_CHARS = 300


class KimiError(Exception):
    """A failed call, described in one line that says what happened and what to do."""

    def __init__(self, kind: str, detail: str, *, status: int | None = None,
                 retry_after: float | None = None, partial: str = "",
                 advice: str | None = None) -> None:
        self.kind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        #: Text streamed before the failure (shown to the user, never recorded).
        self.partial = partial
        #: Advice that fits this failure better than the kind's usual one.
        self.advice = advice
        #: Whether any of the reply (text, reasoning or a tool call) reached the user: then
        #: a retry would show it twice, so none is made.
        self.streamed = False
        super().__init__(self.line())

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    def line(self) -> str:
        hint = self.advice if self.advice is not None else advice(self.kind)
        status = f" ({self.status})" if self.status else ""
        detail = self.detail.strip().rstrip(".")
        tail = f" {hint}" if hint else ""
        return f"{TITLES.get(self.kind, 'Request failed')}{status}: {detail}.{tail}"

    def refresh(self) -> KimiError:
        """Re-render the line after ``detail`` or ``advice`` changed; returns ``self``."""
        self.args = (self.line(),)
        return self


TITLES = {
    "auth": "Kimi rejected the API key",
    "permission": "Permission denied",
    "quota": "Your Kimi account is out of quota",
    "not_found": "Not found",
    "rate_limit": "Rate limited",
    "overloaded": "Kimi is overloaded",
    "server": "Server error",
    "content_filter": "Blocked by Kimi's content filter",
    "bad_request": "The server refused the request",
    "token_limit": "The context does not fit the model's window",
    "connection": "Could not reach the server",
    "timeout": "The server did not answer in time",
    "stream_cut": "The reply stream broke off",
    "malformed": "The server sent a malformed reply",
    "no_key": "No API key",
}
def advice(kind: str) -> str:
    """What to do about an error of ``kind``, in the reader's terms (see ``core.hints``)."""
    return {
        "auth": f"Check MOONSHOT_API_KEY or {hints.setting('api_key')} (keys from "
                "api.moonshot.cn do not work on api.moonshot.ai).",
        "permission": "This key may not use that model or endpoint.",
        "quota": "Top up or raise the limit on the Moonshot platform; not retried.",
        "not_found": f"The model id may be retired: {hints.command('models')} lists today's.",
        "rate_limit": "Retried with backoff and gave up; wait a minute or lower the concurrency.",
        "overloaded": "Retried with backoff and gave up; try again shortly.",
        "server": "Retried and gave up; try again shortly.",
        "content_filter": "Rephrase the prompt.",
        "token_limit": f"Run {hints.command('compress')} or {hints.command('truncate')}, or pick "
                       "a larger model.",
        "connection": "Is the server running and the base URL right "
                      f"({hints.setting('base_url')})?",
        "timeout": f"Try again, or raise {hints.setting('timeout')}.",
        "stream_cut": "Nothing was recorded; run the cell again.",
        "malformed": "Nothing was recorded; run the cell again.",
    }.get(kind, "")


def short(text: Any) -> str:
    """A server message as quoted in an error line: one line, at most ``DETAIL_CHARS``."""
    return clip(text, DETAIL_CHARS, marker="...")


def classify(exc: BaseException, base_url: str = "") -> KimiError:
    """Turn an SDK or transport exception into a ``KimiError``, by ``error.type`` first."""
    import openai

    if isinstance(exc, KimiError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return KimiError("timeout", f"no answer from {host(base_url)}")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        why = str(cause) if cause else str(exc)
        return KimiError("connection", f"{host(base_url)}: {short(why)}")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        etype = str(body.get("type") or body.get("code") or "")
        message = str(body.get("message") or exc.message or "")
        kind = TYPE_KINDS.get(etype) or STATUS_KINDS.get(exc.status_code, "bad_request")
        if exc.status_code >= 500 and kind == "bad_request":
            kind = "server"
        if kind == "bad_request" and _TOKEN_LIMIT.search(message):
            kind = "token_limit"
        retry_after = _retry_after(exc.response.headers.get("retry-after"))
        label = f"{etype}: " if etype and etype not in message else ""
        return KimiError(kind, short(label + message) or f"HTTP {exc.status_code}",
                         status=exc.status_code, retry_after=retry_after)
    if isinstance(exc, openai.APIError):
        body = exc.body if isinstance(exc.body, dict) else {}
        etype = str(body.get("type") or "")
        kind = TYPE_KINDS.get(etype, "server")
        return KimiError(kind, short(str(body.get("message") or exc.message)))
    if isinstance(exc, json.JSONDecodeError):
        return KimiError("malformed", f"a stream chunk was not JSON ({exc.msg})")
    name = type(exc).__name__
    if "Timeout" in name:
        return KimiError("timeout", f"no answer from {host(base_url)}")
    if any(w in name for w in ("Protocol", "Read", "Connect", "Network", "Closed")):
        return KimiError("stream_cut", f"{host(base_url)} closed the connection ({name})")
    raise exc


def error_from_entry(error: dict[str, Any], status: int | None) -> KimiError:
    """A ``KimiError`` from an error object written into a file (a batch's error line)."""
    etype = str(error.get("code") or error.get("type") or "")
    kind = TYPE_KINDS.get(etype) or STATUS_KINDS.get(status or 0, "bad_request")
    label = f"{etype}: " if etype else ""
    return KimiError(kind, short(label + str(error.get("message") or f"HTTP {status}")),
                     status=status)


def is_api_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the SDK's (the server answered, or the transport failed)."""
    import openai

    return isinstance(exc, openai.APIError)


def host(base_url: str) -> str:
    """The host a user recognises in an error line."""
    return urlparse(base_url).netloc or base_url or "the server"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
