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
        )

    def cost(self, prices: Cost | None) -> float | None:
        """USD, or None when the catalog has no price. Cached input is billed at cache_read when known."""
        if prices is None or prices.input is None or prices.output is None:
            return None
        cached = min(self.cached, self.input)
        cache_price = prices.cache_read if prices.cache_read is not None else prices.input
        return ((self.input - cached) * prices.input + cached * cache_price + self.output * prices.output) / 1e6
