"""Watching a request's client: its leaving cancels the request's work at once (and with it the
upstream request), under the gateway's own server or any other ASGI server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message, Receive, Scope

from gateway.connections import DISCONNECT_HOOK
from gateway.drain import ShuttingDown, consume_cut


class ClientGone(Exception):
    """The client left before its answer was complete."""


class Watched:
    """Watches the request; the client's leaving cancels the work (and with it the upstream request),
    the moment it happens: a stream's slot (e.g. a concurrency limit) is given back at once.

    The gateway's own server (gateway/connections.py) calls a hook in the scope when the connection
    is lost mid-request, which costs nothing per request. Under another ASGI server, a listener task
    waits on receive() for the disconnect instead (a task per request, a tenth of the gateway's own
    CPU per request at moderate load when it was the only way). Once the last bytes are being sent
    (`finishing`), the end of the connection is no longer the client walking away.
    """

    __slots__ = ("_gone", "_hooked", "_receive", "_scope", "_task", "_watcher", "finishing")

    def __init__(self, scope: Scope, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._scope = scope
        self._receive = receive
        self._task = task  # the request's own task, which `work` runs in
        self._gone = False
        self._watcher: asyncio.Task[None] | None = None
        self.finishing = False
        self._hooked = DISCONNECT_HOOK in scope
        if self._hooked:
            scope[DISCONNECT_HOOK] = self._left
        else:
            self._watcher = task.get_loop().create_task(self._watch())

    def cancelled(self) -> None:
        """The request's task was cancelled: raise ClientGone if the client left, ShuttingDown at the
        drain deadline (an answer not yet started gets a 503; a stream cut while its client was not
        reading, the relay says so itself otherwise, loses its connection); else return (re-raise)."""
        if self._gone:
            self._task.uncancel()
            raise ClientGone from None
        if consume_cut():
            raise ShuttingDown from None

    def disarm(self) -> None:
        if self._hooked:
            self._scope[DISCONNECT_HOOK] = None
        if self._watcher is not None:
            self._watcher.cancel()

    def _left(self) -> None:
        task = self._task
        if not self.finishing and not self._gone and not task.done():
            self._gone = True
            task.cancel()

    async def _watch(self) -> None:
        while True:
            message: Message = await self._receive()
            if message["type"] == "http.disconnect":
                self._left()
                return
