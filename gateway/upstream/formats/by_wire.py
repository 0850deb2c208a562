"""Which dialect speaks a chat request to a target, by the target's wire format.

Chat-shaped bodies (from chat clients, or translated from another inbound protocol) go to an
OpenAI-wire (or echo) target as chat completions, and to a native Anthropic target as Messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.upstream.formats import Leg
from gateway.upstream.formats.anthropic import AnthropicDialect
from gateway.upstream.formats.openai_chat import CHAT

_ANTHROPIC: dict[int, AnthropicDialect] = {}  # by the model's output limit: a handful of values


def chat_leg(wire: str | None, output_limit: int, body: Mapping[str, Any]) -> Leg:
    """`output_limit` is the model's, from the catalog: Messages requires max_tokens, and it is the default."""
    if wire != "anthropic":
        return Leg(CHAT, body)
    limit = output_limit
    dialect = _ANTHROPIC.get(limit)
    if dialect is None:
        dialect = _ANTHROPIC[limit] = AnthropicDialect(max_output=limit)
    return Leg(dialect, body)
