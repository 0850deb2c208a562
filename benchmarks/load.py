"""Load generators: wrk for closed-loop throughput, small asyncio clients for what wrk cannot do
(an open-loop fixed rate measured from the scheduled send time, and streams with time to first token).

Every load here is bounded: by a duration, by a request count, or both, and every request by a timeout.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
import orjson

from benchmarks.procs import Meter

_TIMEOUT = aiohttp.ClientTimeout(total=60)


Wire = Literal["openai", "anthropic", "responses", "embeddings"]
_PROMPT = "Say hello to the benchmark."


@dataclass(frozen=True)
class Target:
    """One thing to send load to: a name for the table, the URL, the model id it wants, its wire format."""

    name: str
    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    wire: Wire = "openai"

    def body(self, *, stream: bool = False, chunks: int = 50, interval_ms: float = 0) -> bytes:
        payload: dict[str, object]
        if self.wire == "embeddings":
            return orjson.dumps({"model": self.model, "input": _PROMPT})
        if self.wire == "anthropic":
            payload = {"model": self.model, "max_tokens": 256, "messages": [{"role": "user", "content": _PROMPT}]}
        elif self.wire == "responses":
            payload = {"model": self.model, "input": _PROMPT}
        else:
            payload = {"model": self.model, "messages": [{"role": "user", "content": _PROMPT}]}
        if stream:
            payload["stream"] = True
            if self.wire == "openai":
                # include_usage on direct calls too: the gateway forces it upstream, so both ask for the same work.
                payload["stream_options"] = {"include_usage": True}
            if self.wire == "anthropic":
                # /v1/messages refuses fields it cannot translate to chat: carry the knobs in a real field
                # (metadata.user_id becomes chat's `user`, which the fake upstream reads them from).
                payload["metadata"] = {"user_id": f"bench:{chunks}:{interval_ms:g}"}
            elif self.wire == "responses":
                payload["user"] = f"bench:{chunks}:{interval_ms:g}"  # /v1/responses passes `user` to chat too
            else:
                payload |= {"bench_chunks": chunks, "bench_interval_ms": interval_ms}
        return orjson.dumps(payload)

    def request_headers(self) -> dict[str, str]:
        return {"content-type": "application/json", **self.headers}


@dataclass(frozen=True)
class Throughput:
    requests: int  # answered with 200
    seconds: float
    errors: int  # other statuses, socket errors, timeouts

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _lua(target: Target, bodies: list[bytes]) -> str:
    headers = ", ".join(f'["{k}"] = "{v}"' for k, v in target.request_headers().items())
    if len(bodies) == 1:  # a static request: wrk's cheapest path
        return (f'wrk.method = "POST"\nwrk.body = [==[{bodies[0].decode()}]==]\n'
                + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in target.request_headers().items()))
    formatted = "\n".join(f'  requests[{i + 1}] = wrk.format("POST", nil, headers, [==[{b.decode()}]==])'
                          for i, b in enumerate(bodies))
    return (f"local requests = {{}}\nlocal i = 0\nfunction init(args)\n  local headers = {{{headers}}}\n"
            f"{formatted}\nend\nfunction request()\n  i = i % #requests + 1\n  return requests[i]\nend\n")


_DONE = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def run_wrk(target: Target, connections: int, seconds: float, bodies: list[bytes] | None = None) -> Throughput:
    """wrk, one thread (the load has one core), POST bodies from a Lua script (cycled if several)."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as directory:
        script = Path(directory) / "post.lua"
        script.write_text(_lua(target, bodies or [target.body()]))
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
             "-s", str(script), target.url],
            capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    done = _DONE.search(out)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    non_2xx = _NON_2XX.search(out)
    socket = _SOCKET.search(out)
    failed = int(non_2xx.group(1)) if non_2xx else 0  # wrk counts these among its requests
    errors = failed + (sum(map(int, socket.groups())) if socket else 0)
    return Throughput(int(done.group(1)) - failed, float(done.group(2)) * scale, errors)


async def closed_loop(target: Target, connections: int, seconds: float, bodies: list[bytes] | None = None,
                      max_requests: int | None = None) -> Throughput:
    """What wrk does, without wrk: `connections` clients sending back to back (slower: aiohttp's own cost)."""
    cycle = bodies or [target.body()]
    headers = target.request_headers()
    done = errors = sent = 0
    stop = time.perf_counter() + seconds
    limit = max_requests if max_requests is not None else math.inf
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
        async def client() -> None:
            nonlocal done, errors, sent
            while time.perf_counter() < stop and sent < limit:
                sent += 1
                try:
                    async with session.post(target.url, data=cycle[sent % len(cycle)], headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                done += ok
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        return Throughput(done, time.perf_counter() - started, errors)


@dataclass(frozen=True)
class Latencies:
    seconds: list[float]  # one per successful request, from its scheduled send time to its last byte
    errors: int
    late_sends: int  # sends the client itself started more than 1 ms after their schedule


async def open_loop(target: Target, rate: float, seconds: float, meter: Meter | None = None) -> Latencies:
    """Send at a fixed rate whatever the answers do; latency counts from the *scheduled* send time,
    so a server that falls behind is charged for the queue it causes (no coordinated omission).
    `meter` is started at the first scheduled send and stopped when the last answer is in: the CPU it
    reads is the scheduled requests', not the pool's warm-up or the session's teardown."""
    body = target.body()
    headers = target.request_headers()
    latencies: list[float] = []
    errors = late = 0
    clock = time.perf_counter  # not loop.time(): uvloop's clock ticks in whole milliseconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
        async def one(scheduled: float, record: bool = True) -> None:
            nonlocal errors
            try:
                async with session.post(target.url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if record and ok:
                latencies.append(clock() - scheduled)
            errors += record and not ok

        # Warm the pool so the first scheduled sends do not pay for connecting.
        await asyncio.gather(*(one(clock(), record=False) for _ in range(8)))
        tasks = []
        start = clock() + 0.02
        if meter is not None:
            meter.start()
        for i in range(max(1, int(rate * seconds))):
            scheduled = start + i / rate
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.001:
                late += 1
            tasks.append(asyncio.ensure_future(one(scheduled)))
        await asyncio.gather(*tasks)
        if meter is not None:
            meter.stop()
    return Latencies(latencies, errors, late)


@dataclass(frozen=True)
class StreamStats:
    streams: int  # complete (every content chunk, the usage chunk, [DONE]) and ended inside the window
    chunks: int  # content chunks of the streams that ended inside the window, complete or not
    seconds: float  # the window
    ttft: list[float]  # per complete stream started inside the window: send to first non-empty content delta
    incomplete: int
    gaps: list[float] = field(default_factory=list)  # per complete stream: longest wait between content chunks
    served: int = 0  # every stream completed, in the window or not

    @property
    def streams_per_second(self) -> float:
        return self.streams / self.seconds if self.seconds else 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


def _openai_content(event: bytes) -> bool:
    """An SSE event carrying a non-empty content delta (JSON-parsed, so spacing cannot fool it)."""
    try:
        payload = orjson.loads(event[5:])
        return bool(payload["choices"][0]["delta"].get("content"))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return False


def _data(event: bytes) -> dict[str, object] | None:
    """The JSON of an event's `data:` line (events may carry an `event:` line first)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                payload = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
            return payload if isinstance(payload, dict) else None
    return None


def classify(wire: Wire, event: bytes) -> str:
    """What one SSE event is, for the stream client: "content", "usage", "done", "usage+done" or ""."""
    if wire == "anthropic":
        if b"message_stop" in event:
            return "done"
        payload = _data(event) if b"delta" in event or b"usage" in event else None
        if payload is None:
            return ""
        if payload.get("type") == "content_block_delta":
            delta = payload.get("delta")
            return "content" if isinstance(delta, dict) and delta.get("text") else ""
        return "usage" if payload.get("type") == "message_delta" and isinstance(payload.get("usage"), dict) else ""
    if wire == "responses":
        if b"response.output_text.delta" in event:
            payload = _data(event)
            return "content" if payload and payload.get("delta") else ""
        if b"response.completed" in event:
            payload = _data(event)
            response = payload.get("response") if payload else None
            usage = isinstance(response, dict) and isinstance(response.get("usage"), dict)
            return "usage+done" if usage else "done"
        return ""
    if event.startswith(b"data: [DONE]"):
        return "done"
    if b'"usage"' in event:  # OpenAI sends it with empty `choices`; LiteLLM with an empty delta
        payload = _data(event)
        if payload is not None and isinstance(payload.get("usage"), dict):
            return "usage"
    return "content" if _openai_content(event) else ""


async def streams(target: Target, concurrency: int, seconds: float, chunks: int, interval_ms: float,
                  max_streams: int | None = None, *, at_least: bool = False, gap_at: int | None = None,
                  settle: float = 0.0, meter: Meter | None = None) -> StreamStats:
    """`concurrency` clients streaming back to back; counts what completes in a `seconds` window.

    Paced streams start staggered over one stream's duration, as independent users would, rather
    than all at once: in lock-step, 256 simultaneous restarts every second would measure the burst
    (and this client's own cost of sending 256 requests at once), not the steady state. The window
    opens once every client has started (and `settle` seconds more, for the last ones' connections),
    so the ramp is not counted; `meter` is started when it opens and stopped when it closes, so the
    CPU it reads is the steady state's, without the clients' connection set-up and teardown (which
    would weigh more the shorter the window). A stream is complete when it
    ended cleanly with usage and exactly `chunks` content chunks (`at_least`: that many or more, for
    streams continued after a cut, which repeat what the client already had or not). `gaps` holds
    each complete stream's longest wait between content chunks, or with `gap_at` the wait before
    content chunk number `gap_at` (the one after a cut).
    """
    body = target.body(stream=True, chunks=chunks, interval_ms=interval_ms)
    headers = target.request_headers()
    incomplete = started_streams = 0
    endings: list[tuple[float, int]] = []  # (end, content chunks) of every stream
    finished: list[tuple[float, float]] = []  # (start, end) of each complete stream
    ttft: list[tuple[float, float]] = []  # (start, ttft)
    gaps: list[tuple[float, float]] = []  # (start, longest wait between content chunks)
    wire = target.wire
    ramp = chunks * interval_ms / 1000
    begun = time.perf_counter()
    opens, closes = begun + ramp + settle, begun + ramp + settle + seconds
    counted = [opens, closes]  # the window as metered: the meter's own start and stop, when late
    limit = max_streams if max_streams is not None else math.inf
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
        async def client(offset: float) -> None:
            nonlocal incomplete, started_streams
            await asyncio.sleep(offset)
            while time.perf_counter() < closes and started_streams < limit:
                started_streams += 1
                sent = time.perf_counter()
                first: float | None = None
                last = gap = 0.0
                content = 0
                usage = done = False
                try:
                    async with session.post(target.url, data=body, headers=headers) as response:
                        # Whole reads split into events: far cheaper than aiohttp's line iterator, so the
                        # client (sharing a core with the upstream) does not become the bottleneck.
                        pending = b""
                        async for data in response.content.iter_any():
                            events = (pending + data).split(b"\n\n")
                            pending = events.pop()
                            for event in events:
                                kind = classify(wire, event)
                                if kind == "content":
                                    content += 1
                                    now = time.perf_counter()
                                    if first is None:
                                        first = now - sent
                                    elif gap_at is None:
                                        gap = max(gap, now - last)
                                    elif content == gap_at:
                                        gap = now - last
                                    last = now
                                elif kind:
                                    usage = usage or kind.startswith("usage")
                                    done = done or kind.endswith("done")
                except (aiohttp.ClientError, TimeoutError):
                    done = False
                ended = time.perf_counter()
                endings.append((ended, content))
                enough = content >= chunks if at_least else content == chunks
                if done and usage and enough and first is not None:
                    finished.append((sent, ended))
                    ttft.append((sent, first))
                    gaps.append((sent, gap))
                else:
                    incomplete += 1

        async def window(meter: Meter) -> None:
            await asyncio.sleep(max(0.0, opens - time.perf_counter()))
            meter.start()
            counted[0] = time.perf_counter()
            await asyncio.sleep(max(0.0, closes - time.perf_counter()))
            counted[1] = time.perf_counter()
            meter.stop()

        metering = [window(meter)] if meter is not None else []
        await asyncio.gather(*(client(i / concurrency * ramp) for i in range(concurrency)), *metering)
    low, high = counted  # a busy runner may wake the meter a little late: count what it metered
    in_window = sum(1 for _, end in finished if low <= end <= high)
    received = sum(content for end, content in endings if low <= end <= high)
    return StreamStats(in_window, received, high - low, [t for start, t in ttft if start >= opens], incomplete,
                       [g for start, g in gaps if start >= opens], len(finished))
