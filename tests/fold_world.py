"""Literal states and events for the fold's transition tables.

Every value here is written out by hand, none comes from the fold: a row whose expected state the
fold does not produce fails, which a test comparing `fold` with itself never could.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import pytest

from daemon.core.events import DatasetAccepted, Event, JobStarted, JobSubmitted, Recorded
from daemon.core.fold import apply
from daemon.core.state import Dataset, Job, JobState, Run, State

EARLIER = 1000.0
"""When everything in a state before happened."""
T = 2000.0
"""When the event under test was recorded."""
SEQ = 50
"""Its seq."""


class Row(NamedTuple):
    """One transition: the state before, the event, the state after."""

    before: State
    event: Event
    after: State


def rows(table: dict[str, Row]) -> list[Any]:
    return [pytest.param(row, id=name) for name, row in table.items()]


def check(row: Row) -> None:
    """Apply to a copy, so a table built once at import serves any number of runs."""
    got = apply(copy.deepcopy(row.before), Recorded(seq=SEQ, stream="test", version=1, ts=T, event=row.event))
    assert got == replace(row.after, last_seq=SEQ)


def job(
    id: int = 1,
    *,
    name: str = "train",
    state: JobState = "queued",
    datasets: Sequence[str] = ("chat",),
    feeds: str | None = "sft",
    rlhf_type: str | None = None,
    submitted_ts: float = EARLIER,
    submitted_seq: int = 1,
    **fields: Any,
) -> Job:
    return Job(
        id=id,
        name=name,
        project="demo",
        filename=f"{name}.yaml",
        sha256=f"job{id}",
        task="sft",
        tuner="lora",
        rlhf_type=rlhf_type,
        feeds=feeds,
        datasets=list(datasets),
        priority=0,
        after=[],
        gpus=1,
        gpu_ids=[],
        min_free_memory_mib=None,
        spec={"name": name},
        submitted_ts=submitted_ts,
        submitted_seq=submitted_seq,
        state=state,
        **fields,
    )


def submitted(
    id: int = 1,
    *,
    name: str = "train",
    drop: str = "d1",
    datasets: Sequence[str] = ("chat",),
    feeds: str | None = "sft",
    rlhf_type: str | None = None,
) -> JobSubmitted:
    """The event that makes `job(id, name=name, ...)` with the same arguments."""
    return JobSubmitted(
        drop=drop,
        id=id,
        name=name,
        project="demo",
        filename=f"{name}.yaml",
        sha256=f"job{id}",
        task="sft",
        tuner="lora",
        rlhf_type=rlhf_type,
        feeds=feeds,
        datasets=list(datasets),
        priority=0,
        after=[],
        gpus=1,
        gpu_ids=[],
        min_free_memory_mib=None,
        spec={"name": name},
    )


def dataset(
    sha: str = "s1",
    *,
    name: str = "chat",
    fmt: str = "sft_messages",
    task_types: Sequence[str] = ("sft", "lora"),
    rlhf_types: Sequence[str] = (),
    names: Sequence[str] | None = None,
    accepted_ts: float = EARLIER,
    accepted_seq: int = 2,
    drops: int = 1,
) -> Dataset:
    return Dataset(
        sha256=sha,
        name=name,
        filename=f"{name}.jsonl",
        format=fmt,
        task_types=list(task_types),
        rlhf_types=list(rlhf_types),
        rows=3,
        bytes=300,
        stats={"rows": 3},
        lora_hints=None,
        accepted_ts=accepted_ts,
        accepted_seq=accepted_seq,
        names=[name] if names is None else list(names),
        drops=drops,
    )


def accepted(
    sha: str = "s1",
    *,
    name: str = "chat",
    drop: str = "d1",
    fmt: str = "sft_messages",
    task_types: Sequence[str] = ("sft", "lora"),
    rlhf_types: Sequence[str] = (),
) -> DatasetAccepted:
    """The event that makes `dataset(sha, name=name, ...)`, accepted at T as SEQ."""
    return DatasetAccepted(
        drop=drop,
        name=name,
        filename=f"{name}.jsonl",
        sha256=sha,
        format=fmt,
        task_types=list(task_types),
        rlhf_types=list(rlhf_types),
        rows=3,
        bytes=300,
        stats={"rows": 3},
    )


def run(
    attempt: int = 1, *, placed_ts: float = EARLIER, resume_from: str | None = None, **fields: Any
) -> Run:
    return Run(
        attempt=attempt,
        gpu_uuids=["GPU-a"],
        gpu_indices=[0],
        argv=["python", "-m", "swift.cli.sft"],
        env={"MASTER_PORT": "29500"},
        unset_env=["HF_ENDPOINT"],
        command="MASTER_PORT=29500 python -m swift.cli.sft",
        run_dir=f"/s/runs/1/{attempt}",
        output_dir=f"/s/runs/1/{attempt}/output",
        log="/s/logs/1.log",
        inputs={"chat": "s1"},
        resume_from=resume_from,
        timeout_s=3600.0,
        ends_by=5000.0,
        placed_ts=placed_ts,
        **fields,
    )


def started(attempt: int = 1, *, job_id: int = 1, resume_from: str | None = None) -> JobStarted:
    """The event that makes `run(attempt, resume_from=resume_from)`, placed at T."""
    return JobStarted(
        job_id=job_id,
        attempt=attempt,
        gpu_uuids=["GPU-a"],
        gpu_indices=[0],
        argv=["python", "-m", "swift.cli.sft"],
        env={"MASTER_PORT": "29500"},
        unset_env=["HF_ENDPOINT"],
        command="MASTER_PORT=29500 python -m swift.cli.sft",
        run_dir=f"/s/runs/1/{attempt}",
        output_dir=f"/s/runs/1/{attempt}/output",
        log="/s/logs/1.log",
        inputs={"chat": "s1"},
        resume_from=resume_from,
        timeout_s=3600.0,
        ends_by=5000.0,
    )


def world(*jobs: Job, datasets: Sequence[Dataset] = (), **fields: Any) -> State:
    """A state holding `jobs` and `datasets`; every other field as given (names, waiting_for, ...)."""
    return State(jobs={j.id: j for j in jobs}, datasets={d.sha256: d for d in datasets}, **fields)
