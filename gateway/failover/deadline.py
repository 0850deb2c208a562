"""One deadline per request: it bounds every attempt, retry, back-off and fallback together."""

from __future__ import annotations

import time


class Deadline:
    __slots__ = ("expires", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def cap(self, seconds: float) -> float:
        """A phase timeout, shortened so it ends no later than the deadline."""
        return max(0.0, min(seconds, self.expires - time.monotonic()))
