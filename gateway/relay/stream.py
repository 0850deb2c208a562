"""Relay an opened upstream stream to the client, bytes as they arrive.

The events read before the stream was committed are replayed first. Each event is passed through
as the exact bytes the upstream sent, except the usage-only chunk, which is kept for accounting and
dropped when the client did not ask for usage. A stream that breaks, stalls or turns malformed
after content was sent ends with an SSE `error` event and no `[DONE]`, so no client mistakes it for
a complete answer. One that ends cleanly without `[DONE]` after its finish is completed at once.
Every byte from the upstream passes the provider's Secrets on its way out, error events included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.errors import StreamCut, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from gateway.relay.sse import DONE, DONE_EVENT, EventSplitter, error_event, event_data
from gateway.upstream.secrets import Secrets


class ChunkSource(Protocol):
    async def read_chunk(self) -> bytes: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class RelayResult:
    usage: dict[str, Any] | None = None
    chunks: int = 0
    finished: bool = False
    completed: bool = False
    error_type: str | None = None
    first_write_at: float | None = None


class _Malformed(Exception):
    pass


class EventProcessor(Protocol):
    def __call__(self, events: list[bytes], out: list[bytes], result: RelayResult, wants_usage: bool,
                 secrets: Secrets) -> bool:
        """Append what the client should get to `out`; True once the upstream's stream is complete."""


async def relay(
    source: ChunkSource,
    splitter: EventSplitter,
    held: list[bytes],
    *,
    wants_usage: bool,
    expires: float,
    idle: float,
    result: RelayResult,
    secrets: Secrets,
    process: EventProcessor | None = None,
    failure: Callable[[dict[str, Any]], bytes] = error_event,
) -> AsyncGenerator[bytes, None]:
    """`process` reads the upstream's events (default: chat chunks); `failure` writes the event that ends
    a broken stream from an OpenAI error body (default: an SSE `error` event)."""
    process = process or _process
    clean = False
    try:
        pending = held
        while True:
            out: list[bytes] = []
            try:
                done = process(pending, out, result, wants_usage, secrets)
            except (_Malformed, UpstreamProtocolError) as exc:
                if out:
                    yield b"".join(out)  # what came before the bad chunk is still the client's
                result.error_type = "malformed"
                yield failure({"error": {"message": secrets.mask_text(str(exc)), "type": "upstream_error",
                                             "code": "upstream_malformed", "param": None}})
                return
            if out:
                if result.first_write_at is None:
                    result.first_write_at = time.monotonic()
                yield b"".join(out)
            if done:
                result.completed = True
                clean = True
                return
            try:
                data = await _read(source, expires, idle)
            except UpstreamError as error:
                if result.finished:
                    # Complete apart from the closing marker: finish it for the client now.
                    result.completed = True
                    yield DONE_EVENT
                    return
                result.error_type = error.error_type
                error.mask(secrets.mask)
                yield failure(error.to_body())
                return
            if not data:
                try:
                    splitter.end()
                except UpstreamError as error:  # it ended inside an event over the size limit
                    result.error_type = error.error_type
                    yield error_event(error.to_body())
                    return
                if result.finished:
                    result.completed = True
                    clean = True
                    yield DONE_EVENT
                    return
                cut = StreamCut("the upstream stream ended before the answer was complete")
                result.error_type = cut.error_type
                yield failure(cut.to_body())
                return
            try:
                pending = splitter.feed(data)
            except UpstreamError as error:  # an event over the size limit
                result.error_type = error.error_type
                yield error_event(error.to_body())
                return
    finally:
        # Reused only when the body was read to its end; otherwise (client gone, upstream broken)
        # the connection is dropped at once, which is what cancels the upstream's work.
        if clean:
            source.release()
        else:
            source.close()


def _process(events: list[bytes], out: list[bytes], result: RelayResult, wants_usage: bool, secrets: Secrets) -> bool:
    """Append what the client should get to `out`; True once the upstream's [DONE] arrived."""
    for event in events:
        data = event_data(event)
        if data is None:
            out.append(secrets.mask_bytes(event) + b"\n\n")  # comments and keep-alives pass through
            continue
        if data == DONE:
            out.append(DONE_EVENT)
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _Malformed("the upstream sent a malformed stream chunk after the answer had started") from None
        if not isinstance(chunk, dict):
            raise _Malformed("the upstream sent a stream chunk that is not an object")
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise _Malformed(f"the upstream reported an error mid-stream: {message}")
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if usage:
            result.usage = usage
        if choices:
            for choice in choices:
                if choice.get("finish_reason"):
                    result.finished = True
        elif usage and not wants_usage:
            continue  # the usage-only chunk the gateway asked for on its own account
        result.chunks += 1
        out.append(secrets.mask_bytes(event) + b"\n\n")
    return False


async def _read(source: ChunkSource, expires: float, idle: float) -> bytes:
    remaining = expires - time.monotonic()
    if remaining > idle:
        return await source.read_chunk()  # the transport's idle timeout fires first
    # Near the deadline, bound the read by it.
    try:
        async with asyncio.timeout(max(0.0, remaining)):
            return await source.read_chunk()
    except TimeoutError:
        raise UpstreamTimeout("the request deadline ran out mid-stream", phase="deadline") from None
