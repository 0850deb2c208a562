"""Prompt-cache tokens are priced at the catalog's cache prices (Anthropic's reads and writes)."""

from __future__ import annotations

import pytest

from gateway.catalog.schema import Cost
from gateway.relay.usage import Usage
from gateway.upstream.formats.anthropic_messages import chat_usage


def test_cache_reads_and_writes_are_priced_apart() -> None:
    # Anthropic: 12 plain input tokens, 2000 read from the cache, 100 written to it, 5 out.
    usage = Usage.from_openai(chat_usage({"input_tokens": 12, "cache_read_input_tokens": 2000,
                                          "cache_creation_input_tokens": 100, "output_tokens": 5}))
    assert (usage.input, usage.cached, usage.cache_write, usage.output) == (2112, 2000, 100, 5)
    prices = Cost(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    assert usage.cost(prices) == pytest.approx((12 * 3.0 + 2000 * 0.3 + 100 * 3.75 + 5 * 15.0) / 1e6)


def test_without_cache_prices_cache_tokens_cost_plain_input() -> None:
    usage = Usage(input=100, output=0, cached=40, cache_write=10)
    assert usage.cost(Cost(input=1.0, output=1.0)) == pytest.approx(100 / 1e6)
