"""OpenAI embeddings, `POST {base}/embeddings`: passed through with only `model` rewritten.

`encoding_format` (float or base64), `dimensions` and any other field go upstream as the client
sent them. Pure functions: no sockets, no asyncio.
"""

from __future__ import annotations

import re

from gateway.errors import UpstreamProtocolError
from gateway.upstream.formats.openai_pass_through import OpenAIPassThrough

_PROVIDER_PREFIX = re.compile(r"^.*/")


class EmbeddingsDialect(OpenAIPassThrough):
    name = "embeddings"
    path = "/embeddings"
    answer_list = "data"
    answer_noun = "an embedding list"

    def opens_answer(self, event: bytes, provider_id: str) -> bool:
        raise UpstreamProtocolError(f"{provider_id} answered an embeddings request with a stream")


def vector_space(upstream_model: str) -> str:
    """Which model made a vector, whoever serves it: `openai/text-embedding-3-small` (through a router)
    and `text-embedding-3-small` are one space, `Qwen/Qwen3-Embedding-8B` and `qwen3-embedding-8b` too."""
    return _PROVIDER_PREFIX.sub("", upstream_model).lower()


EMBEDDINGS = EmbeddingsDialect()
