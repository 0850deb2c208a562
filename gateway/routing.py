"""Model ids to plans: `provider/model` for every catalog model, aliases from config, client lists.

Routes are resolved once at start-up (targets with their effective timeouts and retry policy), so
a request only looks a route up and, for weighted or latency strategies, orders its targets.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.catalog.schema import Catalog, Model
from gateway.config.schema import (
    ModelAlias,
    ProviderSettings,
    RetryOverride,
    RetryPolicy,
    Settings,
    Timeouts,
    TimeoutsOverride,
)
from gateway.errors import BadRequest, ConfigError, ModelNotFound
from gateway.suggest import SuggestionIndex
from gateway.upstream.endpoint import Endpoint

_PROVIDERS = "/"  # the suggestion scope of provider ids (no provider id contains a slash)
TTFT_SAMPLES = 50  # recent times to first token kept per target
EXPLORE = 0.05  # `latency` strategy: share of requests that try a target not yet measured first


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream model reached through one provider, with the policy that applies to it."""

    key: str
    upstream_model: str
    endpoint: Endpoint
    model: Model
    timeouts: Timeouts
    retry: RetryPolicy
    weight: float = 1.0
    recovery: Literal["continue", "off"] = "continue"  # continue a stream that broke after content?
    prefill: Literal["assistant", "prefix", "none"] = "assistant"  # how it continues an answer

    # Read several times per request: plain attributes, set once when the config is loaded.
    provider_id: str = field(init=False, repr=False, compare=False)  # the endpoint's provider id
    # Largest prompt the catalog says fits (input limit, else context window); None if unknown.
    context_limit: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider_id", self.endpoint.provider_id)
        object.__setattr__(self, "context_limit", self.model.limit.input or self.model.limit.context or None)


@dataclass(frozen=True, slots=True)
class Plan:
    """The ordered targets to try for one request, and the deadline that bounds them all."""

    model: str  # the known id it was resolved from (with a client `models` list, the list's first)
    targets: tuple[Target, ...]
    total: float


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    targets: tuple[Target, ...]
    fallbacks: tuple[Target, ...]
    strategy: str
    total: float
    is_alias: bool
    compatible_embeddings: bool = False
    # The plan of every request for this id when its order never varies (ordered, or one target): made
    # once here, not per request (a Plan is immutable). None: ordered per request (weighted, latency).
    plan: Plan | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fixed = self.strategy == "ordered" or len(self.targets) < 2
        object.__setattr__(self, "plan", Plan(self.id, self.targets + self.fallbacks, self.total) if fixed else None)


class LatencyStats:
    """Per target: an EWMA of successful times to first byte, and recent times to first token.

    With shared state, other replicas' EWMAs arrive through set_peers() (gateway/failover/shared.py)
    and get() blends them in, so a replica ranks targets it has not tried yet by what the others saw."""

    __slots__ = ("_ewma", "_peers", "_ttft")

    def __init__(self) -> None:
        self._ewma: dict[str, float] = {}
        self._ttft: dict[str, RecentTimes] = {}
        self._peers: dict[str, tuple[float, int]] = {}  # target -> (mean of the other replicas' EWMAs, how many)

    def observe(self, key: str, seconds: float) -> None:
        previous = self._ewma.get(key)
        self._ewma[key] = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def get(self, key: str) -> float | None:
        """None for a target no replica has seen succeed; otherwise each replica's EWMA weighs the same."""
        own = self._ewma.get(key)
        peers = self._peers.get(key)
        if peers is None:
            return own
        mean, count = peers
        return mean if own is None else (own + mean * count) / (count + 1)

    def own(self) -> dict[str, float]:
        """This replica's EWMAs (what it publishes)."""
        return dict(self._ewma)

    def set_peers(self, peers: dict[str, tuple[float, int]]) -> None:
        """The other replicas' EWMAs per target, as (mean, count); replaces the previous set."""
        self._peers = peers

    def observe_first_token(self, key: str, seconds: float) -> None:
        recent = self._ttft.get(key)
        if recent is None:
            recent = self._ttft[key] = RecentTimes()
        recent.add(seconds)

    def first_tokens(self, key: str) -> Sequence[float]:
        """The target's last times to first token, in ascending order (not to be changed)."""
        recent = self._ttft.get(key)
        return recent.ordered if recent is not None else ()

    def retain(self, keys: set[str]) -> None:
        """Forget targets a reloaded config no longer has."""
        for table in (self._ewma, self._ttft, self._peers):
            for key in [k for k in table if k not in keys]:
                del table[key]


class RecentTimes:
    """A target's last TTFT_SAMPLES times, kept in ascending order as they come (a bisect each), so that a
    stream's first-token limit reads its quantile instead of sorting them (~7.6k instructions a stream)."""

    __slots__ = ("_arrived", "ordered")

    def __init__(self) -> None:
        self._arrived: deque[float] = deque(maxlen=TTFT_SAMPLES)
        self.ordered: list[float] = []

    def add(self, seconds: float) -> None:
        arrived, ordered = self._arrived, self.ordered
        if len(arrived) == arrived.maxlen:  # the oldest leaves both
            del ordered[bisect.bisect_left(ordered, arrived[0])]
        arrived.append(seconds)
        bisect.insort(ordered, seconds)


class Router:
    def __init__(self, catalog: Catalog, settings: Settings, endpoints: Mapping[str, Endpoint],
                 latency: LatencyStats | None = None, rng: random.Random | None = None) -> None:
        self.latency = latency if latency is not None else LatencyStats()
        self._rng = rng or random.Random()
        self.routes: dict[str, Route] = {}
        for provider in catalog.providers.values():
            endpoint = endpoints[provider.id]
            override = settings.providers.get(provider.id)
            timeouts = _merge_timeouts(settings.timeouts, override.timeouts if override else None)
            retry = _merge_retry(settings.retry, override.retry if override else None)
            for model in provider.models.values():
                key = f"{provider.id}/{model.id}"
                target = Target(key, model.id, endpoint, model, timeouts, retry,
                                recovery=_recovery(settings, override, None),
                                prefill=override.prefill if override else "assistant")
                self.routes[key] = Route(key, (target,), (), "ordered", timeouts.total, is_alias=False)
        for name, alias in settings.models.items():
            if alias.targets:
                self.routes[name] = self._alias_route(name, alias, settings, catalog, endpoints)
            elif name not in self.routes:
                raise ConfigError(f"{settings.source}: models.{name}: `{name}` is not a catalog model, so it "
                                  "needs `targets` to be an alias (gateway check lists the catalog's ids)")
        routes = ((route.targets[0].provider_id, route.targets[0].upstream_model, key) if not route.is_alias
                  else ("", key, key) for key, route in self.routes.items())
        providers = ((_PROVIDERS, pid, pid) for pid in catalog.providers)
        self._suggestions = SuggestionIndex(itertools.chain(routes, providers))

    def resolve(self, model: str, client_models: Sequence[Any] | None = None) -> Plan:
        """The plan for a request: its model's route, or the client's own `models` order."""
        if client_models:
            if not isinstance(client_models, list) or not all(isinstance(m, str) for m in client_models):
                raise BadRequest("`models` must be a list of model ids", param="models")
            routes = [self.route(m) for m in client_models]
            ordered: dict[str, Target] = {}  # each target once, at its first place
            for route in routes:
                for target in self._order(route):
                    ordered.setdefault(target.key, target)
            # The client's `model` was not resolved, so it names nothing: the plan goes by the first id
            # of its list, a known one (metrics label it, messages quote it).
            return Plan(routes[0].id, tuple(ordered.values()), routes[0].total)
        route = self.route(model)
        return route.plan or Plan(model, self._order(route), route.total)

    def route(self, model: str) -> Route:
        route = self.routes.get(model)
        if route is None:
            raise ModelNotFound(self._not_found_message(model), param="model")
        return route

    def _order(self, route: Route) -> tuple[Target, ...]:
        if route.strategy == "ordered" or len(route.targets) < 2:
            return route.targets + route.fallbacks if route.fallbacks else route.targets
        if route.strategy == "weighted":
            # Weighted sampling without replacement (Efraimidis-Spirakis): one key per target, sorted.
            rng = self._rng
            primary = tuple(sorted(route.targets, key=lambda t: rng.random() ** (1.0 / t.weight), reverse=True))
        else:
            primary = self._by_latency(route.targets)
        return (*primary, *route.fallbacks)

    def _by_latency(self, targets: tuple[Target, ...]) -> tuple[Target, ...]:
        """Fastest first among targets seen to succeed; now and then, one not yet seen goes first so
        that it gets the chance to be measured (and a failing one is not ranked first forever)."""
        latency = self.latency
        seen = sorted((t for t in targets if latency.get(t.key) is not None), key=lambda t: latency.get(t.key) or 0.0)
        unseen = [t for t in targets if latency.get(t.key) is None]
        if unseen and seen and self._rng.random() < EXPLORE:
            return (unseen[0], *seen, *unseen[1:])
        return (*seen, *unseen)

    def _alias_route(
        self, name: str, alias: ModelAlias, settings: Settings, catalog: Catalog, endpoints: Mapping[str, Endpoint]
    ) -> Route:
        timeouts_override = alias.timeouts
        total = timeouts_override.total if timeouts_override and timeouts_override.total else settings.timeouts.total

        def build(spec: str, weight: float, where: str) -> Target:
            provider_id, _, model_id = spec.partition("/")
            provider = catalog.providers.get(provider_id)
            if provider is None or not model_id:
                raise ConfigError(f"{settings.source}: models.{name}.{where}: unknown model `{spec}`; "
                                  f"use a `provider/model` id from the catalog (gateway check lists them)")
            base = self.routes.get(spec)
            model = base.targets[0].model if base else Model(id=model_id, name=model_id)
            override = settings.providers.get(provider_id)
            timeouts = _merge_timeouts(_merge_timeouts(settings.timeouts, override.timeouts if override else None),
                                       timeouts_override)
            retry = _merge_retry(_merge_retry(settings.retry, override.retry if override else None), alias.retry)
            return Target(spec, model_id, endpoints[provider_id], model, timeouts, retry, weight,
                          recovery=_recovery(settings, override, alias),
                          prefill=override.prefill if override else "assistant")

        targets = []
        for index, entry in enumerate(alias.targets):
            spec, weight = (entry, 1.0) if isinstance(entry, str) else (entry.model, entry.weight)
            targets.append(build(spec, weight, f"targets.{index}"))
        fallbacks = [build(spec, 1.0, f"fallbacks.{i}") for i, spec in enumerate(alias.fallbacks)]
        return Route(name, tuple(targets), tuple(fallbacks), alias.strategy, total, is_alias=True,
                     compatible_embeddings=alias.compatible_embeddings)

    def _not_found_message(self, model: str) -> str:
        provider, _, name = model.partition("/")
        if name and provider not in self._suggestions:
            # `opnai/gpt-5`: look for the model under the provider id it is closest to.
            provider = next(iter(self._suggestions.suggest(_PROVIDERS, provider)), provider)
        close = self._suggestions.suggest(provider, name) or self._suggestions.suggest("", model)
        hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        return (f"The model `{model}` does not exist on this gateway.{hint} "
                "List the model ids with GET /v1/models (or `gateway check`).")


def _recovery(settings: Settings, provider: ProviderSettings | None,
              alias: ModelAlias | None) -> Literal["continue", "off"]:
    """stream_recovery: the alias's, else the provider's, else the global setting."""
    if alias is not None and alias.stream_recovery is not None:
        return alias.stream_recovery
    if provider is not None and provider.stream_recovery is not None:
        return provider.stream_recovery
    return settings.stream_recovery


def _merge_timeouts(base: Timeouts, override: TimeoutsOverride | None) -> Timeouts:
    if override is None:
        return base
    return base.model_copy(update={k: v for k, v in override.model_dump().items() if v is not None})


def _merge_retry(base: RetryPolicy, override: RetryOverride | None) -> RetryPolicy:
    if override is None:
        return base
    return base.model_copy(update={k: v for k, v in override.model_dump().items() if v is not None})
