"""Which wire format each AI SDK package speaks, and the base URL its SDK would use by default.

One table: a new OpenAI-compatible provider package is one row. Providers whose package is not
listed here are unsupported: `gateway check` and start-up say so, requests for them answer 503.
"""

from __future__ import annotations

from typing import Literal

WireFormat = Literal["openai", "anthropic", "echo"]

OPENAI: WireFormat = "openai"
ANTHROPIC: WireFormat = "anthropic"
ECHO: WireFormat = "echo"

# The Messages API version the gateway speaks when the client did not name one.
ANTHROPIC_VERSION = "2023-06-01"

ECHO_PACKAGE = "gateway/echo"

# npm package -> (wire format, default base URL when the catalog entry has no `api`).
# Anthropic's package (Anthropic itself, and MiniMax, Kimi and others serving its Messages API) is
# spoken natively; Google and Cohere are reached through their own OpenAI-compatible endpoints.
PACKAGES: dict[str, tuple[WireFormat, str | None]] = {
    "@ai-sdk/openai-compatible": (OPENAI, None),
    "@ai-sdk/openai": (OPENAI, "https://api.openai.com/v1"),
    "@ai-sdk/anthropic": (ANTHROPIC, "https://api.anthropic.com/v1"),
    "@ai-sdk/google": (OPENAI, "https://generativelanguage.googleapis.com/v1beta/openai"),
    "@ai-sdk/groq": (OPENAI, "https://api.groq.com/openai/v1"),
    "@ai-sdk/mistral": (OPENAI, "https://api.mistral.ai/v1"),
    "@ai-sdk/xai": (OPENAI, "https://api.x.ai/v1"),
    "@ai-sdk/cerebras": (OPENAI, "https://api.cerebras.ai/v1"),
    "@ai-sdk/deepinfra": (OPENAI, "https://api.deepinfra.com/v1/openai"),
    "@ai-sdk/togetherai": (OPENAI, "https://api.together.xyz/v1"),
    "@ai-sdk/perplexity": (OPENAI, "https://api.perplexity.ai"),
    "@ai-sdk/cohere": (OPENAI, "https://api.cohere.ai/compatibility/v1"),
    "@ai-sdk/deepseek": (OPENAI, "https://api.deepseek.com/v1"),
    "@ai-sdk/fireworks": (OPENAI, "https://api.fireworks.ai/inference/v1"),
    "@ai-sdk/vercel": (OPENAI, "https://api.v0.dev/v1"),
    "@ai-sdk/gateway": (OPENAI, "https://ai-gateway.vercel.sh/v1"),
    "@openrouter/ai-sdk-provider": (OPENAI, "https://openrouter.ai/api/v1"),
    "@aihubmix/ai-sdk-provider": (OPENAI, "https://aihubmix.com/v1"),
    "venice-ai-sdk-provider": (OPENAI, "https://api.venice.ai/api/v1"),
    ECHO_PACKAGE: (ECHO, None),
}


def wire_format(npm: str) -> WireFormat | None:
    entry = PACKAGES.get(npm)
    return entry[0] if entry else None


def default_base_url(npm: str) -> str | None:
    entry = PACKAGES.get(npm)
    return entry[1] if entry else None
