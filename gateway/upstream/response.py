"""The one shape of an upstream response, whoever produced it (the HTTP transport, the echo model, a
wire-format translator): a status, headers, and a body read whole or piece by piece."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read_all(self, limit: int) -> bytes:
        """The whole body (error bodies, whole answers); more than `limit` bytes fails as malformed."""
        ...

    async def read_chunk(self, consume: Callable[[bytes], bool] | None = None) -> bytes:
        """Whatever bytes arrived next; b"" once the body has ended.

        `consume` may be offered the reads that arrive while this waits, each as it arrives (a plain
        call from the connection's own callback): a read it takes (True) is spent, and the wait goes
        on. A source may ignore it and return every read."""
        ...

    def set_read_timeout(self, seconds: float) -> None:
        """From now on, a wait longer than this for the next bytes fails as a stall."""
        ...

    def release(self) -> None:
        """The body was read to its end: the connection may be reused."""
        ...

    def close(self) -> None:
        """Drop the connection at once (which is what cancels the upstream's work)."""
        ...
