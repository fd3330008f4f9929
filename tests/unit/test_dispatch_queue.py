"""The kept queue (`dispatch.Queue`) decides what a decision from scratch (`dispatch.decide`) decides.

Random runs of the daemon's life: jobs submitted (with priorities, GPU counts, memory floors,
timeouts, `after:` by name or id, preemptible or not), datasets dropped or rejected, cancels,
retries, pauses, runs that end in every way, GPUs that change, a disk that fills, a clock that moves.
At every decision, one Queue kept across the whole run (following the recorded events as the
scheduling loop's subscriber does) must return the same events as a fresh one, or None only when a
fresh one has nothing to record; what the fresh one decides is then recorded, as the loop does.
"""

from __future__ import annotations

import hashlib
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core.config import LimitsConfig
from daemon.core.events import (
    CancelRequested,
    DatasetAccepted,
    Event,
    FileRejected,
    JobSubmitted,
    PauseRequested,
    Recorded,
    RetryRequested,
    RunExited,
    RunInterrupted,
)
from daemon.core.fold import apply
from daemon.core.layout import StateLayout
from daemon.core.state import State
from daemon.core.swift_args import bundled
from daemon.intake.decide import Examined
from daemon.intake.decide import decide as intake
from daemon.intake.validate import check_file
from daemon.runs.dispatch import Box, Decisions, Environment, Queue, decide
from daemon.runs.scheduler import GpuView
from tests.unit.test_dispatch import SFT, lora_job

NAMES = ("a", "b", "c", "d")
ENV = Environment(StateLayout(Path("/state")), "/usr/bin/python3", True, lambda: 29500)


@cache
def templates() -> tuple[JobSubmitted, DatasetAccepted]:
    """A job and a dataset as intake records them; each random job is this job with other fields."""
    with tempfile.TemporaryDirectory() as tmp:
        out: list[Event] = []
        for name, data in (("t.yaml", lora_job("t", "preemptible: true\n")), ("sft_demo.jsonl", SFT)):
            path = Path(tmp) / name
            path.write_bytes(data)
            verdict = check_file(path, LimitsConfig(), bundled(), name=name)
            ((new,),) = (
                part.events
                for part in intake(State(), [Examined("t", name, verdict.kind, verdict=verdict)], str)
            )
            out.append(new.event)
    job, dataset = out
    assert isinstance(job, JobSubmitted) and isinstance(dataset, DatasetAccepted)
    return job, dataset


def gpu(index: int, used: int = 0, foreign: int = 0) -> GpuView:
    return GpuView(index, f"GPU-{index}", "fake", 81_920, used, foreign)


BOXES: tuple[tuple[list[GpuView], bool, int], ...] = (
    ([], False, 1),
    ([], False, 0),
    ([gpu(0), gpu(1)], True, 1),
    ([gpu(0), gpu(1, foreign=1)], True, 1),
    ([gpu(0), gpu(1), gpu(2, used=60_000)], True, 0),
    ([gpu(0, used=81_920), gpu(1)], True, 1),
)

submits = st.tuples(
    st.just("submit"),
    st.sampled_from(NAMES),
    st.integers(0, 3),  # priority
    st.sampled_from([None, 0, 1, 2, 3]),  # gpus
    st.lists(st.sampled_from([*NAMES, "1", "2", "5", "missing"]), max_size=2, unique=True),
    st.sampled_from([None, 60, 3600]),  # timeout_s
    st.sampled_from([None, 40_000]),  # min_free_memory_mib
    st.booleans(),  # preemptible
)
decides = st.tuples(
    st.just("decide"),
    st.integers(0, len(BOXES) - 1),
    st.sampled_from([None, "disk full"]),
    st.integers(0, 90),
)
job_ops = st.tuples(
    st.sampled_from(
        ["succeeded", "failed", "retry", "paused", "interrupted", "cancel", "retry-req", "pause"]
    ),
    st.integers(1, 8),
)
data_ops = st.tuples(st.sampled_from(["dataset", "rejected"]))
ops = st.lists(st.one_of(submits, decides, decides, job_ops, data_ops), max_size=40)


class Life:
    def __init__(self) -> None:
        self.state = State()
        self.queue = Queue()
        self.seq = 0
        self.now = 1_000_000.0
        self.drops = 0

    def record(self, *events: Event) -> None:
        batch = []
        for event in events:
            self.seq += 1
            rec = Recorded(self.seq, "test", 1, self.now, event)
            self.state = apply(self.state, rec)
            batch.append(rec)
        self.queue.observe(self.state, batch)

    def drop_id(self) -> str:
        self.drops += 1
        return f"d{self.drops}"

    def submit(self, name: str, priority: int, gpus: int | None, after: list[str], *more: Any) -> None:
        timeout, memory, preemptible = more
        job, _ = templates()
        spec = dict(job.spec) | {"name": name, "priority": priority, "timeout_s": timeout}
        spec |= {"preemptible": preemptible, "gpus": gpus, "after": after}
        new = job.model_copy(
            update={
                "drop": self.drop_id(),
                "id": self.state.next_job_id,
                "name": name,
                "sha256": hashlib.sha256(repr((name, self.drops)).encode()).hexdigest(),
                "priority": priority,
                "gpus": gpus,
                "after": after,
                "min_free_memory_mib": memory,
                "spec": spec,
            }
        )
        self.record(new)

    def job_op(self, what: str, job_id: int) -> None:
        job = self.state.jobs.get(job_id)
        if job is None:
            return
        if what == "cancel":
            self.record(CancelRequested(drop=self.drop_id(), job_id=job_id, source="c.yaml"))
        elif what == "retry-req":
            self.record(RetryRequested(drop=self.drop_id(), job_id=job_id, source="r.yaml"))
        elif what == "pause":
            self.record(PauseRequested(drop=self.drop_id(), job_id=job_id, source="p.yaml"))
        elif job.state == "running" and what == "interrupted":
            self.record(
                RunInterrupted(
                    job_id=job_id, attempt=job.attempts, reason="a reboot", resume_from="/c/checkpoint-1"
                )
            )
        elif job.state == "running":
            outcome = "failed" if what == "retry" else "succeeded" if what == "interrupted" else what
            fields: dict[str, Any] = {"job_id": job_id, "attempt": job.attempts, "outcome": outcome}
            fields |= {"returncode": 0 if outcome != "failed" else 1, "retry": what == "retry"}
            self.record(RunExited.model_validate(fields))

    def dataset(self, rejected: bool) -> None:
        _, data = templates()
        if rejected:
            kept = f"sft_demo-{self.drops}.jsonl"
            event: Event = FileRejected(
                drop=self.drop_id(),
                filename="sft_demo.jsonl",
                kind="dataset",
                summary="bad",
                problems="bad\n",
                kept_as=kept,
            )
        else:
            sha = hashlib.sha256(str(self.drops).encode()).hexdigest()
            event = data.model_copy(update={"drop": self.drop_id(), "sha256": sha})
        self.record(event)

    def decide(self, box_index: int, disk: str | None, later: int) -> None:
        self.now += later
        gpus, managed, slots = BOXES[box_index]
        box = Box(
            gpus=gpus, managed=managed, cpu_slots=slots, now=self.now, stop_grace_s=30.0, disk_short=disk
        )
        fresh = decide(self.state, box, ENV)
        kept = self.queue.decide(self.state, box, ENV)
        if kept is None:
            assert nothing_to_record(fresh), fresh
        else:
            assert_same(kept, fresh)
        events: list[Event] = [*fresh.failed, *([fresh.waiting] if fresh.waiting else [])]
        events += [launch.started for launch in fresh.launches]
        events += fresh.preempted
        if events:
            self.record(*events)


def nothing_to_record(d: Decisions) -> bool:
    return not d.failed and d.waiting is None and not d.launches and not d.preempted


def assert_same(kept: Decisions, fresh: Decisions) -> None:
    assert kept.failed == fresh.failed
    assert kept.waiting == fresh.waiting
    assert [x.started for x in kept.launches] == [x.started for x in fresh.launches]
    assert kept.preempted == fresh.preempted
    assert kept.plan.start == fresh.plan.start
    assert kept.plan.reservation == fresh.plan.reservation
    assert dict(kept.plan.waiting) == dict(fresh.plan.waiting)
    assert dict(kept.plan.fail) == dict(fresh.plan.fail)


def run_life(steps: list[tuple[Any, ...]]) -> Life:
    life = Life()
    for op in steps:
        if op[0] == "submit":
            life.submit(*op[1:])
        elif op[0] == "decide":
            life.decide(*op[1:])
        elif op[0] in ("dataset", "rejected"):
            life.dataset(op[0] == "rejected")
        else:
            life.job_op(*op)
    life.decide(2, None, 1)
    return life


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_a_kept_queue_decides_as_a_fresh_one(steps: list[tuple[Any, ...]]) -> None:
    run_life(steps)


def test_a_kept_queue_skips_a_decision_when_nothing_changed_and_places_only_what_did() -> None:
    life = Life()
    life.dataset(rejected=False)
    for i, name in enumerate(NAMES):
        life.submit(name, i, 2, [], None, None, False)
    life.decide(1, None, 0)  # no CPU slot, no GPUs: every job waits
    assert life.queue.decide(life.state, Box([], False, 0, life.now, 30.0), ENV) is None
    life.submit("e", 0, 0, [], None, None, False)
    kept = life.queue.decide(life.state, Box([], False, 0, life.now, 30.0), ENV)
    assert kept is not None and kept.waiting is not None
    assert kept.waiting.reasons == {"5": "needs a CPU slot; this box has none (cpu_slots = 0)"}


@pytest.mark.parametrize("rebuild", ["another state", "a seq it did not see", "forget"])
def test_a_queue_that_lost_track_starts_over_from_the_state(rebuild: str) -> None:
    life = Life()
    life.dataset(rejected=False)
    life.submit("a", 0, 0, [], None, None, False)
    life.decide(1, None, 0)
    if rebuild == "another state":
        life.state = apply(State(), Recorded(1, "test", 1, life.now, templates()[1]))
    elif rebuild == "a seq it did not see":
        life.seq += 1
        life.state = apply(
            life.state,
            Recorded(life.seq, "test", 1, life.now, CancelRequested(drop="x", job_id=1, source="c")),
        )
    else:
        life.queue.forget()
    box = Box([], False, 1, life.now, 30.0)
    kept = life.queue.decide(life.state, box, ENV)
    assert kept is not None
    assert_same(kept, decide(life.state, box, ENV))
