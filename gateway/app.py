"""build_app(): the only place that wires everything together.

The chat endpoint is dispatched before Starlette's router (it is the hot path and a raw ASGI app);
every other route goes through Starlette. A reload (SIGHUP, or Gateway.reload) builds a new Runtime
from the config file and swaps it in only if it is valid; requests in flight finish on the old one.
Signals are handled in gateway/server.py, which calls reload() and drives `drain`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import __version__, metrics
from gateway.api import admin, errors, health, openwork, unserved
from gateway.api.chat import ChatProtocol, Pipeline
from gateway.api.embeddings import EmbeddingsProtocol
from gateway.api.messages import CountTokens, MessagesProtocol
from gateway.api.middleware import with_cors, with_request_id
from gateway.api.models import ModelsEndpoint
from gateway.api.responses import ResponsesProtocol
from gateway.catalog import load_catalog
from gateway.config import Settings, load_settings
from gateway.config.validate import check_against_catalog, check_bind
from gateway.drain import Drain
from gateway.errors import ConfigError, GatewayError
from gateway.failover.health import Clock, Health
from gateway.runtime import Runtime, RuntimeParts
from gateway.teams.service import Teams
from gateway.upstream.transport import Transport

if TYPE_CHECKING:  # imported when used: a gateway without Redis never loads redis-py
    from gateway.failover.shared import HealthSync

_YOUNG_COLLECTION_EVERY = 20_000  # allocations of GC-tracked objects (not freed since) between young collections

log = logging.getLogger("gateway")

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MESSAGES_PATH = "/v1/messages"


class Gateway:
    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None, *,
                 clock: Clock = time.monotonic, bind_host: str | None = None) -> None:
        self._environ = environ
        # The address served: a reload must pass the same bind check as the start did.
        self.bind_host = bind_host or settings.server.host
        self.transport = Transport()
        self.drain = Drain()
        self.teams = Teams(settings.state, workers=settings.server.workers)
        # Circuits and latencies are about the upstreams, not the config: they outlive a reload.
        self.health = Health(settings.breaker, clock)
        self.runtime = self._prepare(settings).assemble(self.transport, self.health, self.teams)
        self._reloading = asyncio.Lock()
        self._reload_tasks: set[asyncio.Task[bool]] = set()
        self._chat = Pipeline(self.current, ChatProtocol(), self.drain)
        self._embeddings = Pipeline(self.current, EmbeddingsProtocol(), self.drain)
        self._messages = Pipeline(self.current, MessagesProtocol(), self.drain)
        self._responses = Pipeline(self.current, ResponsesProtocol(), self.drain)
        models = ModelsEndpoint()
        handlers = {HTTPException: errors.http_exception, GatewayError: errors.gateway_error,
                    Exception: errors.unexpected}
        metrics_route = Route("/metrics", _metrics, methods=["GET"])
        # With `server.metrics_listen`, /metrics is served on that port alone and nowhere else.
        address = settings.server.metrics_address
        self._metrics_port = address[1] if address else None
        self._metrics_only = Starlette(routes=[metrics_route], exception_handlers=handlers)
        self._starlette = Starlette(
            routes=[
                Route("/v1/models", models.handle, methods=["GET"]),
                Route("/v1/models/{model_id:path}", models.handle_one, methods=["GET"]),
                Route("/v1/messages/count_tokens", CountTokens(self.transport).handle, methods=["POST"]),
                Route("/livez", health.livez, methods=["GET"]),
                Route("/readyz", health.readyz, methods=["GET"]),
                *([] if self._metrics_port else [metrics_route]),
                Route("/openwork/provider.json", openwork.provider_json, methods=["GET"]),
                *admin.routes(),
            ],
            exception_handlers=handlers,
            lifespan=self._lifespan,
        )
        for app in (self._starlette, self._metrics_only):
            app.state.runtime = self.current
            app.state.health = self.health
            app.state.drain = self.drain
        metrics.set_build_info(__version__)
        metrics.config_loaded(True, reload=False)
        # Inside the request id (see __call__): CORS headers when origins are set.
        self._app = with_cors(self._dispatch, settings.server.cors_origins)

    def current(self) -> Runtime:
        return self.runtime

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The ASGI entry: every HTTP answer gets its x-request-id, then the endpoint runs. A plain function
        that hands back the endpoint's awaitable (uvicorn_config declares the app ASGI3), so the request
        has no coroutine layer of its own here, one paid again on every resume."""
        if scope["type"] == "http":
            send = with_request_id(scope, send)
        return self._app(scope, receive, send)

    def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The endpoint's awaitable (not a coroutine layer of its own: one paid again on every resume)."""
        if self._metrics_port is not None and scope["type"] == "http" and scope["server"][1] == self._metrics_port:
            return self._metrics_only(scope, receive, send)
        if scope["type"] == "http":
            path = scope["path"]
            if path == CHAT_PATH:
                return self._chat(scope, receive, send)
            if path == EMBEDDINGS_PATH:
                return self._embeddings(scope, receive, send)
            if path == MESSAGES_PATH:
                return self._messages(scope, receive, send)
            if path == unserved.RESPONSES_PATH:
                if scope["method"] == "GET":
                    return unserved.responses_get(scope, receive, send)
                return self._responses(scope, receive, send)
        elif scope["type"] == "websocket":
            return unserved.websocket(scope, receive, send)
        return self._starlette(scope, receive, send)

    def _prepare(self, settings: Settings) -> RuntimeParts:
        """Everything a start or a reload checks and builds before anything is swapped: the same for both."""
        catalog = load_catalog(settings.catalog)
        check_against_catalog(settings, catalog)
        check_bind(settings, self.bind_host)
        return RuntimeParts.prepare(settings, catalog, self.health, self._environ)

    def _load(self, source: str) -> RuntimeParts:
        return self._prepare(load_settings(source, self._environ))

    def reload(self) -> bool:
        """Re-read the config file now, on this thread; keep the running config if the new one is refused."""
        try:
            parts = self._load(self.runtime.settings.source)
        except ConfigError as exc:
            return self._refused(exc)
        self._swap(parts)
        return True

    async def reload_async(self) -> bool:
        """A reload that keeps the event loop free: reading, fetching and building happen in a thread,
        only the swap on the loop. Reloads asked for while one runs wait for it (each reads the file anew)."""
        async with self._reloading:
            try:
                parts = await asyncio.to_thread(self._load, self.runtime.settings.source)
            except ConfigError as exc:
                return self._refused(exc)
            self._swap(parts)
            return True

    def request_reload(self) -> None:
        """For a signal handler on the loop: start reload_async and return at once."""
        task = asyncio.get_running_loop().create_task(self.reload_async())
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    def _refused(self, exc: ConfigError) -> bool:
        log.error("config reload refused, keeping the running config:\n%s", exc)
        metrics.config_loaded(False, reload=True)
        return False

    def _swap(self, parts: RuntimeParts) -> None:
        old = self.runtime
        settings = parts.settings
        if settings.state != old.settings.state:
            log.warning("state.* changed in %s: the state store changes at the next restart", settings.source)
        if settings.server != old.settings.server:
            log.warning("server.* changed in %s: address, workers and connection limits change at the next "
                        "restart", settings.source)
        self.runtime = parts.assemble(self.transport, self.health, self.teams)
        _forget_removed(old, self.runtime)
        log.warning("config reloaded from %s", settings.source)
        metrics.config_loaded(True, reload=True)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.transport.start()
        await self.teams.start()
        sharing = self._share_health()
        # The catalog and routes are thousands of long-lived objects: keep the cyclic GC from walking
        # them again and again under load.
        gc.freeze()
        # Under load the live objects are the requests in flight (a streamed one's connection, reader,
        # tasks and timers live for its whole length): every young collection walks those it finds new,
        # and at the default 700 allocations collecting was ~3% of a paced stream's CPU at 256 in flight
        # (perf), finding no garbage: a request leaves none (tests/upstream: no cycle per answer).
        gc.set_threshold(_YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
        self.health.start_timer(asyncio.get_running_loop())
        try:
            yield
        finally:
            # The server waited for the requests in flight (or the drain ended them): now the flush
            # hooks run, then the last settlements and ledger rows are written, before exit.
            await self.drain.flush()
            if sharing is not None:
                await sharing.stop()
            await self.teams.stop()
            self.health.stop_timer()
            await self.transport.close()
            metrics.worker_exit()


    def _share_health(self) -> HealthSync | None:
        """With Redis (`state.backend: redis`) the replicas share circuits and latencies over the
        counters' connection, in a background task; otherwise they stay this process's own."""
        if self.runtime.settings.state.backend == "sqlite":
            return None
        from gateway.failover.shared import HealthSync, connection_of

        sharing = HealthSync(self.health, connection_of(self.teams.store))
        sharing.start()
        return sharing


def _forget_removed(old: Runtime, new: Runtime) -> None:
    """Gauges of aliases and targets the new config no longer has would otherwise read on for ever."""
    for name, route in old.router.routes.items():
        if route.is_alias and not (name in new.router.routes and new.router.routes[name].is_alias):
            metrics.forget_alias(name)
    kept = {t.key for r in new.router.routes.values() for t in (*r.targets, *r.fallbacks)}
    for route in old.router.routes.values():
        for target in (*route.targets, *route.fallbacks):
            if target.key not in kept:
                metrics.forget_target(target.provider_id, target.upstream_model)


async def _metrics(request: Request) -> Response:
    request.app.state.health.tick()
    body, content_type = metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def build_app(settings: Settings, environ: Mapping[str, str] | None = None, *,
              clock: Clock = time.monotonic, bind_host: str | None = None) -> Gateway:
    return Gateway(settings, environ, clock=clock, bind_host=bind_host)
