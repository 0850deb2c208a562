"""The error tree: every error a client can see knows its HTTP status and OpenAI error type/code."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson


class GatewayError(Exception):
    """Base of every error that becomes an HTTP response."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_body())


class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"


class BadRequest(ClientError):
    code = "invalid_request"


class Unauthorized(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ClientError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class LimitExceeded(ClientError):
    """A key's (or a model's, or a provider's) rate limit refused the request; Retry-After says when."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceeded(ClientError):
    """A budget is spent for its period."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class ProviderUnavailable(GatewayError):
    """The provider cannot be called from here: credentials unset or wire format unsupported."""

    status = 503
    type = "service_unavailable"
    code = "provider_unavailable"


class LimitsUnavailable(GatewayError):
    """`state.on_failure: closed` while the shared counters (Redis) cannot be reached: a request that a
    limit or budget applies to is refused rather than admitted unchecked. Retry-After says when to try."""

    status = 503
    type = "service_unavailable"
    code = "limits_unavailable"


class ConfigError(Exception):
    """A config or catalog file was refused. The message names the file, the key and the fix."""


class UpstreamError(GatewayError):
    """An attempt at one upstream target failed. `error_type` is the closed label set metrics use."""

    status = 502
    type = "upstream_error"
    code: str | None = "upstream_error"
    error_type = "upstream_5xx"

    def mask(self, mask: Callable[[Any], Any]) -> None:
        """Pass every string this error quotes from the upstream through `mask` (its credentials)."""
        self.message = mask(self.message)


class UpstreamConnectError(UpstreamError):
    """The connection could not be made, or was reset before any response byte."""

    error_type = "connect"


class UpstreamTimeout(UpstreamError):
    """No byte, no first token, or no next chunk within its timeout; `phase` says which."""

    status = 504
    code = "upstream_timeout"
    error_type = "timeout"

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class UpstreamProtocolError(UpstreamError):
    """The upstream answered with something that is not what its wire format promises."""

    code = "upstream_malformed"
    error_type = "malformed"


class StreamCut(UpstreamError):
    """The upstream stream ended or broke before it was complete."""

    code = "upstream_stream_cut"
    error_type = "stream_cut"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an HTTP error status; its own error body is kept to pass on."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        upstream_error: dict[str, Any] | None,
        retry_after: float | None,
        error_type: str,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.upstream_error = upstream_error
        self.retry_after = retry_after
        self.error_type = error_type
        self.status = upstream_status
        if upstream_error is not None:
            self.type = str(upstream_error.get("type") or self.type)
            code = upstream_error.get("code")
            self.code = str(code) if code not in (None, "") else None  # OpenAI's `code` is a string or null

    def mask(self, mask: Callable[[Any], Any]) -> None:
        super().mask(mask)
        self.type = mask(self.type)
        self.code = mask(self.code)
        if self.upstream_error is not None:
            self.upstream_error = mask(self.upstream_error)

    def to_body(self) -> dict[str, Any]:
        if self.upstream_error is not None:
            return {"error": {"message": self.message, "type": self.type, "code": self.code,
                              "param": self.upstream_error.get("param")}}
        return super().to_body()
