"""Properties of the fold as a whole: snapshots change nothing, and replays are byte-identical (E1,
E2). What each event does to the state is in the transition tables (test_fold_intake, test_fold_runs);
these only hold them together."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.events import (
    EVENT_TYPES,
    ArtifactRecord,
    ArtifactsFound,
    CancelRequested,
    DaemonStarted,
    DaemonStopped,
    DatasetAccepted,
    DatasetValidating,
    DuplicateDropped,
    Event,
    FailureRecord,
    FileRejected,
    GpuSeen,
    GpuShared,
    JobFailed,
    JobProgress,
    JobStarted,
    JobSubmitted,
    JobsWaiting,
    Recorded,
    RetryRequested,
    RunExited,
    RunInterrupted,
    RunServing,
    RunStarted,
)
from daemon.core.fold import apply, fold
from daemon.core.state import LIVE, TERMINAL, WAITING, JobState, State, state_from_json, state_to_json
from tests.fold_world import job, world
from tests.unit import test_fold_intake, test_fold_pause, test_fold_runs, test_fold_slurm

pids = st.integers(min_value=1, max_value=5)
gpus = st.lists(
    st.builds(
        GpuSeen,
        index=st.integers(0, 7),
        uuid=st.text(max_size=8),
        name=st.text(max_size=8),
        memory_total_mib=st.integers(0, 10**6),
    ),
    max_size=3,
)
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        DaemonStarted,
        version=st.text(max_size=5),
        config_digest=st.text(max_size=5),
        host=st.text(max_size=5),
        pid=pids,
        boot_id=st.text(max_size=5),
        gpus=gpus,
    ),
    st.builds(DaemonStopped, pid=pids, reason=st.text(max_size=10)),
)
# Few names, shas, drops and ids, so events refer to each other: aliases, waiting jobs, cancels.
names = st.sampled_from(["a", "b", "c"])
shas = st.sampled_from(["s1", "s2", "s3"])
drops = st.sampled_from(["d1", "d2", "d3", "d4"])
job_ids = st.integers(1, 4)
tasks = st.sampled_from(["sft", "lora", "pretrain", "rl"])
intake_events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        DatasetValidating,
        drop=drops,
        name=names,
        bytes_total=st.integers(0, 100),
        bytes_done=st.integers(0, 100),
        rows_done=st.integers(0, 9),
    ),
    st.builds(
        DatasetAccepted,
        drop=drops,
        name=names,
        filename=names,
        sha256=shas,
        format=st.sampled_from(["sft_messages", "preference"]),
        task_types=st.lists(tasks, max_size=3),
        rlhf_types=st.lists(st.sampled_from(["dpo", "kto"]), max_size=2),
        rows=st.integers(1, 9),
        bytes=st.integers(1, 999),
        stats=st.just({"rows": 1}),
    ),
    st.builds(
        DuplicateDropped,
        drop=drops,
        filename=names,
        kind=st.sampled_from(["dataset", "job"]),
        sha256=shas,
        dataset=st.none() | names,
        alias=st.none() | names,
        job_id=st.none() | job_ids,
    ),
    st.builds(
        JobSubmitted,
        drop=drops,
        id=job_ids,
        name=names,
        project=names,
        filename=names,
        sha256=shas,
        task=st.sampled_from(["sft", "rlhf"]),
        tuner=st.none() | st.just("lora"),
        rlhf_type=st.none() | st.just("dpo"),
        feeds=st.none() | tasks,
        datasets=st.lists(names, max_size=2, unique=True),
        priority=st.integers(-2, 2),
        after=st.lists(names, max_size=2),
        gpus=st.none() | st.integers(0, 2),
        gpu_ids=st.lists(st.integers(0, 3) | st.just("GPU-x"), max_size=2),
        min_free_memory_mib=st.none() | st.integers(0, 9),
        spec=st.just({"name": "x"}),
    ),
    st.builds(CancelRequested, drop=drops, job_id=job_ids, source=names),
    st.builds(RetryRequested, drop=drops, job_id=job_ids, source=names),
    st.builds(
        FileRejected,
        drop=drops,
        filename=names,
        kind=st.sampled_from(["dataset", "job", "unknown"]),
        summary=st.text(max_size=5),
        problems=st.text(max_size=5),
        kept_as=names,
    ),
)
attempts = st.integers(1, 2)
floats = st.none() | st.floats(0, 10, allow_nan=False)
run_events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        JobStarted,
        job_id=job_ids,
        attempt=attempts,
        gpu_uuids=st.lists(st.just("GPU-x"), max_size=1),
        gpu_indices=st.lists(st.just(0), max_size=1),
        argv=st.just(["python", "-m", "swift.cli.sft"]),
        env=st.just({"MASTER_PORT": "1"}),
        command=st.just("python -m swift.cli.sft"),
        run_dir=names,
        output_dir=names,
        log=names,
        inputs=st.dictionaries(names, shas, max_size=2),
        timeout_s=floats,
        ends_by=floats,
    ),
    st.builds(
        RunStarted,
        job_id=job_ids,
        attempt=attempts,
        pid=pids,
        start_ticks=st.integers(0, 9),
        boot_id=names,
        child_pid=pids,
        session=pids,
        log_offset=st.integers(0, 99),
    ),
    st.builds(
        JobProgress,
        job_id=job_ids,
        attempt=attempts,
        kind=st.sampled_from(["train", "eval", "summary"]),
        step=st.integers(0, 9),
        max_steps=st.integers(1, 9),
        percent=st.floats(0, 100),
        loss=floats,
        raw=st.dictionaries(names, st.floats(0, 1), max_size=2),
    ),
    st.builds(
        ArtifactsFound,
        job_id=job_ids,
        attempt=attempts,
        artifacts=st.lists(
            st.builds(ArtifactRecord, kind=st.just("checkpoint"), path=names, bytes=st.integers(0, 9)),
            max_size=2,
        ),
    ),
    st.builds(
        RunExited,
        job_id=job_ids,
        attempt=attempts,
        outcome=st.sampled_from(["succeeded", "failed", "cancelled"]),
        returncode=st.none() | st.integers(-15, 1),
        stopped=st.none() | st.sampled_from(["cancel", "timeout", "shutdown"]),
        failure=st.none()
        | st.builds(FailureRecord, kind=st.just("unknown"), transient=st.booleans(), reason=names),
        log_tail=st.lists(names, max_size=2),
        retry=st.booleans(),
        final_checkpoint=st.none() | names,
    ),
    st.builds(
        GpuShared, job_id=job_ids, attempt=attempts, gpus=st.lists(st.integers(0, 3), min_size=1, max_size=2)
    ),
    st.builds(RunInterrupted, job_id=job_ids, attempt=attempts, reason=names, resume_from=st.none() | names),
    st.builds(RunServing, job_id=job_ids, attempt=attempts, url=names, models=st.lists(names, max_size=2)),
    st.builds(JobFailed, job_id=job_ids, reason=names),
    st.builds(JobsWaiting, reasons=st.dictionaries(st.sampled_from(["1", "2", "3"]), names, max_size=2)),
)
events = st.one_of(events, intake_events, intake_events, run_events)


def record(evs: list[Event]) -> list[Recorded]:
    return [Recorded(seq=i, stream="daemon", version=i, ts=1000.0 + i, event=e) for i, e in enumerate(evs, 1)]


@settings(max_examples=150, deadline=None)
@given(st.lists(events, max_size=40))
def test_snapshot_at_any_k_plus_tail_equals_full_fold(evs: list[Event]) -> None:
    log = record(evs)
    full = fold(log)
    for k in range(len(log) + 1):
        snap = state_to_json(fold(log[:k]))
        resumed = fold(log[k:], state_from_json(snap))
        assert resumed == full


@settings(max_examples=100, deadline=None)
@given(st.lists(events, max_size=40))
def test_replaying_twice_gives_byte_identical_state(evs: list[Event]) -> None:
    log = record(evs)
    assert state_to_json(fold(log)) == state_to_json(fold(log))


@settings(max_examples=100, deadline=None)
@given(st.lists(events, max_size=40))
def test_incremental_equals_replayed(evs: list[Event]) -> None:
    log = record(evs)
    state = State()
    for rec in log:
        state = apply(state, rec)
        assert state.last_seq == rec.seq
    assert state == fold(log)


def test_a_start_without_a_stop_counts_as_unclean() -> None:
    started = DaemonStarted(version="v", config_digest="d", host="h", pid=1, boot_id="b")
    state = fold(record([started, started.model_copy(update={"pid": 2}), DaemonStopped(pid=2, reason="x")]))
    assert state.daemon_starts == 2 and state.unclean_stops == 1
    assert state.daemon is not None and state.daemon.stopped_ts == 1003.0


def test_every_event_type_has_a_transition_table() -> None:
    tables = test_fold_intake.TABLES + test_fold_runs.TABLES + test_fold_pause.TABLES + test_fold_slurm.TABLES
    tabled = {row.event.type for table in tables for row in table.values()}
    assert tabled == set(EVENT_TYPES)


def test_a_job_is_live_or_terminal_and_waits_only_while_live() -> None:
    assert sorted(LIVE + TERMINAL) == sorted(get_args(JobState))
    assert not set(LIVE) & set(TERMINAL)
    assert set(WAITING) < set(LIVE)


NAMED = world(
    job(1, name="train", state="failed"),
    job(2, name="train"),
    job(3, name="42", state="running"),
    job(4, name="old", state="succeeded"),
    job_names={"train": 2, "42": 3, "old": 4},
)


@pytest.mark.parametrize(
    ("ref", "found"),
    [("1", 1), ("2", 2), ("train", 2), ("42", 3), ("3", 3), ("old", 4), ("9", None), ("nobody", None)],
)
def test_a_job_is_found_by_id_or_by_its_newest_name(ref: str, found: int | None) -> None:
    job_ = NAMED.find_job(ref)
    assert (None if job_ is None else job_.id) == found


@pytest.mark.parametrize(("name", "live"), [("train", 2), ("42", 3), ("old", None), ("2", None), ("x", None)])
def test_a_name_is_taken_only_by_a_live_job_of_that_name(name: str, live: int | None) -> None:
    job_ = NAMED.live_job(name)
    assert (None if job_ is None else job_.id) == live
