"""OpenAI embeddings, `POST {base}/embeddings`: passed through with only `model` rewritten.

`encoding_format` (float or base64), `dimensions` and any other field go upstream as the client
sent them. Pure functions: no sockets, no asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import UpstreamProtocolError, UpstreamStatusError
from gateway.upstream.formats import openai_chat
from gateway.upstream.response import UpstreamResponse

_PROVIDER_PREFIX = re.compile(r"^.*/")


class EmbeddingsDialect:
    name = "embeddings"
    path = "/embeddings"

    def build_request(self, body: Mapping[str, Any], upstream_model: str, *, stream: bool) -> dict[str, Any]:
        payload = dict(body)
        payload["model"] = upstream_model
        payload.pop("models", None)
        return payload

    def parse_error(self, status: int, headers: Mapping[str, str], raw: bytes,
                    provider_id: str) -> UpstreamStatusError:
        return openai_chat.parse_error(status, headers, raw, provider_id)

    def check_answer(self, parsed: Any, headers: Mapping[str, str], raw: bytes, provider_id: str) -> None:
        if isinstance(parsed, dict) and isinstance(parsed.get("data"), list):
            return
        if isinstance(parsed, dict) and parsed.get("error"):
            raise openai_chat.parse_error(500, headers, raw, provider_id)
        raise UpstreamProtocolError(f"{provider_id} answered with JSON that is not an embedding list")

    def opens_answer(self, event: bytes, provider_id: str) -> bool:
        raise UpstreamProtocolError(f"{provider_id} answered an embeddings request with a stream")

    def view(self, response: UpstreamResponse) -> UpstreamResponse:
        return response


def vector_space(upstream_model: str) -> str:
    """Which model made a vector, whoever serves it: `openai/text-embedding-3-small` (through a router)
    and `text-embedding-3-small` are one space, `Qwen/Qwen3-Embedding-8B` and `qwen3-embedding-8b` too."""
    return _PROVIDER_PREFIX.sub("", upstream_model).lower()


EMBEDDINGS = EmbeddingsDialect()
