"""Anthropic's error bodies as the gateway's typed upstream errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import UpstreamStatusError
from gateway.upstream.formats.openai_chat import parse_retry_after

_CONTEXT_HINTS = ("prompt is too long", "context window", "context length", "too many tokens")


def parse_error(status: int, headers: Mapping[str, str], raw: bytes, provider_id: str) -> UpstreamStatusError:
    """Anthropic's `{"type":"error","error":{"type","message"}}` as the gateway's typed upstream error."""
    error = error_object(raw)
    message = str(error.get("message") or "") if error else ""
    return UpstreamStatusError(
        f"{provider_id} answered HTTP {status}: {message or 'error'}",
        upstream_status=status,
        upstream_error=error,
        retry_after=parse_retry_after(headers),
        error_type=error_type(status, error),
    )


def error_object(raw: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    return {"message": error.get("message"), "type": error.get("type"), "code": error.get("type")}


def error_type(status: int, error: Mapping[str, Any] | None) -> str:
    kind = error.get("type") if error else None
    if status == 429 or kind == "rate_limit_error":
        return "rate_limited"
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return "auth"
    if status == 404:
        return "not_found"
    if status in (408, 504) or kind == "timeout_error":
        return "timeout"
    if status >= 500 or status == 409 or kind in ("overloaded_error", "api_error"):
        return "upstream_5xx"
    message = str(error.get("message") or "").lower() if error else ""
    if any(hint in message for hint in _CONTEXT_HINTS):
        return "context_length"
    return "bad_request"
