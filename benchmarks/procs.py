"""Child processes for a benchmark: start pinned to a core, wait until ready, read CPU and memory
from /proc, and always stop. Linux only."""

from __future__ import annotations

import ctypes
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

_TICK = os.sysconf("SC_CLK_TCK")
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
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


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


class Service:
    """A server process (and whatever it forks), pinned with taskset, logging to a file."""

    def __init__(self, name: str, args: list[str], *, core: int | None, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        prefix = ["taskset", "-c", str(core)] if core is not None else []
        with log.open("wb") as out:
            # taskset execs the command, so the pid is the server's own.
            self.popen = subprocess.Popen(prefix + args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
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
        """User + system CPU of the process tree so far."""
        total = 0
        for pid in _tree(self.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / _TICK

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
    """Busy and total jiffies per core, from /proc/stat."""

    busy: dict[int, int]
    total: dict[int, int]

    @classmethod
    def now(cls) -> CoreTimes:
        busy, total = {}, {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                numbers = [int(v) for v in values]
                idle = numbers[3] + numbers[4]  # idle + iowait
                busy[int(name[3:])] = sum(numbers[:8]) - idle
                total[int(name[3:])] = sum(numbers[:8])
        return cls(busy, total)

    def utilisation(self, since: CoreTimes, core: int) -> float:
        spent = self.total[core] - since.total[core]
        return (self.busy[core] - since.busy[core]) / spent if spent else 0.0
