"""From the folded state to the scheduler's questions (the `Queue`'s demands, `leases`, `shared_gpus`),
field by field, and the threads a CPU run is given; test_dispatch follows whole decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.core.events import GpuShared
from daemon.core.state import Job, Run, State
from daemon.runs.dispatch import Box, Queue, leases, shared_gpus
from daemon.runs.scheduler import Demand, GpuView, Lease
from tests.fold_world import job, run, world
from tests.unit.test_dispatch import GRACE_S, NOW, SFT, Daemon, gpu, lora_job

NOT_YET = "which was not submitted yet (drop it, or cancel this job)"


def demands(state: State, managed: bool) -> list[Demand]:
    """The waiting jobs' demands as a queue built from `state` holds them, in the log's order."""
    q = Queue()
    q.sync(state, managed)
    return list(q.demands.values())


def queued(gpus: int | None = 1, **fields: Any) -> Job:
    j = job(1, name="train", **fields)
    j.spec, j.gpus = {"name": "train", "timeout_s": 60}, gpus
    return j


def on(*uuids: str, ends_by: float | None = None, attempt: int = 1) -> Run:
    """An attempt holding these GPUs (none: a CPU slot)."""
    r = run(attempt)
    r.gpu_uuids, r.ends_by = list(uuids), ends_by
    return r


def test_a_queued_job_asks_for_what_its_file_says() -> None:
    state = world(
        queued(blocked="waiting for dataset chat"),
        job(2, name="prep", state="running"),
        job(3, name="done", state="succeeded"),
        job_names={"train": 1, "prep": 2, "done": 3},
    )
    train = state.jobs[1]
    train.gpu_ids, train.min_free_memory_mib, train.priority, train.submitted_seq = [0, "GPU-x"], 100, 4, 9
    train.after = ["nope", "prep", "train", "later"]
    assert demands(state, managed=True) == [
        Demand(
            id=1,
            name="train",
            priority=4,
            order=9,
            gpus=2,
            gpu_ids=("0", "GPU-x"),
            min_free_memory_mib=100,
            after=(2,),
            blocked=f"waiting for dataset chat; after job nope, train, later, {NOT_YET}",
            timeout_s=60.0,
        )
    ]


@pytest.mark.parametrize(
    ("gpus", "managed", "asked"), [(None, True, 1), (None, False, 0), (0, True, 0), (3, False, 3)]
)
def test_a_job_that_does_not_say_gpus_needs_one_where_gpus_are_managed(
    gpus: int | None, managed: bool, asked: int
) -> None:
    state = world(queued(gpus=gpus))
    (demand,) = demands(state, managed=managed)
    assert (demand.gpus, demand.blocked, demand.after) == (asked, None, ())


def test_only_running_jobs_hold_gpus_and_cpu_slots() -> None:
    state = world(
        job(1, name="done", state="succeeded", runs=[on("GPU-c", ends_by=10.0)]),
        job(2, name="gpu", state="running", runs=[on("GPU-a", "GPU-b", ends_by=5000.0)]),
        job(3, name="cpu1", state="running", runs=[on()]),
        job(4, name="cpu2", state="running", runs=[on()]),
        job(5, name="waits", state="queued"),
    )
    assert leases(state) == ({"GPU-a": Lease(2, 5000.0), "GPU-b": Lease(2, 5000.0)}, 2)


def test_a_foreign_process_is_reported_once_for_the_running_job_on_its_gpu() -> None:
    foreign = GpuView(
        index=3, uuid="GPU-a", name="x", memory_total_mib=1, memory_used_mib=0, foreign_processes=1
    )
    other = GpuView(
        index=4, uuid="GPU-b", name="x", memory_total_mib=1, memory_used_mib=0, foreign_processes=2
    )
    state = world(
        job(1, name="done", state="succeeded", runs=[on("GPU-a")]),
        job(2, name="seen", state="running", runs=[on("GPU-b")]),
        job(3, name="new", state="running", runs=[on("GPU-a", "GPU-c", attempt=2)]),
    )
    state.jobs[2].runs[0].gpu_shared = [4]
    assert shared_gpus(state, [foreign, other]) == [GpuShared(job_id=3, attempt=2, gpus=[3])]


@pytest.mark.parametrize(("cores", "slots", "threads"), [(8, 2, "4"), (9, 2, "4"), (8, 1, "8"), (1, 2, "1")])
def test_a_cpu_run_gets_its_share_of_the_cores(tmp_path: Path, cores: int, slots: int, threads: str) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a", "gpus: 0\n"))
    box = Box(gpus=[], managed=False, cpu_slots=slots, now=NOW, stop_grace_s=GRACE_S, cpu_count=cores)
    env = d.start(1, box).env
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) == (threads, threads)


def test_a_gpu_run_keeps_the_threads_it_would_have(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    box = Box(gpus=[gpu(0)], managed=True, cpu_slots=1, now=NOW, stop_grace_s=GRACE_S, cpu_count=8)
    env = d.start(1, box).env
    assert "OMP_NUM_THREADS" not in env and "MKL_NUM_THREADS" not in env


def test_a_dependency_not_submitted_yet_is_the_whole_block_of_a_job_with_nothing_else_missing() -> None:
    state = world(queued())
    state.jobs[1].after = ["ghost"]
    (demand,) = demands(state, managed=True)
    assert (demand.after, demand.blocked) == ((), f"after job ghost, {NOT_YET}")
