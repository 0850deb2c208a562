"""OpenAI chat completions, the pass-through format: rewrite `model`, force usage on streams, read errors.

Pure functions on dicts and bytes: no sockets, no asyncio.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson

from gateway.errors import UpstreamProtocolError, UpstreamStatusError
from gateway.relay.chunk import MalformedChunk, interpret
from gateway.relay.sse import event_data
from gateway.upstream.response import UpstreamResponse

_CONTEXT_HINTS = ("context_length", "context length", "maximum context", "too many tokens", "prompt is too long")
_POLICY_HINTS = ("content_policy", "content policy", "content_filter", "safety", "moderation")
_QUOTA_HINTS = ("insufficient_quota", "billing", "credit")
# An error object inside a 200 answer carries no HTTP status: its code or type says which it would be.
_STREAM_STATUS_HINTS = (
    (_QUOTA_HINTS, 402), (("rate_limit", "too_many_requests"), 429), (_CONTEXT_HINTS, 400),
    (("overloaded",), 529), (("authentication", "invalid_api_key"), 401), (("permission",), 403),
    (("not_found", "model_not_found"), 404), (("timeout",), 408), (_POLICY_HINTS, 400),
    (("invalid_request",), 400),
)


def with_upstream_model(body: Mapping[str, Any], upstream_model: str) -> dict[str, Any]:
    """A copy of the client's body for the upstream: its `model`, and none of the gateway's own fields."""
    payload = dict(body)
    payload["model"] = upstream_model
    # `models` is the client's own fallback list (OpenRouter style); the gateway has already used it.
    payload.pop("models", None)
    return payload


def build_request(body: Mapping[str, Any], upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """The client's body as sent upstream: only `model` changes, and streams always report usage."""
    payload = with_upstream_model(body, upstream_model)
    if stream:
        options = payload.get("stream_options")
        payload["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) \
            else {"include_usage": True}
    return payload


class ChatDialect:
    """Chat completions, `POST {base}/chat/completions`: the gateway's pivot protocol."""

    name = "chat"
    path = "/chat/completions"

    def build_request(self, body: Mapping[str, Any], upstream_model: str, *, stream: bool) -> dict[str, Any]:
        return build_request(body, upstream_model, stream=stream)

    def parse_error(self, status: int, headers: Mapping[str, str], raw: bytes,
                    provider_id: str) -> UpstreamStatusError:
        return parse_error(status, headers, raw, provider_id)

    def check_answer(self, parsed: Any, headers: Mapping[str, str], raw: bytes, provider_id: str) -> None:
        if isinstance(parsed, dict) and parsed.get("error") and "choices" not in parsed:
            error = parsed["error"]
            raise stream_error(error if isinstance(error, dict) else {"message": str(error)}, provider_id)
        choices = parsed.get("choices") if isinstance(parsed, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise UpstreamProtocolError(f"{provider_id} answered with JSON that is not a chat completion")

    def opens_answer(self, event: bytes, provider_id: str) -> bool:
        return opens_answer(event, provider_id)

    def view(self, response: UpstreamResponse) -> UpstreamResponse:
        return response  # already chat completions


def opens_answer(event: bytes, provider_id: str) -> bool:
    """Is this the first event the client may see? Content, a tool call, a finish, usage, or the end.

    An error object before any content is classified by its own code/type; a malformed event fails.
    """
    data = event_data(event)
    if data is None:
        return False
    try:
        chunk = interpret(data)
    except MalformedChunk as exc:
        raise UpstreamProtocolError(f"{provider_id} sent {exc}") from None
    if chunk.error is not None:
        raise stream_error(chunk.error, provider_id)
    return chunk.opens_answer


def stream_error(error: Mapping[str, Any], provider_id: str) -> UpstreamStatusError:
    """An `error` object sent inside a 200 answer, classified as the HTTP error it stands for."""
    status = _stream_status(error)
    message = str(error.get("message") or _reason(status))
    return UpstreamStatusError(
        f"{provider_id} reported an error in its answer: {message}",
        upstream_status=status,
        upstream_error=dict(error),
        retry_after=None,
        error_type=error_type(status, error),
    )


def completion_events(completion: Mapping[str, Any]) -> list[bytes]:
    """A whole chat completion as the SSE events of the same answer streamed: one chunk per choice
    (its message as the delta), the usage-only chunk, and [DONE]. For upstreams that answer a stream
    request with a whole answer."""
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint") if k in completion}
    base["object"] = "chat.completion.chunk"
    events = []
    for index, choice in enumerate(completion.get("choices") or ()):
        choice = choice if isinstance(choice, dict) else {}
        delta = dict(choice.get("message") or {})
        if isinstance(delta.get("tool_calls"), list):
            delta["tool_calls"] = [{"index": i, **c} if isinstance(c, dict) else c
                                   for i, c in enumerate(delta["tool_calls"])]
        out = {"index": choice.get("index", index), "delta": delta, "finish_reason": choice.get("finish_reason")}
        if "logprobs" in choice:
            out["logprobs"] = choice["logprobs"]
        events.append(b"data: " + orjson.dumps({**base, "choices": [out]}))
    if completion.get("usage"):
        events.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": completion["usage"]}))
    events.append(b"data: [DONE]")
    return events


def parse_error(status: int, headers: Mapping[str, str], raw: bytes, provider_id: str) -> UpstreamStatusError:
    error = _error_object(raw)
    message = str(error.get("message")) if error and error.get("message") else _reason(status)
    return UpstreamStatusError(
        f"{provider_id} answered HTTP {status}: {message}",
        upstream_status=status,
        upstream_error=error,
        retry_after=parse_retry_after(headers),
        error_type=error_type(status, error),
    )


def error_type(status: int, error: Mapping[str, Any] | None) -> str:
    """The metrics label for an upstream error status (a closed set)."""
    if status == 402 or (status == 429 and _has_hint(error, _QUOTA_HINTS[:1])):
        return "quota"  # out of credit: this target cannot serve until someone pays
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status >= 500 or status == 409:
        return "upstream_5xx"
    text = " ".join(str(error.get(k) or "") for k in ("code", "type", "message")).lower() if error else ""
    if any(hint in text for hint in _CONTEXT_HINTS):
        return "context_length"
    if any(hint in text for hint in _POLICY_HINTS):
        return "content_policy"
    return "bad_request"


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date (from `now`)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _has_hint(error: Mapping[str, Any] | None, hints: tuple[str, ...]) -> bool:
    if not error:
        return False
    text = " ".join(str(error.get(k) or "") for k in ("code", "type")).lower()
    return any(hint in text for hint in hints)


def _stream_status(error: Mapping[str, Any]) -> int:
    for key in ("status", "code"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    text = " ".join(str(error.get(k) or "") for k in ("code", "type", "message")).lower()
    for hints, status in _STREAM_STATUS_HINTS:
        if any(hint in text for hint in hints):
            return status
    return 500


def _error_object(raw: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            return error
        if isinstance(error, str):
            return {"message": error}
        if isinstance(document.get("message"), str):
            return {"message": document["message"]}
    return None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


CHAT = ChatDialect()
