"""An estimate of a Messages request's input tokens, for /v1/messages/count_tokens without a native target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

IMAGE_TOKENS = 1600  # what one image of about 1.15 megapixels costs Anthropic; the estimate assumes that size


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """About four characters a token over system, messages and tool definitions; images at IMAGE_TOKENS."""
    chars = len(orjson.dumps(body.get("system"))) if body.get("system") else 0
    images = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "image":
                images += 1
            elif isinstance(block, dict):
                chars += len(str(block.get("text") or "")) + len(orjson.dumps(block.get("input") or "")) + len(
                    str(block.get("content") or "")) + len(str(block.get("thinking") or ""))
    if body.get("tools"):
        chars += len(orjson.dumps(body["tools"]))
    return max(1, chars // 4 + images * IMAGE_TOKENS)
