"""Instructions per request, counted by valgrind's callgrind: a measure that does not move with
the machine's load, for deciding between two versions of the hot path on a shared machine.

    python -m benchmarks.instructions                         # gateway, whole answers
    python -m benchmarks.instructions --target bare --stream  # the bare proxy, 50-chunk streams
    python -m benchmarks.instructions --stream --interval 20  # streams paced 20 ms a chunk (60 requests)
    python -m benchmarks.instructions --cprofile calls.txt    # instead: Python calls per request
    python -m benchmarks.instructions --feature 'limits + budgets (embedded store)'  # a feature row's gateway
    python -m benchmarks.instructions --idle 5                # instructions per second of an idle proxy
    python -m benchmarks.instructions --stream --concurrency 256 --requests 1024  # 256 streams in flight

The proxy runs under callgrind; after a warm-up the counters are zeroed, `--requests` requests are
sent one at a time (no queue: the moderate-load case, where nothing amortises across requests),
the counters are dumped and their total is divided by the count.
Everything the process executes counts: Python, uvloop/libuv, aiohttp's C parts, libc; the
kernel does not. Under valgrind the process runs ~50x slower, so keep `--requests` in the
hundreds. `--interval MS` paces a stream's chunks as the paced load does (the fake upstream
writes each chunk on its own after MS ms), so the proxy reads and sends every chunk on its own:
the per-chunk cost of a real model's stream, where the unpaced stream (all chunks in one upstream
write) arrives in one or a few reads. The interval must stay well above the proxy's time per chunk
under valgrind (~2 ms), or chunks queue and coalesce; 20 ms (the full run's) does.
`--idle SECONDS` counts no requests: after the warm-up requests and a second to settle, the
counters are zeroed, the proxy is left alone for SECONDS of wall time and the total is divided by
them: the background work an idle replica pays all the time (timers, polls, flush loops, the
server's own tick).
`--cprofile` runs the proxy under cProfile instead and prints the functions called per request
(call counts are exact; the times cProfile shows are not used).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.configs import ALIAS, GATEWAY_KEY, write_gateway_config
from benchmarks.features import FEATURES, Feature
from benchmarks.load import Target
from benchmarks.procs import Service, free_port


def _command(target: str, work: Path, api: str, port: int, feature: Feature | None = None) -> tuple[list[str], Target]:
    if target == "gateway":
        # A feature row's gateway (its config laid over the plain one) is sent the plain requests, so
        # the two counts differ by what the feature adds per request; a translation row's gateway is
        # sent the same request in its own protocol (/v1/messages, /v1/responses).
        config = write_gateway_config(work, api, port, feature.config if feature else None)
        path, wire = (feature.path, feature.wire) if feature else ("/v1/chat/completions", "openai")
        return ([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                Target("gateway", f"http://127.0.0.1:{port}{path}", ALIAS,
                       {"Authorization": f"Bearer {GATEWAY_KEY}"}, wire))
    module = {"bare": "benchmarks.bare_proxy", "raw": "benchmarks.raw_asgi_proxy"}[target]
    return ([sys.executable, "-m", module, "--port", str(port), "--upstream", f"{api}/chat/completions"],
            Target(target, f"http://127.0.0.1:{port}/v1/chat/completions", "fast"))


async def _send(target: Target, count: int, stream: bool, interval_ms: float = 0, concurrency: int = 1) -> None:
    """`count` requests from `concurrency` clients, each sending its share one after another."""
    body = target.body(stream=stream, chunks=50, interval_ms=interval_ms)

    async def client(session: aiohttp.ClientSession, share: int) -> None:
        for _ in range(share):
            async with session.post(target.url, data=body, headers=target.request_headers()) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{target.name} answered {response.status}")

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(client(session, share) for share in shares))


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def count(target: str, requests: int, stream: bool, warmup: int, feature: Feature | None = None,
          interval_ms: float = 0, keep: Path | None = None, idle_seconds: float = 0, concurrency: int = 1) -> float:
    """Instructions per request; with idle_seconds, per idle second instead (no requests counted)."""
    with tempfile.TemporaryDirectory(prefix="gateway-instr-") as directory:
        work = Path(directory)
        env = {**os.environ, "BENCH_UPSTREAM_KEY": "bench-upstream-key", "BENCH_GATEWAY_KEY": GATEWAY_KEY,
               "PYTHONHASHSEED": "0"}
        upstream_port, port = free_port(), free_port()
        upstream = Service("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)],
                           core=None, log=work / "upstream.log")
        out = work / "callgrind.out"
        command, load = _command(target, work, f"http://127.0.0.1:{upstream_port}/v1", port, feature)
        proxy = Service(target, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
                        core=None, log=work / "proxy.log", env=env)
        try:
            upstream.wait_ready(f"http://127.0.0.1:{upstream_port}/readyz")
            proxy.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=600)
            asyncio.run(_send(load, warmup, stream, interval_ms, concurrency))
            if idle_seconds:
                time.sleep(1.0)  # the warm-up's last ledger batch and answers settle before the count
            # callgrind acts on a control request at some moment during the call: the midpoints of the
            # two calls bound the counted wall time best
            before = time.monotonic()
            _control(proxy.pid, "--zero")
            started = (before + time.monotonic()) / 2
            if idle_seconds:
                time.sleep(idle_seconds)
            else:
                asyncio.run(_send(load, requests, stream, interval_ms, concurrency))
            before = time.monotonic()
            _control(proxy.pid, "--dump")
            elapsed = (before + time.monotonic()) / 2 - started
            dumps = [d for d in work.glob("callgrind.out.*") if d.suffix[1:].isdigit()]
            if len(dumps) != 1:
                raise RuntimeError(f"expected one callgrind dump, found {[d.name for d in dumps]}")
            match = re.search(r"^(?:summary|totals): (\d+)", dumps[0].read_text(errors="replace"), re.M)
            if match is None:
                raise RuntimeError(f"no total in {dumps[0].name}")
            if keep is not None:
                shutil.copyfile(dumps[0], keep)
            return int(match.group(1)) / (elapsed if idle_seconds else requests)
        finally:
            proxy.stop()
            upstream.stop()


def calls(target: str, requests: int, stream: bool, warmup: int, top: int, feature: Feature | None = None,
          interval_ms: float = 0) -> str:
    """cProfile call counts per request: which functions (and how many timers, tasks) each request costs."""
    with tempfile.TemporaryDirectory(prefix="gateway-calls-") as directory:
        work = Path(directory)
        env = {**os.environ, "BENCH_UPSTREAM_KEY": "bench-upstream-key", "BENCH_GATEWAY_KEY": GATEWAY_KEY}
        upstream_port, port = free_port(), free_port()
        upstream = Service("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)],
                           core=None, log=work / "upstream.log")
        command, load = _command(target, work, f"http://127.0.0.1:{upstream_port}/v1", port, feature)
        runs: list[pstats.Stats] = []
        try:
            upstream.wait_ready(f"http://127.0.0.1:{upstream_port}/readyz")
            for n in (warmup, warmup + requests):  # the difference of two runs is the per-request part
                prof = work / f"calls-{n}.prof"
                profiled = [command[0], "-m", "cProfile", "-o", str(prof), *command[1:]]
                proxy = Service(target, profiled, core=None, log=work / "proxy.log", env=env)
                try:
                    proxy.wait_ready(f"http://127.0.0.1:{port}/readyz")
                    asyncio.run(_send(load, n, stream, interval_ms))
                    # SIGINT: uvicorn shuts down, then re-raises it as KeyboardInterrupt, and cProfile
                    # writes its file on the way out (after SIGTERM the default handler kills it first).
                    proxy.popen.send_signal(signal.SIGINT)
                    proxy.popen.wait(timeout=60)
                finally:
                    proxy.stop()
                runs.append(pstats.Stats(str(prof)))
        finally:
            upstream.stop()
        base, more = (run.stats for run in runs)  # type: ignore[attr-defined]
        per: dict[str, float] = {}
        for key, (_, ncalls, *_rest) in more.items():
            extra = ncalls - (base[key][1] if key in base else 0)
            if extra > 0:
                per[f"{key[2]} ({Path(key[0]).name}:{key[1]})"] = extra / requests
        lines = [f"{n:8.2f}  {name}" for name, n in sorted(per.items(), key=lambda kv: -kv[1])[:top]]
        return f"Python calls per request ({target}, {_what(stream, interval_ms)}):\n" + \
            "\n".join(lines)


def _what(stream: bool, interval_ms: float) -> str:
    if not stream:
        return "whole answer"
    return f"50-chunk stream, {interval_ms:g} ms apart" if interval_ms else "50-chunk stream (unpaced)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("gateway", "bare", "raw"), default="gateway")
    parser.add_argument("--requests", type=int, help="default 300; 60 with --interval (a second per stream)")
    parser.add_argument("--warmup", type=int, help="default 50; 10 with --interval")
    parser.add_argument("--stream", action="store_true", help="50-chunk streams instead of whole answers")
    parser.add_argument("--interval", type=float, default=0.0, metavar="MS",
                        help="with --stream: the upstream sends each chunk MS ms after the last (default 0: "
                             "all in one write)")
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="instead of requests: instructions per second of the proxy left idle for SECONDS "
                             "(after the warm-up)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="N clients at once, each sending its share of the requests one after another "
                             "(default 1: no queue, nothing in flight beside the one request)")
    parser.add_argument("--cprofile", type=Path, help="write Python call counts per request here instead")
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--keep", type=Path, metavar="FILE",
                        help="copy callgrind's dump here (read it with callgrind_annotate --inclusive=yes)")
    parser.add_argument("--feature", choices=[f.name for f in FEATURES if f.wire != "embeddings" and not f.services],
                        help="the gateway of this feature row (no extra service) instead of the plain one")
    args = parser.parse_args()
    feature = next((f for f in FEATURES if f.name == args.feature), None)
    if args.interval < 0 or (args.interval and not args.stream):
        parser.error("--interval takes a number of milliseconds >= 0, with --stream")
    paced = args.interval > 0
    requests = args.requests if args.requests is not None else (60 if paced else 300)
    warmup = args.warmup if args.warmup is not None else (10 if paced else 50)
    if args.idle < 0 or (args.idle and (args.stream or args.cprofile or args.requests is not None)):
        parser.error("--idle takes a number of seconds > 0, without --stream, --requests or --cprofile")
    if args.concurrency < 1 or (args.concurrency > 1 and (args.idle or args.cprofile)):
        parser.error("--concurrency takes a number >= 1, without --idle or --cprofile")
    if feature is not None and args.target != "gateway":
        parser.error("--feature applies to --target gateway")
    if args.cprofile:
        report = calls(args.target, requests, args.stream, warmup, args.top, feature, args.interval)
        args.cprofile.write_text(report + "\n")
        print(report)
        return 0
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind (apt-get install valgrind)")
    per = count(args.target, requests, args.stream, warmup, feature, args.interval, args.keep, args.idle,
                args.concurrency)
    what = f"{args.target}{f' ({feature.name})' if feature else ''}"
    if args.idle:
        print(f"{what}, idle: {per:,.0f} instructions per second (over {args.idle:g} s after {warmup} warm-up "
              "requests)")
        return 0
    clients = f", {args.concurrency} clients at once" if args.concurrency > 1 else ""
    print(f"{what}, {_what(args.stream, args.interval)}: "
          f"{per:,.0f} instructions per request ({requests} requests after {warmup} warm-up{clients})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
