"""What the benchmarks share: percentiles, a quiet machine to measure on, a process's CPU time."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["CLK_TCK", "cpu_seconds", "percentile", "wait_quiet"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_quiet(label: str) -> None:
    """Measure on a quiet machine: 1-minute load average under 1.0, waiting up to 60 s."""
    deadline = time.monotonic() + 60
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
