"""Kimi-shaped errors and the failures a test can inject.

Every error body is ``{"error": {"type": ..., "message": ...}}`` with the status Moonshot uses
for that type, so the client's error mapping can be tested against the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ApiError(Exception):
    """An error reply: HTTP status, Kimi error type, message and optional extra headers."""

    def __init__(self, status: int, type_: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "message": self.message}}


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "resource_not_found_error", message)


#: Failures that are plain HTTP errors: kind -> (status, type, message).
HTTP_FAILURES: dict[str, tuple[int, str, str]] = {
    "auth": (401, "invalid_authentication_error", "Invalid Authentication"),
    "permission": (403, "permission_denied_error",
                   "The API you are accessing is not open to your account"),
    "quota_403": (403, "exceeded_current_quota_error",
                  "Your account is suspended, please check your plan and billing details"),
    "quota_429": (429, "exceeded_current_quota_error",
                  "You exceeded your current token quota, please check your account balance"),
    "not_found": (404, "resource_not_found_error", "Not found the model or Permission denied"),
    "rate_limit": (429, "rate_limit_reached_error",
                   "Your account reached its max request rate (RPM), please try again later"),
    "overloaded": (429, "engine_overloaded_error",
                   "The engine is currently overloaded, please try again later"),
    "server_error": (500, "server_error", "Internal server error"),
    "unavailable": (503, "server_error", "Service temporarily unavailable"),
    "token_limit_input": (400, "invalid_request_error", "Input token length too long"),
    "token_limit_total": (400, "invalid_request_error",
                          "Your request exceeded model token limit: {limit}"),
    "content_filter": (400, "content_filter",
                       "The request was rejected because it was considered high risk"),
}

#: Failures that change how a reply is delivered rather than replacing it.
DELIVERY_FAILURES = ("stream_cut", "no_finish", "malformed_chunk", "hang")

FAILURE_KINDS = tuple(HTTP_FAILURES) + DELIVERY_FAILURES


@dataclass
class Failure:
    """One injected failure; ``times`` counts down as chat requests consume it."""

    kind: str
    times: int = 1
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            known = ", ".join(FAILURE_KINDS)
            raise ValueError(f"unknown failure kind {self.kind!r}; known: {known}")
        if int(self.times) < 1:
            raise ValueError("times must be at least 1")
        self.times = int(self.times)

    def http_error(self, context_length: int | None) -> ApiError | None:
        """The error this failure answers with, or None for delivery failures."""
        if self.kind not in HTTP_FAILURES:
            return None
        status, type_, message = HTTP_FAILURES[self.kind]
        if "{limit}" in message:
            message = message.format(limit=self.params.get("limit", context_length or 0))
        headers = {}
        if self.params.get("retry_after") is not None:
            headers["Retry-After"] = str(self.params["retry_after"])
        return ApiError(status, type_, message, headers)
