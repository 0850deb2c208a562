"""Token usage from an OpenAI usage object, and its cost from the catalog's prices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.catalog.schema import Cost


# Not frozen: made for every request, and a frozen dataclass pays object.__setattr__ per field. A value:
# nothing changes one after it is made.
@dataclass(slots=True)
class Usage:
    input: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0
    cache_write: int = 0  # input tokens written to a prompt cache (Anthropic bills them at cache_write)

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any]) -> Usage:
        """Counts an upstream reported; a field that is not a count (`"abc"`, -1, a list) counts as 0."""
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        # The usual answer: two plain counts and no details (checked inline: this runs for every request).
        if type(prompt_tokens) is int and type(completion_tokens) is int and 0 <= prompt_tokens <= _MAX_COUNT \
                and 0 <= completion_tokens <= _MAX_COUNT and "prompt_tokens_details" not in usage \
                and "completion_tokens_details" not in usage:
            return cls(prompt_tokens, completion_tokens)
        prompt = usage.get("prompt_tokens_details")
        details = prompt if isinstance(prompt, Mapping) else {}
        completion = usage.get("completion_tokens_details")
        return cls(
            input=_count(prompt_tokens),
            output=_count(completion_tokens),
            cached=_count(details.get("cached_tokens")),
            reasoning=_count(completion.get("reasoning_tokens")) if isinstance(completion, Mapping) else 0,
            cache_write=_count(details.get("cache_write_tokens")),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input + other.input, self.output + other.output, self.cached + other.cached,
                     self.reasoning + other.reasoning, self.cache_write + other.cache_write)

    def to_openai(self) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": self.input, "completion_tokens": self.output,
                                 "total_tokens": self.input + self.output}
        if self.cached or self.cache_write:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached, "cache_write_tokens": self.cache_write}
        if self.reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning}
        return usage

    def cost(self, prices: Cost | None) -> float | None:
        """USD, or None when the catalog has no price. Cached input is billed at cache_read and cache
        writes at cache_write when the catalog has those prices, else at the input price."""
        if prices is None or prices.input is None or prices.output is None:
            return None
        if not (self.cached or self.cache_write or self.reasoning):
            # The usual answer, the same sum as below without its zero terms (adding 0.0 changes no float).
            return (self.input * prices.input + self.output * prices.output) / 1e6
        cached = min(self.cached, self.input)
        written = min(self.cache_write, self.input - cached)
        read_price = prices.cache_read if prices.cache_read is not None else prices.input
        write_price = prices.cache_write if prices.cache_write is not None else prices.input
        plain = self.input - cached - written
        # Reasoning tokens are part of the output; a model that prices them apart bills them at that price.
        reasoning = min(self.reasoning, self.output) if prices.reasoning is not None else 0
        output = (self.output - reasoning) * prices.output + reasoning * (prices.reasoning or 0.0)
        return (plain * prices.input + cached * read_price + written * write_price + output) / 1e6


_MAX_COUNT = 1 << 40  # a count above this is an upstream's bug, not a bill


def _count(value: Any) -> int:
    if type(value) is int and 0 <= value <= _MAX_COUNT:  # the usual count, checked first
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return 0
    return int(min(value, _MAX_COUNT))
