"""Usage.from_openai and Usage.cost: the plain-count fast paths give what the general ones give."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gateway.catalog.schema import Cost
from gateway.relay.usage import Usage


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}, Usage(12, 7)),
    ({"prompt_tokens": 12}, Usage(12, 0)),
    ({}, Usage()),
    ({"prompt_tokens": True, "completion_tokens": False}, Usage()),  # a bool is not a count
    ({"prompt_tokens": -1, "completion_tokens": "7"}, Usage()),
    ({"prompt_tokens": 12.9, "completion_tokens": math.nan}, Usage(12, 0)),
    ({"prompt_tokens": 1 << 50, "completion_tokens": [1]}, Usage(1 << 40, 0)),  # capped
    ({"prompt_tokens": 100, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 40,
      "cache_write_tokens": 10, "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 20}},
     Usage(100, 30, cached=40, reasoning=20, cache_write=10)),
    ({"prompt_tokens": 5, "completion_tokens": 3, "prompt_tokens_details": None,
      "completion_tokens_details": "x"}, Usage(5, 3)),
])
def test_counts_an_upstream_reported_and_nothing_else(usage: dict[str, Any], expected: Usage) -> None:
    assert Usage.from_openai(usage) == expected


@pytest.mark.parametrize("prices", [Cost(input=1.0, output=2.0), Cost(input=3.0, output=15.0, cache_read=0.3,
                                                                     cache_write=3.75, reasoning=20.0),
                                    Cost(input=0.15, output=0.6)])
@pytest.mark.parametrize("counts", [(0, 0), (1, 1), (12, 7), (123_456, 7_891), (1 << 40, 3)])
def test_the_plain_cost_is_the_general_formula_to_the_last_bit(prices: Cost, counts: tuple[int, int]) -> None:
    usage = Usage(*counts)
    assert prices.input is not None and prices.output is not None
    read = prices.cache_read if prices.cache_read is not None else prices.input
    write = prices.cache_write if prices.cache_write is not None else prices.input
    general = (usage.input * prices.input + 0 * read + 0 * write
               + (usage.output * prices.output + 0 * (prices.reasoning or 0.0))) / 1e6
    assert usage.cost(prices) == general


def test_no_price_no_cost() -> None:
    assert Usage(5, 5).cost(None) is None and Usage(5, 5).cost(Cost(input=1.0)) is None
