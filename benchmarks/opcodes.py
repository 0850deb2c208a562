"""Python bytecodes per request, by function: where the interpreter's work goes, exactly.

    python -m benchmarks.opcodes                    # the gateway, whole answers
    python -m benchmarks.opcodes --stream --top 30  # 50-chunk streams
    python -m benchmarks.opcodes --stream --interval 20 --requests 20  # chunks paced 20 ms apart
    python -m benchmarks.opcodes --target raw       # the raw-ASGI proxy, for comparison
    python -m benchmarks.opcodes --feature 'limits + budgets (embedded store)'  # a feature row's gateway

The proxy runs under a tracer (`benchmarks/_optrace.py`: sys.settrace with per-opcode events)
that counts nothing until SIGUSR1; then `--requests` requests are sent one at a time, SIGUSR2
writes the counts, and they are printed per request: total, by package, and the top functions.
Opcode counts do not depend on the machine's load; C code (orjson, uvloop, hashlib) counts as
the one opcode that calls it, so read them beside `benchmarks.instructions`, which counts it all.
Tracing makes the proxy ~100x slower: requests take milliseconds, so timers that fire after a
grace period (the gateway's disconnect watcher) fire here when they would not at full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.configs import GATEWAY_KEY
from benchmarks.features import FEATURES, Feature
from benchmarks.instructions import _command, _send
from benchmarks.procs import ROOT, Service, free_port


def _package(location: str) -> str:
    if "site-packages/" in location:
        return location.split("site-packages/", 1)[1].split("/", 1)[0]
    if f"{ROOT}/" in location:
        return location.split(f"{ROOT}/", 1)[1].split(":", 1)[0]
    if "/python3." in location:
        return "stdlib: " + location.split("/python3.", 1)[1].split("/", 1)[1].split(":", 1)[0]
    return location.split(":", 1)[0]  # <string>: dataclass __init__s and the like


def count(target: str, requests: int, stream: bool, top: int, feature: Feature | None = None,
          interval_ms: float = 0) -> str:
    with tempfile.TemporaryDirectory(prefix="gateway-opcodes-") as directory:
        work = Path(directory)
        out = work / "opcodes.tsv"
        env = {**os.environ, "BENCH_UPSTREAM_KEY": "bench-upstream-key", "BENCH_GATEWAY_KEY": GATEWAY_KEY,
               "OPTRACE_OUT": str(out), "PYTHONPATH": str(ROOT)}
        upstream_port, port = free_port(), free_port()
        upstream = Service("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)],
                           core=None, log=work / "upstream.log")
        command, load = _command(target, work, f"http://127.0.0.1:{upstream_port}/v1", port, feature)
        traced = [command[0], str(Path(__file__).with_name("_optrace.py")), *command[1:]]
        proxy = Service(target, traced, core=None, log=work / "proxy.log", env=env)
        try:
            upstream.wait_ready(f"http://127.0.0.1:{upstream_port}/readyz")
            proxy.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=300)
            asyncio.run(_send(load, 20 if not interval_ms else 5, stream, interval_ms))
            os.kill(proxy.pid, signal.SIGUSR1)
            asyncio.run(_send(load, requests, stream, interval_ms))
            os.kill(proxy.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            rows = [line.split("\t") for line in out.read_text().splitlines()]
        finally:
            proxy.stop()
            upstream.stop()
    packages: Counter[str] = Counter()
    for opcodes, _calls, _name, location in rows:
        packages[_package(location)] += int(opcodes)
    total = sum(packages.values())
    what = "whole answers" if not stream else f"50-chunk streams{f', {interval_ms:g} ms apart' if interval_ms else ''}"
    lines = [f"{target}, {what}: {total / requests:,.0f} opcodes "
             f"per request ({requests} requests)", "", "by package or file:"]
    lines += [f"  {n / requests:8,.0f}  {name}" for name, n in packages.most_common(top)]
    lines += ["", "by function (opcodes, calls per request):"]
    for opcodes, calls, name, location in rows[:top]:
        where = location.split("site-packages/")[-1].replace(f"{ROOT}/", "")
        lines.append(f"  {int(opcodes) / requests:8,.0f} {int(calls) / requests:6.1f}  {name} ({where})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("gateway", "bare", "raw"), default="gateway")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--stream", action="store_true", help="50-chunk streams instead of whole answers")
    parser.add_argument("--interval", type=float, default=0.0, metavar="MS",
                        help="with --stream: the upstream sends each chunk MS ms after the last")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--feature", choices=[f.name for f in FEATURES if f.wire == "openai" and not f.services],
                        help="the gateway of this feature row (chat, no extra service) instead of the plain one")
    args = parser.parse_args()
    feature = next((f for f in FEATURES if f.name == args.feature), None)
    if feature is not None and args.target != "gateway":
        parser.error("--feature applies to --target gateway")
    if args.interval < 0 or (args.interval and not args.stream):
        parser.error("--interval takes a number of milliseconds >= 0, with --stream")
    print(count(args.target, args.requests, args.stream, args.top, feature, args.interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
