"""Gateway errors in Anthropic's shape and with Anthropic's status codes."""

from __future__ import annotations

from typing import Any

from gateway.errors import GatewayError

# status -> Anthropic error type; a gateway that found no target answers like an overloaded API.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
                529: "overloaded_error"}
KNOWN_TYPES = frozenset(_ERROR_TYPES.values())


def error_status(error: GatewayError) -> int:
    """Anthropic's status for a gateway error: "nothing could serve now" (502, 503) is its 529 overloaded."""
    if error.status in (502, 503, 529):
        return 529
    if error.status in _ERROR_TYPES:
        return error.status
    return 500 if error.status >= 500 else 400


def error_body(error: GatewayError) -> dict[str, Any]:
    status = error_status(error)
    upstream = getattr(error, "upstream_error", None)
    kind = upstream.get("type") if isinstance(upstream, dict) and upstream.get("type") in KNOWN_TYPES else None
    return {"type": "error", "error": {"type": kind or _ERROR_TYPES.get(status, "api_error"),
                                       "message": error.message}}
