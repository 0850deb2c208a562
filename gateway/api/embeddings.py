"""POST /v1/embeddings: routed like chat, passed through with only `model` rewritten.

Vectors from different models live in different spaces, so a request never falls back to a
target with another embedding model (the same model through another provider is fine), unless the
alias says its targets are compatible (`compatible_embeddings: true`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from starlette.types import Send

from gateway.api.chat import parse_object
from gateway.api.send import send_error
from gateway.errors import BadRequest, GatewayError
from gateway.failover.run import Served
from gateway.relay.stream import RelayResult
from gateway.routing import Plan, Target
from gateway.runtime import Runtime
from gateway.upstream.formats import Leg, LegChooser, Skip
from gateway.upstream.formats.openai_embeddings import EMBEDDINGS, vector_space

MAX_INPUTS = 2048  # OpenAI's own limit on inputs per request


class EmbeddingsProtocol:
    path = "/v1/embeddings"
    headers: frozenset[bytes] = frozenset()
    relays_as_is = False  # no stream

    def parse(self, raw: bytes) -> dict[str, Any]:
        body = parse_object(raw)
        given = body.get("input")
        if isinstance(given, str):
            pass
        elif isinstance(given, list) and given:
            if len(given) > MAX_INPUTS:
                raise BadRequest(f"`input` may hold at most {MAX_INPUTS} items.", param="input")
        else:
            raise BadRequest("`input` is required: a string, or a non-empty list of strings or token arrays.",
                             param="input")
        encoding = body.get("encoding_format")
        if encoding is not None and encoding not in ("float", "base64"):
            raise BadRequest("`encoding_format` must be `float` or `base64`.", param="encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)
                                       or dimensions < 1):
            raise BadRequest("`dimensions` must be a positive integer.", param="dimensions")
        return body

    def plan(self, runtime: Runtime, body: dict[str, Any]) -> Plan:
        return runtime.router.resolve(body["model"], body.get("models"))

    def legs(
        self, runtime: Runtime, plan: Plan, body: dict[str, Any], headers: Mapping[str, str]
    ) -> LegChooser | None:
        listed = body.get("models")
        first = listed[0] if isinstance(listed, list) and listed else body["model"]
        route = runtime.router.route(first)
        leg = Leg(EMBEDDINGS, body)
        if route.compatible_embeddings:
            return lambda _target: leg
        primary = route.targets[0]
        space = vector_space(primary.upstream_model)
        refusal = Skip(f"a different embedding model than {primary.key}, whose vectors would not be comparable"
                       + (f" (set models.{route.id}.compatible_embeddings: true if they are)"
                          if route.is_alias else ""))

        def choose(target: Target) -> Leg | Skip:
            return leg if vector_space(target.upstream_model) == space else refusal

        return choose

    def streams(self, body: dict[str, Any]) -> bool:
        return False

    def answer(self, served: Served, body: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        return served.body or b"", (served.parsed or {}).get("usage")

    def relay(
        self, served: Served, body: dict[str, Any], expires: float, result: RelayResult
    ) -> AsyncGenerator[bytes, None]:
        raise AssertionError("embeddings are never streamed")

    async def send_error(self, send: Send, error: GatewayError, request_id: str) -> None:
        await send_error(send, error, request_id)
