"""Token usage from an OpenAI usage object, and its cost from the catalog's prices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.catalog.schema import Cost


@dataclass(frozen=True, slots=True)
class Usage:
    input: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0
    cache_write: int = 0  # input tokens written to a prompt cache (Anthropic bills them at cache_write)

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any]) -> Usage:
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            input=int(prompt),
            output=int(completion),
            cached=int(prompt_details.get("cached_tokens") or 0),
            reasoning=int(completion_details.get("reasoning_tokens") or 0),
            cache_write=int(prompt_details.get("cache_write_tokens") or 0),
        )

    def cost(self, prices: Cost | None) -> float | None:
        """USD, or None when the catalog has no price. Cached input is billed at cache_read and cache
        writes at cache_write when the catalog has those prices, else at the input price."""
        if prices is None or prices.input is None or prices.output is None:
            return None
        cached = min(self.cached, self.input)
        written = min(self.cache_write, self.input - cached)
        read_price = prices.cache_read if prices.cache_read is not None else prices.input
        write_price = prices.cache_write if prices.cache_write is not None else prices.input
        plain = self.input - cached - written
        # Reasoning tokens are part of the output; a model that prices them apart bills them at that price.
        reasoning = min(self.reasoning, self.output) if prices.reasoning is not None else 0
        output = (self.output - reasoning) * prices.output + reasoning * (prices.reasoning or 0.0)
        return (plain * prices.input + cached * read_price + written * write_price + output) / 1e6
