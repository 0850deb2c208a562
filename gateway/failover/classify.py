"""The one table that decides, for each upstream failure, whether to retry, move on, or give up.

Also the Attempt record: what one try at one target came to, for headers, errors and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gateway.errors import (
    StreamCut,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)


class Action(Enum):
    RETRY = "retry"  # the same target again, after a back-off
    NEXT = "next"  # this target is done for this request: try the next one
    FAIL = "fail"  # the client's own problem: answer it as the upstream said, no fallback


RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# 402: out of credit. 501 and 505: the target cannot do this at all; asking again will not help.
NEXT_STATUSES = frozenset({401, 402, 403, 404, 501, 505})

# Failures that say something about the target's health, so they count towards its circuit breaker.
# A bad request or a prompt that is too long says nothing about the upstream.
_UNHEALTHY_TYPES = frozenset({"rate_limited", "timeout", "upstream_5xx", "connect", "stream_cut", "auth",
                              "not_found", "malformed", "quota"})


def classify(error: UpstreamError) -> Action:
    if isinstance(error, UpstreamConnectError | StreamCut):
        return Action.RETRY
    if isinstance(error, UpstreamTimeout | UpstreamProtocolError):
        # A silent or broken route is not retried: the next target is a better use of the deadline.
        return Action.NEXT
    if isinstance(error, UpstreamStatusError):
        status = error.upstream_status
        if status in NEXT_STATUSES or error.error_type in ("context_length", "quota"):
            return Action.NEXT
        if status in RETRY_STATUSES or status >= 500:
            return Action.RETRY
        return Action.FAIL
    return Action.NEXT


def counts_against_health(error: UpstreamError) -> bool:
    """Only the upstream's own failures count: not a deadline the client (or the plan) ran out of."""
    if isinstance(error, UpstreamTimeout) and error.phase == "deadline":
        return False
    return error.error_type in _UNHEALTHY_TYPES


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one target (or a target skipped without a try, when `tried` is False)."""

    target: str
    outcome: str  # "success" or an error type from the closed set metrics use
    detail: str
    tried: bool = True
    status: int | None = None
