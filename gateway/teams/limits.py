"""Pure policy: which checks a request must pass, what it reserves, and what a verdict looks like to a client.

No I/O here: the store decides atomically, these functions only build its input and read its output.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.config.schema import LimitsConfig, Settings
from gateway.errors import LimitExceeded, QuotaExceeded
from gateway.state.store import Check, CheckState, LimitSettings, Verdict

if TYPE_CHECKING:
    from gateway.routing import Target

DEFAULT_OUTPUT_TOKENS = 4096  # reserved when neither the request nor the catalog bounds the answer


def limit_settings(config: LimitsConfig | None) -> LimitSettings | None:
    if config is None:
        return None
    settings = LimitSettings(config.rpm, config.tpm, config.concurrency, config.budget_usd, config.period,
                             config.soft_ratio)
    return None if settings.empty else settings


@dataclass(frozen=True, slots=True)
class Scoped:
    """Limits that apply to one request, with whose they are: `key:NAME`, `model:ID`, `provider:ID`."""

    scope: str
    limits: LimitSettings


def period_of(period: str, now: float) -> tuple[str, float | None]:
    """The calendar bucket `now` falls in (UTC) and when it ends (None for `total`)."""
    cached = _PERIODS.get(period)
    if cached is not None and cached[0] <= now < cached[1]:
        return cached[2], cached[3]  # every request of the period: no datetime arithmetic
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end, name = day, day + dt.timedelta(days=1), f"day:{day:%Y-%m-%d}"
    elif period == "week":
        year, week, weekday = day.isocalendar()
        start, end, name = day - dt.timedelta(days=weekday - 1), day + dt.timedelta(days=8 - weekday), \
            f"week:{year}-W{week:02d}"
    elif period == "month":
        start = day.replace(day=1)
        end, name = (start + dt.timedelta(days=32)).replace(day=1), f"month:{start:%Y-%m}"
    else:
        return "total", None
    _PERIODS[period] = (start.timestamp(), end.timestamp(), name, end.timestamp())
    return name, end.timestamp()


# The period `now` fell in last, per kind: (starts, ends, name, ends); a clock moved back or forth misses.
_PERIODS: dict[str, tuple[float, float, str, float]] = {}


def build_checks(scoped: Sequence[Scoped], tokens: int, worst_cost: float, now: float,
                 hold_seconds: float) -> tuple[Check, ...]:
    """Every check the request must pass, in a fixed order (key, model, provider; requests first)."""
    checks: list[Check] = []
    expires = now + hold_seconds
    for item in scoped:
        limits = item.limits
        if limits.rpm is not None:
            checks.append(Check(item.scope, "requests", limits.rpm, 1))
        if limits.tpm is not None:
            checks.append(Check(item.scope, "tokens", limits.tpm, tokens))
        if limits.concurrency is not None:
            checks.append(Check(item.scope, "concurrency", limits.concurrency, 1, "", expires))
        if limits.budget_usd is not None:
            checks.append(Check(item.scope, "spend", limits.budget_usd, worst_cost, period_of(limits.period, now)[0],
                                expires))
    return tuple(checks)


def refusal(checks: Sequence[Check], verdict: Verdict, now: float) -> LimitExceeded | QuotaExceeded:
    """The 429 for a refused verdict: which limit, how much is used, when it frees."""
    assert verdict.refused is not None
    check = checks[verdict.refused]
    state = verdict.states[verdict.refused]
    whose = check.scope.replace(":", " `", 1) + "`"
    headers = {k.decode(): v.decode() for k, v in rate_headers(checks, verdict)}
    if check.kind == "spend":
        period, ends = period_of(check.period.partition(":")[0] or "total", now)
        wait = max(1, math.ceil(ends - now)) if ends is not None else None
        when = (f"it resets at {dt.datetime.fromtimestamp(ends, dt.UTC):%Y-%m-%d %H:%M} UTC" if ends is not None
                else "it does not reset (a total budget); raise it to continue")
        if wait is not None:
            headers["Retry-After"] = str(wait)
        return QuotaExceeded(f"The budget of {whose} is spent: ${state.used:.4f} of ${check.limit:.2f} for "
                             f"{period.replace(':', ' ')} (in-flight requests included); {when}.", headers=headers)
    wait = max(1, math.ceil(verdict.retry_after)) if check.kind != "concurrency" else 1
    headers["Retry-After"] = str(wait)
    what = {"requests": f"{check.limit:.0f} requests per minute", "tokens": f"{check.limit:.0f} tokens per minute",
            "concurrency": f"{check.limit:.0f} concurrent requests"}[check.kind]
    frees = ("when one of its requests in flight finishes" if check.kind == "concurrency"
             else f"in {wait} s")
    needed = f" (this request needs {check.amount:g} tokens)" if check.kind == "tokens" else ""
    return LimitExceeded(f"Rate limit of {whose} reached: {what}{needed}; used {state.used:g}, it frees {frees}.",
                         headers=headers)


def rate_headers(checks: Sequence[Check], verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers, for the tightest requests limit and the tightest tokens limit
    (as bytes: they go straight into the answer's head)."""
    requests: tuple[Check, CheckState] | None = None
    tokens: tuple[Check, CheckState] | None = None
    for check, state in zip(checks, verdict.states, strict=True):
        kind = check.kind
        if kind == "requests":
            if requests is None or state.remaining < requests[1].remaining:
                requests = (check, state)
        elif kind == "tokens" and (tokens is None or state.remaining < tokens[1].remaining):
            tokens = (check, state)
    headers: list[tuple[bytes, bytes]] = []
    if requests is not None:
        check, state = requests
        headers += ((_REQUESTS[0], b"%d" % check.limit),  # rpm and tpm are whole numbers
                    (_REQUESTS[1], b"%d" % state.remaining),  # never negative: %d floors it
                    (_REQUESTS[2], duration(state.reset_seconds)))
    if tokens is not None:
        check, state = tokens
        headers += ((_TOKENS[0], b"%d" % check.limit), (_TOKENS[1], b"%d" % state.remaining),
                    (_TOKENS[2], duration(state.reset_seconds)))
    return headers


_REQUESTS = (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests", b"x-ratelimit-reset-requests")
_TOKENS = (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", b"x-ratelimit-reset-tokens")


def duration(seconds: float) -> bytes:
    """OpenAI's reset format: `1s`, `6m0s`, `20ms`."""
    if seconds < 1:
        return b"%dms" % max(0, round(seconds * 1000))
    minutes, rest = divmod(round(seconds, 1), 60)
    if minutes:
        return b"%dm%gs" % (minutes, rest)
    return b"%gs" % rest


class LimitsIndex:
    """The config's limits by model id (alias or catalog id) and by provider id, resolved once per config,
    and what each target's price reserves. Scopes are made once, not per request."""

    __slots__ = ("_keys", "_prices", "models", "providers")

    def __init__(self, models: dict[str, LimitSettings], providers: dict[str, LimitSettings]) -> None:
        self.models = {m: Scoped(f"model:{m}", s) for m, s in models.items()}
        self.providers = {p: Scoped(f"provider:{p}", s) for p, s in providers.items()}
        self._keys: dict[str, Scoped] = {}
        self._prices: dict[str, tuple[float, float, int]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> LimitsIndex:
        models = {m: s for m, a in settings.models.items() if (s := limit_settings(a.limits)) is not None}
        providers = {p: s for p, o in settings.providers.items() if (s := limit_settings(o.limits)) is not None}
        return cls(models, providers)

    def scoped(self, key: str, key_limits: LimitSettings | None, model: str) -> list[Scoped]:
        """The limits one request is held to at admission: its key's and its model's. A provider's are
        checked per attempt, on the provider each attempt goes to (`provider`)."""
        scoped: list[Scoped] = []
        if key_limits is not None:
            mine = self._keys.get(key)
            if mine is None or mine.limits is not key_limits:  # a managed key's limits were changed
                mine = self._keys[key] = Scoped(f"key:{key}", key_limits)
            scoped.append(mine)
        if self.models:
            limits = self.models.get(model)
            if limits is not None:
                scoped.append(limits)
        return scoped

    def provider(self, provider: str) -> Scoped | None:
        return self.providers.get(provider)

    def reservation(self, body: Mapping[str, Any], body_size: int, targets: Sequence[Target]) -> tuple[int, float]:
        """Tokens and worst-case USD to reserve: the body's size as input (about 4 bytes a token, never less
        than the text) plus the requested output cap, else the largest output limit among the targets;
        at the dearest prices among the targets (a model without a price counts as free)."""
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        prompt = body_size // 4 + 1
        per_input = per_output = 0.0
        longest = 0
        for target in targets:
            price = self._prices.get(target.key) or self._price(target)
            per_input = max(per_input, price[0])
            per_output = max(per_output, price[1])
            longest = max(longest, price[2])
        output = asked if isinstance(asked, int) and asked > 0 else longest or DEFAULT_OUTPUT_TOKENS
        return prompt + output, (prompt * per_input + output * per_output) / 1e6

    def _price(self, target: Target) -> tuple[float, float, int]:
        """USD per million input and output tokens at their dearest (cache writes, reasoning), output limit."""
        cost = target.model.cost
        per_input = max(cost.input or 0.0, cost.cache_write or 0.0) if cost is not None else 0.0
        per_output = max(cost.output or 0.0, cost.reasoning or 0.0) if cost is not None else 0.0
        price = self._prices[target.key] = (per_input, per_output, target.model.limit.output)
        return price
