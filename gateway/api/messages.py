"""POST /v1/messages: Anthropic's Messages API as an inbound protocol of the one request pipeline.

To a target that speaks Messages natively the client's body goes through untouched but for
`model` (with its anthropic-version and anthropic-beta headers), and the answer comes back as the
upstream's own bytes. To any other target the request is translated to chat completions
(gateway/protocols/messages/) and the answer, stream included, back into Messages events.
Errors are Anthropic-shaped, with Anthropic's status codes. The stream rules hold in Anthropic's
terms: nothing before the first content; after it, a failure ends with an `error` event and no
`message_stop`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from gateway.api.chat import parse_object
from gateway.api.middleware import request_id as request_id_of
from gateway.api.request_body import read_bounded
from gateway.api.send import send_json
from gateway.errors import BadRequest, GatewayError, UpstreamError
from gateway.failover.run import Served
from gateway.protocols import messages
from gateway.relay.stream import RelayResult, translate_events
from gateway.routing import Plan, Target
from gateway.runtime import Runtime
from gateway.upstream.formats import Leg, LegChooser
from gateway.upstream.formats.anthropic import PASS_THROUGH, MessagesPassThrough, MessagesView
from gateway.upstream.formats.by_wire import chat_leg
from gateway.upstream.transport import Transport

# Request headers a native Anthropic target gets from the client (its key never: the gateway sets its own).
FORWARDED = ("anthropic-version", "anthropic-beta")


class MessagesProtocol:
    path = "/v1/messages"
    headers = frozenset(name.encode() for name in FORWARDED)
    relays_as_is = False  # a translated stream, or none

    def parse(self, raw: bytes) -> dict[str, Any]:
        body = parse_object(raw)
        if not isinstance(body.get("messages"), list):
            raise BadRequest("`messages` is required and must be a list.", param="messages")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequest("`max_tokens` is required and must be a positive integer.", param="max_tokens")
        return body

    def plan(self, runtime: Runtime, body: dict[str, Any]) -> Plan:
        return runtime.router.resolve(body["model"], None)

    def legs(self, runtime: Runtime, plan: Plan, body: dict[str, Any], headers: Mapping[str, str]) -> LegChooser:
        native = Leg(PASS_THROUGH, body, {k: v for k, v in headers.items() if k in FORWARDED})
        translated: dict[bool, dict[str, Any]] = {}

        def choose(target: Target) -> Leg:
            if target.endpoint.wire == "anthropic":
                return native
            if not translated:  # translated once, and only when a target needs it
                chat = translated[True] = messages.to_chat(body)
                # A model the catalog says cannot reason would refuse reasoning_effort: asking it for
                # thinking changes nothing, so it is not asked.
                translated[False] = {k: v for k, v in chat.items() if k != "reasoning_effort"}
            chat = translated[target.model.reasoning]
            return chat_leg(target.endpoint.wire, target.model.limit.output, chat)

        return choose

    def streams(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def answer(self, served: Served, body: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        parsed = served.parsed or {}
        if isinstance(served.response, MessagesView) and served.response.raw_body:
            raw = served.target.endpoint.secrets.mask_bytes(served.response.raw_body)
            return raw, parsed.get("usage")
        return orjson.dumps(messages.to_message(parsed)), parsed.get("usage")

    def relay(
        self, served: Served, body: dict[str, Any], expires: float, result: RelayResult
    ) -> AsyncGenerator[bytes, None]:
        # Usage is always asked for: the translation needs it for message_delta, and accounting does.
        if isinstance(served.response, MessagesView) and isinstance(_dialect(served), MessagesPassThrough):
            # The upstream's own bytes go to the client: a continuation from another attempt could not
            # be spliced into them, so a break ends the stream.
            pieces = served.stream(wants_usage=True, result=result, recover=False)
            return _pass_through(pieces, served.response, served, result)
        return translate_events(served.stream(wants_usage=True, result=result),
                                messages.StreamTranslator(body["model"]).feed)

    async def send_error(self, send: Send, error: GatewayError, request_id: str) -> None:
        body = messages.error_body(error)
        body["request_id"] = request_id
        headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        await send_json(send, messages.error_status(error), orjson.dumps(body), headers)


def _dialect(served: Served) -> Any:
    return served.leg.dialect if served.leg is not None else None


async def _pass_through(
    pieces: AsyncGenerator[bytes, None], view: MessagesView, served: Served, result: RelayResult
) -> AsyncGenerator[bytes, None]:
    """The upstream's own events, as it sent them, paced by the relay (which judges the chat view of
    them); a failure the upstream did not report itself ends with Anthropic's `error` event."""
    secrets = served.target.endpoint.secrets
    last = b""
    ended_with: bytes | None = None
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            if piece.startswith(b"event: error") or b"\n\nevent: error" in piece:
                ended_with = piece[piece.find(b"event: error"):]
            events = view.take_raw()
            if events:
                last = events[-1]
                yield secrets.mask_bytes(b"".join(event + b"\n\n" for event in events))
    if result.error_type is not None:
        if not last.startswith(b"event: error"):
            yield b"".join(messages.StreamTranslator("").feed((ended_with or b"event: error\ndata: {}").rstrip()))
    elif result.completed and not last.startswith(b"event: message_stop"):
        yield messages.sse(b"message_stop", {"type": "message_stop"})  # the upstream ended without it


class CountTokens:
    """POST /v1/messages/count_tokens: asked of the first native Anthropic target of the model, else
    estimated (about four characters a token); `x-gateway-token-count` says which."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def handle(self, request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime()
        request_id = request_id_of(request.scope)
        try:
            caller = runtime.auth.authenticate(request.headers)
            limit = runtime.settings.server.max_body_bytes
            raw = await read_bounded(request, limit,
                                     f"The request body is larger than this gateway accepts ({limit} bytes).")
            body = parse_object(raw)
            if not isinstance(body.get("messages"), list):
                raise BadRequest("`messages` is required and must be a list.", param="messages")
            caller.check_model(body["model"])
            plan = runtime.router.resolve(body["model"], None)
            forwarded = {name: request.headers[name] for name in FORWARDED if name in request.headers}
            for target in plan.targets:
                if target.endpoint.wire == "anthropic" and target.endpoint.available:
                    counted = await self._ask(target, body, forwarded, runtime.settings.upstream.max_answer_bytes)
                    if counted is not None:
                        return counted
            estimate = orjson.dumps({"input_tokens": messages.estimate_tokens(body)})
            return Response(estimate, media_type="application/json",
                            headers={"x-gateway-token-count": "estimated"})
        except GatewayError as error:
            body = {**messages.error_body(error), "request_id": request_id}
            return Response(orjson.dumps(body), status_code=messages.error_status(error),
                            media_type="application/json", headers=error.headers)

    async def _ask(
        self, target: Target, body: dict[str, Any], headers: Mapping[str, str], limit: int
    ) -> Response | None:
        """The upstream's count, its own refusal of a bad request, or None (unreachable: estimate instead)."""
        payload = {**body, "model": target.upstream_model}
        timeouts = target.timeouts
        try:
            response = await self._transport.send(target.endpoint, payload, connect=timeouts.connect,
                                                  read=timeouts.response, total=timeouts.response,
                                                  path="/messages/count_tokens", headers=headers)
            try:
                raw = await response.read_all(limit)
            finally:
                response.close()
        except UpstreamError:
            return None
        if response.status >= 500 or response.status in (401, 403, 404, 408, 429):
            return None
        return Response(target.endpoint.secrets.mask_bytes(raw), status_code=response.status,
                        media_type="application/json",
                        headers={"x-gateway-token-count": "upstream", "x-gateway-model": target.key})

