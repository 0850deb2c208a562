"""POST /v1/responses: OpenAI's Responses API (what Codex and the agent SDKs speak), stateless.

A target that serves the Responses API itself (OpenAI, or a provider marked `responses_api: true`)
gets the client's body untouched except `model`, and its answer or stream comes back byte for byte.
Every other target gets the request translated to chat completions (gateway/protocols/responses/)
and its answer translated back into a Response and the Responses event stream. Failover, retries,
metrics and usage are the chat pipeline's.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson
from starlette.types import Send

from gateway.api.chat import parse_object
from gateway.api.send import send_error
from gateway.errors import BadRequest, GatewayError
from gateway.failover.run import Served
from gateway.protocols import responses as translate
from gateway.relay.responses import ResponsesEvents
from gateway.relay.stream import RelayResult, translate_events
from gateway.routing import Plan, Target
from gateway.runtime import Runtime
from gateway.upstream.formats import Leg, LegChooser, Skip
from gateway.upstream.formats.by_wire import chat_leg
from gateway.upstream.formats.openai_responses import RESPONSES, chat_usage

MAX_INPUT_ITEMS = 100_000  # a bound on the history a request may carry (the body size bounds it first)


class ResponsesProtocol:
    path = "/v1/responses"
    headers: frozenset[bytes] = frozenset()
    relays_as_is = False  # a translated stream, or none

    def parse(self, raw: bytes) -> dict[str, Any]:
        body = parse_object(raw)
        given = body.get("input")
        if not isinstance(given, (str, list)):
            raise BadRequest("`input` is required: a string or a list of items.", param="input")
        if isinstance(given, list) and len(given) > MAX_INPUT_ITEMS:
            raise BadRequest(f"`input` may hold at most {MAX_INPUT_ITEMS} items.", param="input")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise BadRequest("`stream` must be true or false.", param="stream")
        return body

    def plan(self, runtime: Runtime, body: dict[str, Any]) -> Plan:
        return runtime.router.resolve(body["model"], body.get("models"))

    def legs(
        self, runtime: Runtime, plan: Plan, body: dict[str, Any], headers: Mapping[str, str]
    ) -> LegChooser | None:
        native = Leg(RESPONSES, body)
        translations: dict[bool, dict[str, Any] | Skip] = {}

        def choose(target: Target) -> Leg | Skip:
            if target.endpoint.responses_api:
                return native
            reasoning = target.model.reasoning
            chat = translations.get(reasoning)
            if chat is None:
                try:
                    chat = translate.to_chat(body, reasoning=reasoning)
                except BadRequest as refused:
                    chat = Skip(f"it does not speak the Responses API, and {refused.message}")
                translations[reasoning] = chat
            if isinstance(chat, Skip):
                return chat
            return chat_leg(target.endpoint.wire, target.model.limit.output, chat)

        if plan.targets and not any(t.endpoint.responses_api for t in plan.targets):
            # No target takes the request as it is: what chat cannot express is the client's 400 now.
            translate.to_chat(body, reasoning=plan.targets[0].model.reasoning)
        return choose

    def streams(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def answer(self, served: Served, body: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        parsed = served.parsed or {}
        if served.leg is not None and served.leg.dialect is RESPONSES:
            return served.body or b"", chat_usage(parsed.get("usage"))
        return orjson.dumps(translate.to_response(parsed, body)), parsed.get("usage")

    def relay(
        self, served: Served, body: dict[str, Any], expires: float, result: RelayResult
    ) -> AsyncGenerator[bytes, None]:
        if served.leg is not None and served.leg.dialect is RESPONSES:
            events = ResponsesEvents()
            return served.stream(wants_usage=True, result=result, recover=False, process=events,
                                 failure=events.failure)
        chat = served.stream(wants_usage=True, result=result)
        return translate_events(chat, translate.StreamTranslator(body).feed)

    async def send_error(self, send: Send, error: GatewayError, request_id: str) -> None:
        await send_error(send, error, request_id)
