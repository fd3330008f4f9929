"""A run's truth is its process (issue 12): what the runner sees is recorded however long the log
refuses writes, a run whose process lives keeps its slot whatever the log says, and an exit.json
that cannot be written yet is written once it can. Real runs and supervisors, as in test_runner."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.core.events import NewEvent, RunStarted
from daemon.log.errors import StoreUnavailable
from daemon.runs.dispatch import Box
from daemon.runs.loop import held_by_runs
from daemon.runs.outcome import RunEnd
from daemon.runs.supervise import EXIT_FILE
from tests.unit.test_dispatch import CPU_BOX, GPU_BOX, SFT, Daemon, lora_job
from tests.unit.test_runner import WAITS, Recorder, Runs

LOCKED = "cannot take the event log's write lock: database is locked"


class Refusing(Recorder):
    """The log as the runner sees it while another process holds its write lock."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = True
        self.refused = 0

    async def report(self, job_id: int, events: list[NewEvent]) -> None:
        if self.refusing:
            self.refused += 1
            raise StoreUnavailable(LOCKED)
        await super().report(job_id, events)

    async def on_end(self, job_id: int, attempt: int, end: RunEnd) -> None:
        if self.refusing:
            self.refused += 1
            raise StoreUnavailable(LOCKED)
        await super().on_end(job_id, attempt, end)


@pytest.fixture
async def runs(tmp_path: Path) -> AsyncIterator[Runs]:
    made = Runs(tmp_path)
    yield made
    await made.cleanup()


async def eventually(check: object, what: str, timeout: float = 10.0) -> None:
    assert callable(check)
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_records_the_log_refuses_are_written_once_it_takes_them_and_the_run_ends_once(
    runs: Runs,
) -> None:
    rec = Refusing()
    runner = runs.runner(rec)
    started = runs.started(1, WAITS)
    await runner.launch(started)
    run_dir, out = Path(started.run_dir), Path(started.output_dir)
    await eventually(lambda: rec.refused >= 2, "RunStarted refused twice")
    assert "job 1: cannot record its start (attempt 1)" in runner.trouble and "locked" in runner.trouble
    assert runner.holding() == {1: (1, ())}, "the live run holds its slot while nothing is recorded"
    (out / "release").write_text("")
    await eventually(lambda: (run_dir / EXIT_FILE).exists(), "the run's exit")
    await asyncio.sleep(1.0)
    assert rec.ends == {} and runner.running == {1}, "its end waits for the records before it"
    rec.refusing = False
    end = await rec.end(1)
    assert (end.returncode, end.error) == (0, None)
    assert isinstance(rec.events[0][1].event, RunStarted)
    assert runner.trouble == "" and runner.running == set() and runner.holding() == {}


async def test_an_end_the_log_refuses_is_retried_and_recorded_once(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, WAITS)
    await runner.launch(started)
    await rec.started(1)
    refusing = Refusing()
    runner._on_end = refusing.on_end  # the log starts refusing while the run goes on
    (Path(started.output_dir) / "release").write_text("")
    await eventually(lambda: refusing.refused >= 2, "the end refused twice")
    assert "cannot record its end" in runner.trouble
    assert runner.holding() == {}, "its process is gone: the log's 'running' holds the slot now"
    refusing.refusing = False
    end = await refusing.end(1)
    assert end.returncode == 0 and runner.trouble == "" and runner.running == set()


async def test_an_exit_json_that_cannot_be_written_is_written_once_it_can(runs: Runs) -> None:
    """A folder where exit.json goes makes the supervisor's atomic write fail, as a full disk does:
    it stays, so the run keeps its slot and no end is made up, and writes the exit once it can."""
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, WAITS)
    await runner.launch(started)
    await rec.started(1)
    run_dir = Path(started.run_dir)
    (run_dir / EXIT_FILE).mkdir()
    (run_dir / EXIT_FILE / "in-the-way").write_text("")
    (Path(started.output_dir) / "release").write_text("")
    await eventually(lambda: "cannot write" in Path(started.log).read_text(), "the supervisor's complaint")
    await asyncio.sleep(1.0)
    assert rec.ends == {} and runner.holding() == {1: (1, ())}, "no end while the supervisor lives"
    shutil.rmtree(run_dir / EXIT_FILE)
    end = await rec.end(1)
    assert (end.returncode, end.stopped, end.error) == (0, None, None)
    assert "released" in end.log_tail


def test_a_live_run_the_log_calls_failed_keeps_its_cpu_slot(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("b.yaml", lora_job("b"))
    d.start(1)
    d.exited(1, "failed")  # recorded by mistake while the run goes on
    views, slots = held_by_runs([], CPU_BOX.cpu_slots, d.state, {1: (1, ())})
    assert slots == 0
    assert d.decide(replace(CPU_BOX, gpus=views, cpu_slots=slots)).launches == []
    assert held_by_runs([], 1, d.state, {}) == ([], 1), "once its process is gone, the slot is free"
    assert d.decide().launches != []


def test_a_live_run_the_log_calls_failed_keeps_its_gpus(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("b.yaml", lora_job("b", "gpus: 2\n"))
    started = d.start(1, GPU_BOX)
    d.exited(1, "failed")  # recorded by mistake while the run goes on
    holding = {1: (1, tuple(started.gpu_uuids))}
    views, slots = held_by_runs(GPU_BOX.gpus, GPU_BOX.cpu_slots, d.state, holding)
    box = Box(gpus=views, managed=True, cpu_slots=slots, now=GPU_BOX.now, stop_grace_s=GPU_BOX.stop_grace_s)
    assert [g.foreign_processes for g in views] == [1, 0]
    assert 2 not in [launch.job_id for launch in d.decide(box).launches], "it needs job a's GPU"
    assert 2 in [launch.job_id for launch in d.decide(GPU_BOX).launches]


def test_a_run_the_log_counts_is_not_counted_twice(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.start(1)
    assert held_by_runs([], 2, d.state, {1: (1, ())}) == ([], 2)
