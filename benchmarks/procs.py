"""Child processes for a benchmark: start pinned to a core, wait until ready, read CPU and memory
from /proc, and always stop. Linux only."""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_LIBC = ctypes.CDLL(None, use_errno=True)
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cores() -> tuple[int | None, int | None]:
    """(server core, load core) when there are two cores to split and taskset is there, else no pinning."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2 and shutil.which("taskset"):
        return available[0], available[1]
    return None, None


def _die_with_parent() -> None:
    """Runs in the child before exec: if the runner is killed outright, its servers get SIGTERM too."""
    _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += _children(current)
    return pids


def process_cpu_ns(pid: int) -> int:
    """CPU time a process has run so far, every thread included (those that ended too), in nanoseconds;
    0 once the process is gone.

    This is the kernel's own run-time sum (the process's CPU-time clock, clock_getcpuclockid(3)), which
    Linux lets any process read. /proc/<pid>/stat's utime + stime come from the same sum but in clock
    ticks (10 ms: 4% of a 1 s run at 200 req/s), and /proc/<pid>/task/*/schedstat, in ns, loses the time
    of threads that have ended (an executor's, a resolver's).
    """
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return 0  # no such process (any more)
    try:
        return time.clock_gettime_ns(clock.value)
    except OSError:
        return 0  # it ended between the two calls


class Service:
    """A server process (and whatever it forks), pinned with taskset, logging to a file."""

    def __init__(self, name: str, args: list[str], *, core: int | None, log: Path,
                 env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.name = name
        self.log = log
        prefix = ["taskset", "-c", str(core)] if core is not None else []
        with log.open("wb") as out:
            # taskset execs the command, so the pid is the server's own.
            self.popen = subprocess.Popen(prefix + args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                          start_new_session=True, preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready at {url} after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, size: int = 3000) -> str:
        return self.log.read_bytes()[-size:].decode(errors="replace")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the process tree so far, to the nanosecond: see `process_cpu_ns`."""
        return sum(process_cpu_ns(pid) for pid in _tree(self.pid)) / 1e9

    def memory_mb(self, field: str = "VmRSS") -> float:
        """RSS (or VmHWM, the peak RSS) summed over the process tree, in MiB."""
        total = 0
        for pid in _tree(self.pid):
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += next((int(line.split()[1]) for line in lines if line.startswith(field + ":")), 0)
        return total / 1024

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)  # its own session: the group is only what it started
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


@dataclass(frozen=True)
class CoreTimes:
    """Per core, from /proc/stat (clock ticks): time busy (user, nice, system, irq, softirq), time stolen
    (the hypervisor ran something else while this virtual core wanted to run) and all of it."""

    busy: dict[int, int]
    steal: dict[int, int]
    total: dict[int, int]

    @classmethod
    def now(cls) -> CoreTimes:
        return cls.parse(Path("/proc/stat").read_text())

    @classmethod
    def parse(cls, text: str) -> CoreTimes:
        busy, steal, total = {}, {}, {}
        for line in text.splitlines():
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                # user nice system idle iowait irq softirq steal (guest time is already inside user)
                numbers = [int(v) for v in values[:8]] + [0] * (8 - len(values[:8]))
                core = int(name[3:])
                busy[core] = sum(numbers[:3]) + numbers[5] + numbers[6]
                steal[core] = numbers[7]
                total[core] = sum(numbers)
        return cls(busy, steal, total)

    def utilisation(self, since: CoreTimes, core: int) -> float:
        """Share of the time since `since` that the core was busy (its own work, not stolen time)."""
        spent = self.total[core] - since.total[core]
        return (self.busy[core] - since.busy[core]) / spent if spent else 0.0

    def stolen(self, since: CoreTimes, core: int) -> float:
        """Share of the time since `since` that the hypervisor took from the core."""
        spent = self.total[core] - since.total[core]
        return (self.steal[core] - since.steal[core]) / spent if spent else 0.0


@dataclass(frozen=True)
class Reading:
    """One measured run: the CPU a service spent in it, and what the machine's cores did meanwhile."""

    cpu: float  # seconds of the service's process tree; NaN when no service was measured
    seconds: float  # wall time of the run
    core: int | None  # the core the service is pinned to
    busy: dict[int, float]  # per core, share of the run it was busy (every process, the service's included)
    stolen: dict[int, float]  # per core, share of the run the hypervisor took

    @property
    def others(self) -> float:
        """Share of the run the service's own core was busy with anything but the service (NaN unpinned)."""
        if self.core is None or self.core not in self.busy or math.isnan(self.cpu) or not self.seconds:
            return math.nan
        return max(0.0, self.busy[self.core] - self.cpu / self.seconds)


class Meter:
    """Reads a service's CPU and every core's times at the start and at the end of a measured window."""

    def __init__(self, service: Service | None, core: int | None) -> None:
        self.service = service
        self.core = core
        self._cpu = math.nan
        self._cores: CoreTimes | None = None
        self._started = 0.0
        self.reading: Reading | None = None

    def start(self) -> None:
        self._cpu = self.service.cpu_seconds() if self.service else math.nan
        self._cores = CoreTimes.now()
        self._started = time.perf_counter()

    def stop(self) -> Reading:
        assert self._cores is not None, "stop() before start()"
        seconds = time.perf_counter() - self._started
        cpu = self.service.cpu_seconds() - self._cpu if self.service else math.nan
        now, since = CoreTimes.now(), self._cores
        self.reading = Reading(cpu, seconds, self.core, {c: now.utilisation(since, c) for c in now.total},
                               {c: now.stolen(since, c) for c in now.total})
        return self.reading
