"""Checks across fields and against the catalog: what the schema alone cannot say.

`check_settings` runs on every load (start, reload, `gateway check`); `check_against_catalog` and
`check_bind` wherever a gateway is built from settings and a catalog (start and reload alike). Each
raises ConfigError naming the file, the key and the fix, and refuses settings that would do nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from gateway.catalog.schema import Catalog
from gateway.config.schema import RetryOverride, RetryPolicy, Settings, TargetSpec, Timeouts, TimeoutsOverride
from gateway.errors import ConfigError
from gateway.state import pg_url, redis_url

_BOUNDED_BY_TOTAL = ("connect", "first_byte", "first_token", "idle", "response")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> str:
    """A sentence about who can reach the gateway; raises ConfigError for an open bind without keys."""
    if settings.auth.keys:
        return f"gateway keys required ({len(settings.auth.keys)} configured)"
    if settings.auth.none:
        return "WARNING: auth is `none`: anyone who can reach this address can use every provider"
    if is_loopback(host):
        return "no gateway keys configured: serving on loopback only"
    raise ConfigError(
        f"{settings.source}: auth.keys: no gateway keys are configured, so the gateway only binds a loopback "
        f"address, and {host} is not one. Add keys under auth.keys, bind 127.0.0.1, or set `auth: none` "
        "to serve without keys on purpose."
    )


def check_settings(settings: Settings) -> None:
    problems = [*_timeouts(settings), *_retries(settings), *_pointless(settings), *_state(settings)]
    if problems:
        raise ConfigError("\n".join(f"{settings.source}: {p}" for p in problems))


def check_against_catalog(settings: Settings, catalog: Catalog) -> None:
    problems: list[str] = []
    for pid in settings.providers:
        if pid not in catalog.providers:
            problems.append(f"providers.{pid}: no such provider in the catalog ({', '.join(settings.catalog)}); "
                            "fix the id (`gateway check` lists them) or remove the block")
    for pid in settings.publish.providers or ():
        if pid not in catalog.providers:
            problems.append(f"publish.providers: `{pid}` is not a provider in the catalog; fix the id or remove it")
    if problems:
        raise ConfigError("\n".join(f"{settings.source}: {p}" for p in problems[:10]))


def _timeouts(settings: Settings) -> Iterator[str]:
    """A phase timeout longer than the total can never fire: the total ends the request first."""
    yield from _timeouts_in("timeouts", settings.timeouts, settings.timeouts.total)
    for pid, provider in settings.providers.items():
        if provider.timeouts is not None:
            total = provider.timeouts.total or settings.timeouts.total
            yield from _timeouts_in(f"providers.{pid}.timeouts", provider.timeouts, total)
    for name, alias in settings.models.items():
        if alias.timeouts is not None:
            total = alias.timeouts.total or settings.timeouts.total
            yield from _timeouts_in(f"models.{name}.timeouts", alias.timeouts, total)


def _timeouts_in(where: str, block: Timeouts | TimeoutsOverride, total: float) -> Iterator[str]:
    # Only what the file sets: a default longer than a shorter total is simply capped by it.
    for name in _BOUNDED_BY_TOTAL:
        value = getattr(block, name) if name in block.model_fields_set else None
        if isinstance(value, int | float) and value > total:
            yield (f"{where}.{name}: {value:g}s is longer than the total deadline ({total:g}s), so it can never "
                   f"apply; lower it or raise `total`")


def _retries(settings: Settings) -> Iterator[str]:
    yield from _backoff_in("retry", settings.retry, settings.retry)
    for pid, provider in settings.providers.items():
        if provider.retry is not None:
            yield from _backoff_in(f"providers.{pid}.retry", provider.retry, settings.retry)
    for name, alias in settings.models.items():
        if alias.retry is not None:
            yield from _backoff_in(f"models.{name}.retry", alias.retry, settings.retry)


def _backoff_in(where: str, block: RetryPolicy | RetryOverride, base: RetryPolicy) -> Iterator[str]:
    initial = block.backoff_initial if block.backoff_initial is not None else base.backoff_initial
    most = block.backoff_max if block.backoff_max is not None else base.backoff_max
    if {"backoff_initial", "backoff_max"} & block.model_fields_set and initial > most:
        yield (f"{where}.backoff_initial: {initial:g}s is more than backoff_max ({most:g}s); the back-off starts at "
               "backoff_initial and doubles up to backoff_max, so lower backoff_initial or raise backoff_max")


def _pointless(settings: Settings) -> Iterator[str]:
    """Settings that would be accepted and then do nothing."""
    if settings.auth.none and settings.auth.keys:
        yield ("auth: `none` and `keys` are both given, and with keys `none` does nothing; remove one of them")
    for name, alias in settings.models.items():
        weighted = [t for t in alias.targets if isinstance(t, TargetSpec) and t.weight != 1.0]
        if weighted and alias.strategy != "weighted":
            yield (f"models.{name}.targets: a `weight` only counts with `strategy: weighted` (this alias is "
                   f"`{alias.strategy}`); set the strategy or drop the weights")
        idle = sorted(alias.model_fields_set - {"targets", "limits"}) if not alias.targets else []
        if idle:
            yield (f"models.{name}.{idle[0]}: without `targets` this entry only carries `limits` for a catalog id, "
                   f"so `{idle[0]}` would do nothing; add `targets` to make it an alias, or remove the key")
        repeated = _repeats([_target_id(t) for t in alias.targets] + list(alias.fallbacks))
        if repeated:
            yield (f"models.{name}: `{repeated}` is listed twice (targets and fallbacks are tried once each); "
                   "remove the repeat")


def _state(settings: Settings) -> Iterator[str]:
    """The Redis and PostgreSQL URLs: given when asked for, of the right kind; never a password in a message."""
    state = settings.state
    if state.backend == "redis" and state.redis_url is None:
        yield ("state.redis_url: required with `state.backend: redis`; write it as "
               f"{redis_url.EXAMPLE}, or set `state.backend: sqlite`")
    if state.redis_url is not None:
        wrong = redis_url.problem(state.redis_url)
        if wrong:
            yield f"state.redis_url: {redis_url.describe(state.redis_url)} {wrong}"
        elif state.backend != "redis":
            yield ("state.redis_url: only used with `state.backend: redis` (the backend is `sqlite`); set the "
                   "backend or remove the URL")
    if "on_failure" in state.model_fields_set and state.backend != "redis":
        yield ("state.on_failure: only applies to `state.backend: redis` (SQLite on this host does not fail "
               "apart from the gateway); remove it or set the backend")
    if state.ledger is not None:
        why = pg_url.problem(state.ledger)
        if why:  # never the value itself: it may carry a password
            yield f"state.ledger: the URL {why}"
    elif "ledger_queue_rows" in state.model_fields_set:
        yield ("state.ledger_queue_rows: only counts with `state.ledger` (rows queue while PostgreSQL is down); "
               "set state.ledger or remove it")


def _target_id(target: str | TargetSpec) -> str:
    return target if isinstance(target, str) else target.model


def _repeats(items: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None
