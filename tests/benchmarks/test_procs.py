"""What the benchmark reads from /proc: a process's CPU to the nanosecond (threads that ended
included), and each core's busy and stolen time for the report's noise notes."""

from __future__ import annotations

import math
import subprocess
import sys

from benchmarks.procs import CoreTimes, Reading, process_cpu_ns
from benchmarks.report import noise_note

# A child that spends 0.2 s of CPU (by its own thread clock) in a thread that then ends, and waits.
_BURN_IN_A_THREAD = """
import sys, threading, time
def burn():
    while time.thread_time() < 0.2:
        pass
thread = threading.Thread(target=burn)
thread.start()
thread.join()
print("burnt", flush=True)
sys.stdin.read()
"""


def test_process_cpu_counts_a_thread_that_has_ended() -> None:
    child = subprocess.Popen([sys.executable, "-c", _BURN_IN_A_THREAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "burnt\n"
        spent = process_cpu_ns(child.pid)
        assert spent >= 200_000_000, spent  # the ended thread's 0.2 s are in, to the nanosecond
        assert spent % 10_000_000 != 0  # not whole clock ticks
    finally:
        child.communicate("", timeout=30)
    assert process_cpu_ns(child.pid) == 0  # reaped: nothing to read


_STAT_BEFORE = """cpu  10 0 10 100 0 0 0 0 0 0
cpu0 100 5 50 1000 10 3 2 20 0 0
cpu1 200 0 100 900 0 0 0 0 0 0
intr 1 2 3
"""
_STAT_AFTER = """cpu  10 0 10 100 0 0 0 0 0 0
cpu0 130 5 60 1040 20 3 2 40 0 0
cpu1 240 0 110 950 0 0 0 0 0 0
intr 1 2 3
"""


def test_core_times_split_busy_from_stolen_and_idle() -> None:
    before, after = CoreTimes.parse(_STAT_BEFORE), CoreTimes.parse(_STAT_AFTER)
    # core 0 over 100 ticks: 40 busy (user 30 + system 10), 40 idle + 10 iowait, 20 stolen
    assert after.utilisation(before, 0) == 40 / 110
    assert after.stolen(before, 0) == 20 / 110
    assert after.utilisation(before, 1) == 50 / 100
    assert after.stolen(before, 1) == 0.0


def _reading(cpu: float, busy0: float, busy1: float, stolen0: float = 0.0) -> Reading:
    return Reading(cpu, 1.0, 0, {0: busy0, 1: busy1}, {0: stolen0, 1: 0.0})


def test_the_proxys_core_busy_beyond_the_proxy_is_other_work() -> None:
    assert _reading(0.25, 0.40, 0.5).others == 0.40 - 0.25
    assert _reading(0.50, 0.40, 0.5).others == 0.0  # tick rounding never makes it negative
    assert math.isnan(Reading(math.nan, 1.0, None, {}, {}).others)


def test_a_quiet_phase_is_not_called_noisy_and_a_stolen_one_is() -> None:
    quiet = noise_note("CPU per request at 200 req/s (ms)", [_reading(0.25, 0.26, 0.30), _reading(0.25, 0.27, 0.32)])
    assert quiet == ("Noise under 'CPU per request at 200 req/s (ms)' (2 runs, mean / worst run): stolen by the "
                     "hypervisor: core 0 0.0% / 0.0%, core 1 0.0% / 0.0%; the proxy's core busy with other work: "
                     "1.5% / 2.0%; other cores busy: core 1 31.0% / 32.0%.")
    stolen = noise_note("x", [_reading(0.25, 0.26, 0.30, stolen0=0.10), _reading(0.25, 0.26, 0.30)])
    assert "core 0 5.0% / 10.0%" in stolen and stolen.endswith("Noisy: read this row's ratios with care.")
    busy = noise_note("x", [_reading(0.25, 0.40, 0.30)])
    assert busy.endswith("Noisy: read this row's ratios with care.")
