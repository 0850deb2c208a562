"""Pure policy: which checks a request must pass, what it reserves, and what a verdict looks like to a client.

No I/O here: the store decides atomically, these functions only build its input and read its output.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.catalog.schema import Cost
from gateway.config.schema import LimitsConfig, Settings
from gateway.errors import LimitExceeded, QuotaExceeded
from gateway.state.store import Check, LimitSettings, Verdict

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
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return f"day:{day:%Y-%m-%d}", (day + dt.timedelta(days=1)).timestamp()
    if period == "week":
        year, week, weekday = day.isocalendar()
        return f"week:{year}-W{week:02d}", (day + dt.timedelta(days=8 - weekday)).timestamp()
    if period == "month":
        first = day.replace(day=1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        return f"month:{first:%Y-%m}", following.timestamp()
    return "total", None


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
            checks.append(Check(item.scope, "concurrency", limits.concurrency, 1, expires=expires))
        if limits.budget_usd is not None:
            checks.append(Check(item.scope, "spend", limits.budget_usd, worst_cost,
                                period=period_of(limits.period, now)[0], expires=expires))
    return tuple(checks)


def refusal(checks: Sequence[Check], verdict: Verdict, now: float) -> LimitExceeded | QuotaExceeded:
    """The 429 for a refused verdict: which limit, how much is used, when it frees."""
    assert verdict.refused is not None
    check = checks[verdict.refused]
    state = verdict.states[verdict.refused]
    whose = check.scope.replace(":", " `", 1) + "`"
    headers = rate_headers(checks, verdict)
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
    what = {"requests": f"{check.limit:g} requests per minute", "tokens": f"{check.limit:g} tokens per minute",
            "concurrency": f"{check.limit:g} concurrent requests"}[check.kind]
    frees = ("when one of its requests in flight finishes" if check.kind == "concurrency"
             else f"in {wait} s")
    needed = f" (this request needs {check.amount:g} tokens)" if check.kind == "tokens" else ""
    return LimitExceeded(f"Rate limit of {whose} reached: {what}{needed}; used {state.used:g}, it frees {frees}.",
                         headers=headers)


def rate_headers(checks: Sequence[Check], verdict: Verdict) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, for the tightest requests limit and the tightest tokens limit."""
    headers: dict[str, str] = {}
    for kind, suffix in (("requests", "requests"), ("tokens", "tokens")):
        best: tuple[Check, float, float] | None = None
        for check, state in zip(checks, verdict.states, strict=True):
            if check.kind == kind and (best is None or state.remaining < best[1]):
                best = (check, state.remaining, state.reset_seconds)
        if best is not None:
            headers[f"x-ratelimit-limit-{suffix}"] = f"{best[0].limit:g}"
            headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, math.floor(best[1])))
            headers[f"x-ratelimit-reset-{suffix}"] = duration(best[2])
    return headers


def duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `20ms`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 1), 60)
    if minutes:
        return f"{int(minutes)}m{rest:g}s"
    return f"{rest:g}s"


class LimitsIndex:
    """The config's limits by model id (alias or catalog id) and by provider id, resolved once per config."""

    __slots__ = ("models", "providers")

    def __init__(self, models: dict[str, LimitSettings], providers: dict[str, LimitSettings]) -> None:
        self.models = models
        self.providers = providers

    @classmethod
    def from_settings(cls, settings: Settings) -> LimitsIndex:
        models = {m: s for m, a in settings.models.items() if (s := limit_settings(a.limits)) is not None}
        providers = {p: s for p, o in settings.providers.items() if (s := limit_settings(o.limits)) is not None}
        return cls(models, providers)

    def scoped(self, key: str, key_limits: LimitSettings | None, model: str, provider: str | None) -> list[Scoped]:
        """The limits one request is held to: its key's, its model's, its (first) provider's."""
        scoped: list[Scoped] = []
        if key_limits is not None:
            scoped.append(Scoped(f"key:{key}", key_limits))
        if self.models:
            limits = self.models.get(model)
            if limits is not None:
                scoped.append(Scoped(f"model:{model}", limits))
        if self.providers and provider is not None:
            limits = self.providers.get(provider)
            if limits is not None:
                scoped.append(Scoped(f"provider:{provider}", limits))
        return scoped


def reservation(body: Mapping[str, Any], body_size: int, costs: Sequence[tuple[Cost | None, int]]) -> tuple[int, float]:
    """Tokens and worst-case USD to reserve: the body's size as input (about 4 bytes a token, never less
    than the text) plus the requested output cap, else the largest output limit among the targets.

    `costs` is each target's catalog price and output limit; the dearest prices count.
    """
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    output = asked if isinstance(asked, int) and asked > 0 else (
        max((limit for _, limit in costs), default=0) or DEFAULT_OUTPUT_TOKENS)
    prompt = body_size // 4 + 1
    worst = 0.0
    for cost, _ in costs:
        if cost is None:
            continue  # a model without a price counts as free
        per_input = max(cost.input or 0.0, cost.cache_write or 0.0)
        per_output = max(cost.output or 0.0, cost.reasoning or 0.0)
        worst = max(worst, (prompt * per_input + output * per_output) / 1e6)
    return prompt + output, worst
