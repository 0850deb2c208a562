"""The OpenAI Responses API, `POST {base}/responses`, spoken natively: the pass-through dialect.

The client's body goes upstream untouched except `model` (every input item, tool and unknown field
included), and the answer comes back as the upstream's bytes. Pure functions: no sockets, no asyncio.
Its stream has no `[DONE]`: it ends with `response.completed`, `response.incomplete`,
`response.failed` or an `error` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import UpstreamProtocolError
from gateway.relay.sse import event_data
from gateway.upstream.formats import openai_chat
from gateway.upstream.formats.openai_pass_through import OpenAIPassThrough

# Events after which a client has seen something: the first one of them commits the stream.
_CONTENT_SUFFIXES = (".delta", ".done")
_TERMINAL = frozenset({"response.completed", "response.incomplete"})
FAILURES = frozenset({"response.failed", "error"})


class ResponsesDialect(OpenAIPassThrough):
    name = "responses"
    path = "/responses"
    answer_list = "output"
    answer_noun = "a Response"

    def opens_answer(self, event: bytes, provider_id: str) -> bool:
        kind, body = parse_event(event, provider_id)
        if kind in FAILURES:
            error = failure(body)
            status = 429 if error.get("code") == "rate_limit_exceeded" else 500
            raise openai_chat.parse_error(status, {}, orjson.dumps({"error": error}), provider_id)
        return kind in _TERMINAL or kind.endswith(_CONTENT_SUFFIXES)


def parse_event(event: bytes, provider_id: str) -> tuple[str, dict[str, Any]]:
    """The `type` and body of one Responses event ("" for a comment or keep-alive)."""
    data = event_data(event)
    if data is None:
        return "", {}
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"{provider_id} sent a malformed stream event") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise UpstreamProtocolError(f"{provider_id} sent a stream event without a type")
    return body["type"], body


def failure(body: Mapping[str, Any]) -> dict[str, Any]:
    """The error a `response.failed` or `error` event carries, as an OpenAI error object."""
    if body.get("type") == "error":
        return {"message": body.get("message") or "error", "type": "upstream_error", "code": body.get("code"),
                "param": body.get("param")}
    error = as_object(as_object(body.get("response")).get("error"))
    return {"message": error.get("message") or "the response failed", "type": "upstream_error",
            "code": error.get("code"), "param": None}


def as_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def sse(body: dict[str, Any]) -> bytes:
    """One Responses event as SSE: the `event:` line names its type, as OpenAI sends it."""
    return b"event: " + str(body["type"]).encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


def chat_usage(responses_usage: Any) -> dict[str, Any] | None:
    """Responses usage in the chat shape the gateway counts."""
    if not isinstance(responses_usage, Mapping):
        return None
    input_details = responses_usage.get("input_tokens_details") or {}
    output_details = responses_usage.get("output_tokens_details") or {}
    return {
        "prompt_tokens": responses_usage.get("input_tokens") or 0,
        "completion_tokens": responses_usage.get("output_tokens") or 0,
        "total_tokens": responses_usage.get("total_tokens") or 0,
        "prompt_tokens_details": {"cached_tokens": input_details.get("cached_tokens") or 0},
        "completion_tokens_details": {"reasoning_tokens": output_details.get("reasoning_tokens") or 0},
    }


RESPONSES = ResponsesDialect()
