"""Everything a request needs, built once from settings and catalog: endpoints, routes, keys, failover.

A config reload builds a new Runtime and swaps it in; requests in flight keep the one they started with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from gateway import metrics
from gateway.auth import Authenticator
from gateway.catalog.schema import Catalog
from gateway.config.schema import Settings
from gateway.failover.breaker import Breakers, State
from gateway.failover.run import Executor
from gateway.routing import Router
from gateway.upstream.endpoint import Endpoint, build_endpoint
from gateway.upstream.transport import Transport

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalog: Catalog
    endpoints: Mapping[str, Endpoint]
    router: Router
    auth: Authenticator
    breakers: Breakers
    executor: Executor

    @classmethod
    def build(
        cls, settings: Settings, catalog: Catalog, transport: Transport, environ: Mapping[str, str] | None = None
    ) -> Runtime:
        environ = os.environ if environ is None else environ
        endpoints = {
            pid: build_endpoint(provider, settings.providers.get(pid), environ)
            for pid, provider in catalog.providers.items()
        }
        router = Router(catalog, settings, endpoints)
        breakers = Breakers(settings.breaker, _on_circuit_change)
        executor = Executor(transport, breakers, router.latency)
        return cls(settings, catalog, endpoints, router, Authenticator(settings.auth), breakers, executor)

    @property
    def ready(self) -> bool:
        """At least one provider can be called."""
        return any(e.available for e in self.endpoints.values())


def _on_circuit_change(key: str, state: State) -> None:
    provider, _, model = key.partition("/")
    log.warning("circuit %s for %s", state.name.lower(), key)
    metrics.circuit_state(provider, model, int(state))
