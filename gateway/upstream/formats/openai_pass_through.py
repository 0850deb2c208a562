"""What the dialects of OpenAI's other endpoints (embeddings, Responses) share when a target speaks them.

The client's body goes upstream untouched but for `model`, errors are read as OpenAI's, and the
answer is the upstream's own (no view translates it). A dialect says where it posts, which list a
whole answer carries, and which stream event opens an answer. Pure: no sockets, no asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import UpstreamProtocolError, UpstreamStatusError
from gateway.upstream.formats import openai_chat
from gateway.upstream.response import UpstreamResponse


class OpenAIPassThrough:
    name: str
    path: str
    answer_list: str  # the list field every whole answer carries
    answer_noun: str  # what a whole answer is, for the error when JSON is not one

    def build_request(self, body: Mapping[str, Any], upstream_model: str, *, stream: bool) -> dict[str, Any]:
        return openai_chat.with_upstream_model(body, upstream_model)

    def parse_error(self, status: int, headers: Mapping[str, str], raw: bytes,
                    provider_id: str) -> UpstreamStatusError:
        return openai_chat.parse_error(status, headers, raw, provider_id)

    def check_answer(self, parsed: Any, headers: Mapping[str, str], raw: bytes, provider_id: str) -> None:
        if isinstance(parsed, dict) and isinstance(parsed.get(self.answer_list), list):
            return
        if isinstance(parsed, dict) and parsed.get("error"):
            raise openai_chat.parse_error(500, headers, raw, provider_id)
        raise UpstreamProtocolError(f"{provider_id} answered with JSON that is not {self.answer_noun}")

    def view(self, response: UpstreamResponse) -> UpstreamResponse:
        return response  # passed through: the client gets the upstream's own bytes
