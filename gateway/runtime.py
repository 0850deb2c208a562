"""Everything a request needs, built once from settings and catalog: endpoints, routes, keys, failover.

A config reload builds a new Runtime and swaps it in; requests in flight keep the one they started with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from gateway import metrics
from gateway.auth import Authenticator
from gateway.catalog.schema import Catalog
from gateway.config.schema import Settings
from gateway.failover.breaker import State
from gateway.failover.health import Health
from gateway.failover.run import Executor
from gateway.routing import Router
from gateway.teams.limits import LimitsIndex
from gateway.teams.service import Teams
from gateway.upstream.endpoint import Endpoint, build_endpoint
from gateway.upstream.transport import Transport

log = logging.getLogger("gateway")


class DocumentCache:
    """Published documents (/v1/models, the provider JSON) serialised once per runtime and kind of viewer.

    Owned by the Runtime, so a reload starts a fresh one. Bounded, because a key can hold what a
    client sent (the Host that the provider JSON's URL is built from).
    """

    __slots__ = ("_entries",)
    MAX_ENTRIES = 64

    def __init__(self) -> None:
        self._entries: dict[Hashable, bytes] = {}

    def get(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        body = self._entries.get(key)
        if body is None:
            body = build()
            if len(self._entries) >= self.MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]  # the oldest
            self._entries[key] = body
        return body


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalog: Catalog
    endpoints: Mapping[str, Endpoint]
    router: Router
    auth: Authenticator
    health: Health
    executor: Executor
    limits: LimitsIndex
    teams: Teams | None  # None where nothing is served (publish, check)
    documents: DocumentCache = field(default_factory=DocumentCache, compare=False)

    @classmethod
    def build(
        cls, settings: Settings, catalog: Catalog, transport: Transport, health: Health,
        environ: Mapping[str, str] | None = None, teams: Teams | None = None,
    ) -> Runtime:
        """`health` outlives this runtime: a reload hands the same one to the next."""
        return RuntimeParts.prepare(settings, catalog, health, environ).assemble(transport, health, teams)

    @property
    def ready(self) -> bool:
        """At least one provider can be called."""
        return any(e.available for e in self.endpoints.values())


@dataclass(frozen=True, slots=True)
class RuntimeParts:
    """The slow, self-contained part of a Runtime (endpoints and routes for every catalog model).

    `prepare` touches nothing shared, so a reload runs it in a thread; `assemble` wires the parts to
    the shared health, metrics and teams, and runs on the event loop.
    """

    settings: Settings
    catalog: Catalog
    endpoints: Mapping[str, Endpoint]
    router: Router
    limits: LimitsIndex

    @classmethod
    def prepare(cls, settings: Settings, catalog: Catalog, health: Health,
                environ: Mapping[str, str] | None = None) -> RuntimeParts:
        environ = os.environ if environ is None else environ
        endpoints = {
            pid: build_endpoint(provider, settings.providers.get(pid), environ)
            for pid, provider in catalog.providers.items()
        }
        router = Router(catalog, settings, endpoints, health.latency)
        return cls(settings, catalog, endpoints, router, LimitsIndex.from_settings(settings))

    def assemble(self, transport: Transport, health: Health, teams: Teams | None = None) -> Runtime:
        settings, router = self.settings, self.router
        watcher = _CircuitWatcher(router, health)
        keys = {t.key for route in router.routes.values() for t in (*route.targets, *route.fallbacks)}
        health.configure(settings.breaker, keys, watcher.changed)
        watcher.publish_all()
        executor = Executor(transport, health, settings.upstream)
        auth = Authenticator(settings.auth, teams.keys, teams.wall_clock) if teams else Authenticator(settings.auth)
        return Runtime(settings, self.catalog, self.endpoints, router, auth, health, executor, self.limits, teams)


    @property
    def ready(self) -> bool:
        """At least one provider can be called."""
        return any(e.available for e in self.endpoints.values())


class _CircuitWatcher:
    """Turns circuit changes into metrics: per target, and per alias how many of its targets are open."""

    def __init__(self, router: Router, health: Health) -> None:
        self._health = health
        self._aliases: dict[str, tuple[str, ...]] = {}
        for route in router.routes.values():
            if route.is_alias:
                self._aliases[route.id] = tuple(dict.fromkeys(t.key for t in (*route.targets, *route.fallbacks)))

    def changed(self, key: str, state: State) -> None:
        provider, _, model = key.partition("/")
        log.warning("circuit %s for %s", state.name.lower(), key)
        metrics.circuit_state(provider, model, int(state))
        for alias, keys in self._aliases.items():
            if key in keys:
                self._publish(alias, keys)

    def publish_all(self) -> None:
        for alias, keys in self._aliases.items():
            self._publish(alias, keys)

    def _publish(self, alias: str, keys: tuple[str, ...]) -> None:
        open_ = sum(1 for k in keys if self._health.state(k) is State.OPEN)
        metrics.alias_targets(alias, len(keys), open_)
