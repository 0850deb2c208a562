"""How long a stream may take to its first content: fixed, or learned per target (`first_token: auto`).

`auto` takes a target's recent times to first token (the last 50 it served), waits three times
their 95th percentile, plus one second per 10,000 prompt tokens (a long prompt takes longer to read),
and keeps the result between `first_token_floor` and the ceiling of its kind: `first_token_ceiling`,
or the generous `first_token_ceiling_reasoning` for models the catalog marks `reasoning: true`
(they think before they speak). Until a target has 10 observations, the default of its kind is used
(15 s, or 120 s for reasoning models), within the same bounds.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config.schema import Timeouts

MIN_SAMPLES = 10
DEFAULT = 15.0
DEFAULT_REASONING = 120.0
FACTOR = 3.0
QUANTILE = 0.95
SECONDS_PER_PROMPT_TOKEN = 1.0 / 10_000


def first_token_limit(timeouts: Timeouts, *, reasoning: bool, samples: Sequence[float], prompt_tokens: int) -> float:
    """The first-token limit for a stream of `prompt_tokens`, given the target's recent times to first
    token in ascending order (LatencyStats.first_tokens)."""
    if timeouts.first_token != "auto":
        return float(timeouts.first_token)
    ceiling = timeouts.first_token_ceiling_reasoning if reasoning else timeouts.first_token_ceiling
    if len(samples) < MIN_SAMPLES:
        limit = DEFAULT_REASONING if reasoning else DEFAULT
    else:
        limit = samples[min(len(samples) - 1, int(QUANTILE * len(samples)))] * FACTOR
    limit += prompt_tokens * SECONDS_PER_PROMPT_TOKEN
    return min(max(limit, timeouts.first_token_floor), ceiling)
