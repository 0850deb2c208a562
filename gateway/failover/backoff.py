"""The only module that imports tenacity: how long to wait before retrying the same target.

Capped exponential back-off with full jitter (tenacity's wait_random_exponential); an upstream's
Retry-After wins when it is given, and a Retry-After longer than policy allows means "skip".
"""

from __future__ import annotations

from tenacity import RetryCallState, wait_random_exponential

from gateway.config.schema import RetryPolicy


class Backoff:
    __slots__ = ("_max_retry_after", "_wait")

    def __init__(self, policy: RetryPolicy) -> None:
        self._wait = wait_random_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
        self._max_retry_after = policy.retry_after_max

    def delay(self, failed_attempts: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next try, or None when the upstream asks for longer than we allow."""
        if retry_after is not None:
            return retry_after if retry_after <= self._max_retry_after else None
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = failed_attempts
        return float(self._wait(state))
