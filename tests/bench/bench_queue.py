"""A queue of 10,000 jobs through a real daemon (issue 16, item 1): what filling it and holding it cost.

Goals: CPU per drop flat while the queue fills (a drop into a queue of 10,000 costs at most 1.5x a
drop into a queue of 100), and the idle CPU of a daemon holding 10,000 queued jobs within 1.5x of
the same daemon's idle CPU before anything was queued (both measured in this run, on this process).

The jobs ask for one GPU on a box that manages none, so they wait for ever ("needs 1 GPU; this box
has none") and every one of them is placed on every scheduling pass that looks at the whole queue.
The queue is filled in fast bursts; each measured batch is dropped one file at a time, the next
once the last is recorded, so that intake records (and the scheduler sees) each drop on its own,
as files arrive in practice, however loaded the machine (a daemon that falls behind would batch
drops and look cheaper per drop). CPU is the daemon
process's utime + stime, read from /proc between the first drop of a batch and the moment the
daemon is quiet again with every drop recorded.

Before the kept queue (issue 16), on this bench: CPU per drop 5.1 ms at 100, 15.4 ms at 1,000 and
114.9 ms at 10,000 queued (ratio 22.5); idle 0.07 % of a core empty and 5.30 % with 10,000 queued
(ratio 79.5, then counted in clock ticks). After: 5.0, 4.7 and 5.3 ms (ratio 1.06); idle 0.08 % and
0.09 % (ratio 1.23), at load average 4.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.bench.measure import Goals, cpu_seconds, wait_quiet
from tests.daemon_proc import Daemon

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

SIZES = (100, 1_000, 10_000)
BATCH = 100
"""Drops measured at each size: the queue goes from size - BATCH to size."""
IDLE_S = 30.0
DATA = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'


def job(i: int) -> str:
    return f"name: q{i:05d}\ntask_type: sft\nmodel_name: /models/tiny\ndataset: data\ngpus: 1\npriority: {i % 7}\n"


def run_ns(pid: int) -> int:
    """Nanoseconds the threads of `pid` alive now have run (the first field of each schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


class Queue:
    """The daemon under test and what this process has dropped into it."""

    def __init__(self, root: Path) -> None:
        self.d = Daemon(root).start()
        assert self.d.proc is not None
        self.pid = self.d.proc.pid
        self.dropped = 0
        self.db = sqlite3.connect(f"file:{self.d.state / 'llmtraind.sqlite3'}?mode=ro", uri=True)
        self.seen_seq, self.decided, self.submitted = 0, 0, 0

    def recorded(self) -> int:
        """Job drops decided so far, read from the log (not the API, which would cost the daemon)."""
        rows = self.db.execute(
            "SELECT seq, type FROM events WHERE seq > ? ORDER BY seq", (self.seen_seq,)
        ).fetchall()
        for seq, kind in rows:
            self.seen_seq = seq
            self.decided += kind in ("JobSubmitted", "DuplicateDropped", "FileRejected")
            self.submitted += kind == "JobSubmitted"
        return self.decided

    def drop(self, count: int, *, one_by_one: bool = False) -> None:
        stage = self.d.root / "stage"
        stage.mkdir(exist_ok=True)
        names = [f"q{self.dropped + k:05d}.yaml" for k in range(count)]
        for name in names:
            (stage / name).write_text(job(self.dropped))
            self.dropped += 1
        self.d.inbox.mkdir(exist_ok=True)
        for k, name in enumerate(names, start=self.dropped - count + 1):
            os.rename(stage / name, self.d.inbox / name)
            while one_by_one and self.recorded() < k:
                time.sleep(0.002)

    def settle(self, timeout: float = 600) -> None:
        """Every drop recorded, then the daemon quiet: under 20 ms of CPU in half a second."""
        deadline = time.monotonic() + timeout
        while self.recorded() < self.dropped:
            assert time.monotonic() < deadline, f"{self.recorded()} of {self.dropped} job drops recorded"
            time.sleep(0.1)
        assert self.submitted == self.dropped, f"{self.submitted} of {self.dropped} drops became jobs"
        before = cpu_seconds(self.pid)
        while True:
            time.sleep(0.5)
            now = cpu_seconds(self.pid)
            if now - before < 0.02 or time.monotonic() > deadline:
                return
            before = now

    def idle_cpu(self) -> float:
        """Share of one core the daemon uses over IDLE_S with nothing happening. An idle daemon uses
        a few clock ticks in that time, so this counts the nanoseconds its threads ran instead."""
        self.settle()
        t0, c0 = time.monotonic(), run_ns(self.pid)
        time.sleep(IDLE_S)
        return (run_ns(self.pid) - c0) / 1e9 / (time.monotonic() - t0)

    def cpu_per_drop(self) -> float:
        self.settle()
        c0 = cpu_seconds(self.pid)
        self.drop(BATCH, one_by_one=True)
        self.settle()
        return (cpu_seconds(self.pid) - c0) / BATCH


def test_a_queue_of_10000_jobs_fills_linearly_and_idles_cheaply(tmp_path: Path) -> None:
    wait_quiet("bench_queue")
    q = Queue(tmp_path / "d")
    try:
        q.d.drop("data.jsonl", DATA)
        idle_empty = q.idle_cpu()
        per_drop: dict[int, float] = {}
        for size in SIZES:
            while q.dropped < size - BATCH:
                q.drop(min(500, size - BATCH - q.dropped))
                q.settle()
            per_drop[size] = q.cpu_per_drop()
            print(f"\n{size:,} queued: {per_drop[size] * 1e3:.2f} ms of daemon CPU per drop", end="")
        idle_full = q.idle_cpu()
        load = os.getloadavg()[0]
    finally:
        q.db.close()
        q.d.stop()
    print(
        f"\nqueue of {SIZES[-1]:,} jobs (load average {load:.2f}): idle CPU empty {idle_empty * 100:.2f} %, "
        f"full {idle_full * 100:.2f} % of a core, ratio {idle_full / max(idle_empty, 1e-9):.2f}; CPU per drop "
        + ", ".join(f"at {n:,} {per_drop[n] * 1e3:.2f} ms" for n in SIZES)
        + f", ratio {SIZES[-1]:,}/{SIZES[0]} {per_drop[SIZES[-1]] / per_drop[SIZES[0]]:.2f}"
    )
    goals = Goals()
    ratio = per_drop[SIZES[-1]] / per_drop[SIZES[0]]
    goals.check("CPU per drop, 10,000 queued / 100 queued", ratio, 1.5, higher_is_better=False)
    goals.check(
        "idle CPU, 10,000 queued / empty", idle_full / max(idle_empty, 1e-9), 1.5, higher_is_better=False
    )
    goals.assert_met()
