"""What the benchmarks share: their goals, percentiles, a quiet machine to measure on, a process's CPU
time."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "Goals",
    "cpu_seconds",
    "free_port",
    "live_threads_cpu_seconds",
    "percentile",
    "wait_quiet",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Goals:
    """The goals one benchmark checks. Every check prints its line when it is made, met or missed, so
    a run always shows each number against its goal; `assert_met`, the test's last line, then fails
    the test if any was missed, so that `make bench` exits non-zero. The ratio printed is measured /
    goal: at least 1 meets a higher-is-better goal, at most 1 a lower-is-better one."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def check(
        self, name: str, measured: float, goal: float, *, higher_is_better: bool, unit: str = ""
    ) -> None:
        met = measured >= goal if higher_is_better else measured <= goal
        line = (
            f"{name}: measured {_number(measured)}{unit}, goal {'≥' if higher_is_better else '≤'} "
            f"{_number(goal)}{unit}, ratio {measured / goal:.2f}: {'ok' if met else 'MISSED'}"
        )
        print(line)
        if not met:
            self.missed.append(line)

    def assert_met(self) -> None:
        assert not self.missed, "benchmark goal(s) missed:\n" + "\n".join(self.missed)


def _number(value: float) -> str:
    """Counts in full (10,000, not 1e+04); measurements to four significant digits."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.4g}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_quiet(label: str, limit_s: float = 60.0) -> None:
    """Measure on a quiet machine: 1-minute load average under 1.0, waiting up to `limit_s`."""
    deadline = time.monotonic() + limit_s
    load = os.getloadavg()[0]
    while load >= 1.0 and time.monotonic() < deadline:
        time.sleep(2)
        load = os.getloadavg()[0]
    if load >= 1.0:
        print(f"\nWARNING: {label}: machine not quiet (1-minute load average {load:.2f}); numbers are noisy")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def live_threads_cpu_seconds(pid: int) -> float:
    """CPU time of `pid`'s live threads to the nanosecond (/proc/<pid>/task/*/schedstat), for windows
    where `cpu_seconds`' clock ticks (10 ms) are too coarse: an idle daemon's 10 s is a few ticks. A
    thread that ends inside the window takes its time with it, so use it where threads persist."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def free_port() -> int:
    """A loopback port free now, for a server the benchmark starts as a baseline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
