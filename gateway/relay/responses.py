"""Relaying a Responses API stream passed through from an upstream that speaks it.

Every event goes to the client as the bytes the upstream sent (credentials masked). The processor
keeps what accounting and a clean failure need: the usage from the terminal event, the response
from `response.created`, and the last `sequence_number`. A stream that breaks after content ends
with `response.failed` carrying that response, numbered after the last event: never a
`response.completed` for an answer that was cut.
"""

from __future__ import annotations

from typing import Any

from gateway.relay.sse import event_data
from gateway.relay.stream import RelayResult
from gateway.upstream.formats.openai_responses import FAILURES, as_object, chat_usage, parse_event, sse
from gateway.upstream.secrets import Secrets

_ENDS = frozenset({"response.completed", "response.incomplete", *FAILURES})


class ResponsesEvents:
    """The relay's event processor and failure writer for one passed-through Responses stream."""

    __slots__ = ("_response", "_sequence")

    def __init__(self) -> None:
        self._response: dict[str, Any] | None = None
        self._sequence = -1

    def __call__(self, events: list[bytes], out: list[bytes], result: RelayResult, wants_usage: bool,
                 secrets: Secrets) -> bool:
        for event in events:
            out.append(secrets.mask_bytes(event) + b"\n\n")
            if event_data(event) is None:
                continue  # a keep-alive
            kind, body = parse_event(event, "the upstream")
            result.chunks += 1
            sequence = body.get("sequence_number")
            if isinstance(sequence, int):
                self._sequence = sequence
            if kind == "response.created" and isinstance(body.get("response"), dict):
                self._response = body["response"]
            if kind in _ENDS:
                response = body.get("response")
                result.usage = chat_usage(response.get("usage") if isinstance(response, dict) else None)
                if kind in FAILURES:
                    result.error_type = "upstream_5xx"
                result.finished = True
                return True
        return False

    def failure(self, body: dict[str, Any]) -> bytes:
        """`response.failed` (or a bare `error` event before any response was announced)."""
        error = as_object(body.get("error"))
        message = str(error.get("message") or "the upstream stream broke")
        self._sequence += 1
        if self._response is None:
            event: dict[str, Any] = {"type": "error", "code": error.get("code") or "server_error",
                                     "message": message, "param": None, "sequence_number": self._sequence}
        else:
            response = {**self._response, "status": "failed",
                        "error": {"code": "server_error", "message": message}}
            event = {"type": "response.failed", "response": response, "sequence_number": self._sequence}
        return sse(event)
