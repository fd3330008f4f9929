"""The fold's transitions for the scheduler's decisions and what it saw of each attempt, one table per
event type, written from README's "Runs" and DESIGN.md's job states: a state before, the event, the
state after, every expected value spelled out."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from daemon.core.events import (
    ArtifactRecord,
    ArtifactsFound,
    FailureRecord,
    GpuShared,
    JobFailed,
    JobProgress,
    JobsWaiting,
    RunExited,
    RunInterrupted,
    RunServing,
    RunStarted,
)
from daemon.core.state import Job, JobState, Run
from tests.fold_world import Row, T, check, dataset, job, rows, run, started, world

CKPT = "/s/runs/1/1/output/checkpoint-20"
HERE: dict[str, Any] = {"datasets": [dataset()], "dataset_names": {"chat": "s1"}}
"""The dataset the job reads is here."""


def running(
    *runs_: Run, state: JobState = "running", inputs: dict[str, str | None] | None = None, **fields: Any
) -> Job:
    """Job 1 running its last run (or, with `state`, after it), first started at 1500, reading chat."""
    return job(
        state=state,
        attempts=len(runs_),
        started_ts=1500.0,
        inputs={"chat": "s1"} if inputs is None else inputs,
        runs=list(runs_),
        **fields,
    )


STARTED = {
    "the first attempt runs": Row(
        world(job(reason="needs 1 GPU, 0 free", inputs={"chat": "s1"})),
        started(1),
        world(job(state="running", attempts=1, started_ts=T, inputs={"chat": "s1"}, runs=[run(placed_ts=T)])),
    ),
    "the run keeps its secrets by reference, for a submission again after a restart": Row(
        world(job(inputs={"chat": "s1"})),
        started(1).model_copy(update={"secrets": {"SWANLAB_TOKEN": "env:TEAM_SWANLAB"}}),
        world(
            job(
                state="running",
                attempts=1,
                started_ts=T,
                inputs={"chat": "s1"},
                runs=[run(placed_ts=T, secrets={"SWANLAB_TOKEN": "env:TEAM_SWANLAB"})],
            )
        ),
    ),
    "a later attempt keeps when the job first started": Row(
        world(
            job(
                attempts=1,
                auto_retries=1,
                started_ts=1500.0,
                reason="runs again after attempt 1 failed: out of memory",
                runs=[run(1, ended_ts=1600.0)],
            )
        ),
        started(2),
        world(
            job(
                state="running",
                attempts=2,
                auto_retries=1,
                started_ts=1500.0,
                runs=[run(1, ended_ts=1600.0), run(2, placed_ts=T)],
            )
        ),
    ),
    "an interrupted job resumes from its checkpoint, which is then used up": Row(
        world(
            job(
                state="interrupted",
                attempts=1,
                started_ts=1500.0,
                resume_from=CKPT,
                reason="the machine rebooted; runs again from checkpoint-20",
                runs=[run(1, ended_ts=1600.0)],
            )
        ),
        started(2, resume_from=CKPT),
        world(
            job(
                state="running",
                attempts=2,
                started_ts=1500.0,
                runs=[run(1, ended_ts=1600.0), run(2, placed_ts=T, resume_from=CKPT)],
            )
        ),
    ),
    "an unknown job changes nothing": Row(world(job()), started(1, job_id=9), world(job())),
}

SPAWNED = RunStarted(
    job_id=1, attempt=1, pid=4242, start_ticks=777, boot_id="b1", child_pid=4243, session=4242, log_offset=120
)
RUN_STARTED = {
    "the run's processes are recorded": Row(
        world(running(run())),
        SPAWNED,
        world(
            running(
                run(
                    pid=4242,
                    start_ticks=777,
                    boot_id="b1",
                    child_pid=4243,
                    session=4242,
                    log_offset=120,
                    started_ts=T,
                )
            )
        ),
    ),
    "an older attempt's changes nothing": Row(
        world(running(run(1), run(2))), SPAWNED, world(running(run(1), run(2)))
    ),
    "a job that never ran changes nothing": Row(world(job()), SPAWNED, world(job())),
    "an unknown job changes nothing": Row(world(), SPAWNED, world()),
}


def progress(kind: Literal["train", "eval", "summary"], step: int, attempt: int = 1) -> JobProgress:
    return JobProgress(job_id=1, attempt=attempt, kind=kind, step=step, max_steps=100, percent=step, loss=1.5)


PROGRESS = {
    "a train step is the run's progress": Row(
        world(running(run())),
        progress("train", 10),
        world(running(run(progress=progress("train", 10), metrics_count=1))),
    ),
    "an evaluation is kept apart from the progress": Row(
        world(running(run(progress=progress("train", 10), metrics_count=4))),
        progress("eval", 10),
        world(
            running(
                run(progress=progress("train", 10), last_eval=progress("eval", 10), metrics_count=5),
                best_eval={"eval_loss": (1.5, 10)},
            )
        ),
    ),
    "the summary is the last progress": Row(
        world(running(run(progress=progress("train", 100), last_eval=progress("eval", 50), metrics_count=7))),
        progress("summary", 100),
        world(
            running(run(progress=progress("summary", 100), last_eval=progress("eval", 50), metrics_count=8))
        ),
    ),
    "an older attempt's changes nothing": Row(
        world(running(run(1), run(2))), progress("train", 5), world(running(run(1), run(2)))
    ),
}

CHECKPOINT_10 = ArtifactRecord(kind="checkpoint", path="/s/runs/1/1/output/checkpoint-10", bytes=900, step=10)
CHECKPOINT_20 = ArtifactRecord(kind="checkpoint", path=CKPT, bytes=1000, step=20)
FOUND = ArtifactsFound(job_id=1, attempt=1, artifacts=[CHECKPOINT_10, CHECKPOINT_20])
ARTIFACTS = {
    "the last scan is the run's artifacts": Row(
        world(running(run(artifacts=[CHECKPOINT_10]))),
        FOUND,
        world(running(run(artifacts=[CHECKPOINT_10, CHECKPOINT_20]))),
    ),
    "an older attempt's changes nothing": Row(
        world(running(run(1), run(2))), FOUND, world(running(run(1), run(2)))
    ),
}

MODEL = "/s/runs/1/1/output/checkpoint-20-merged"
SUCCEEDED = RunExited(
    job_id=1, attempt=1, outcome="succeeded", returncode=0, final_checkpoint=CKPT, final_model=MODEL
)
BAD_ROW = FailureRecord(kind="bad_row", transient=False, reason="bad row 3 in chat.jsonl")
FAILED = RunExited(
    job_id=1, attempt=1, outcome="failed", returncode=1, failure=BAD_ROW, final_checkpoint=CKPT
)
LOST = RunExited(job_id=1, attempt=1, outcome="failed", returncode=None)
CANCELLED = RunExited(
    job_id=1,
    attempt=1,
    outcome="cancelled",
    returncode=-15,
    signal=15,
    stopped="cancel",
    failure=FailureRecord(kind="cancelled", transient=False, reason="cancelled"),
)
OOM = FailureRecord(kind="oom", transient=True, reason="out of memory")


def oom(attempt: int) -> RunExited:
    return RunExited(job_id=1, attempt=attempt, outcome="failed", returncode=1, failure=OOM, retry=True)


SHUTDOWN = RunExited(
    job_id=1, attempt=1, outcome="failed", returncode=-15, signal=15, stopped="shutdown", retry=True
)

EXITED = {
    "success ends it succeeded, with what later jobs name as @JOB": Row(
        world(running(run())),
        SUCCEEDED,
        world(
            running(
                run(exit=SUCCEEDED, ended_ts=T),
                state="succeeded",
                ended_ts=T,
                final_checkpoint=CKPT,
                final_model=MODEL,
            )
        ),
    ),
    "a failure ends it failed with the reason, and names nothing for @JOB": Row(
        world(running(run())),
        FAILED,
        world(
            running(
                run(exit=FAILED, ended_ts=T), state="failed", ended_ts=T, reason="bad row 3 in chat.jsonl"
            )
        ),
    ),
    "a failure of unknown cause ends it failed": Row(
        world(running(run(), reason="left over")),
        LOST,
        world(running(run(exit=LOST, ended_ts=T), state="failed", ended_ts=T)),
    ),
    "a cancelled run ends it cancelled": Row(
        world(running(run(), cancel_requested=True)),
        CANCELLED,
        world(
            running(
                run(exit=CANCELLED, ended_ts=T),
                state="cancelled",
                ended_ts=T,
                reason="cancelled",
                cancel_requested=True,
            )
        ),
    ),
    "a transient failure with retries left queues it again, counting the retry": Row(
        world(running(run()), **HERE),
        oom(1),
        world(
            running(
                run(exit=oom(1), ended_ts=T),
                state="queued",
                auto_retries=1,
                reason="runs again after attempt 1 failed: out of memory",
            ),
            **HERE,
        ),
    ),
    "each automatic retry counts": Row(
        world(running(run(1, ended_ts=1600.0), run(2), auto_retries=1), **HERE),
        oom(2),
        world(
            running(
                run(1, ended_ts=1600.0),
                run(2, exit=oom(2), ended_ts=T),
                state="queued",
                auto_retries=2,
                reason="runs again after attempt 2 failed: out of memory",
            ),
            **HERE,
        ),
    ),
    "a retry whose dataset is gone waits for it": Row(
        world(running(run())),
        oom(1),
        world(
            running(
                run(exit=oom(1), ended_ts=T),
                state="queued",
                auto_retries=1,
                inputs={"chat": None},
                blocked="waiting for dataset chat",
                reason="waiting for dataset chat",
            )
        ),
    ),
    "a run the daemon stopped on its way down runs again, not counted, not to be cancelled": Row(
        world(running(run(), auto_retries=1, cancel_requested=True), **HERE),
        SHUTDOWN,
        world(
            running(
                run(exit=SHUTDOWN, ended_ts=T),
                state="queued",
                auto_retries=1,
                reason="runs again: the daemon stopped attempt 1 when it shut down",
            ),
            **HERE,
        ),
    ),
    "an older attempt's end changes nothing": Row(
        world(running(run(1), run(2))), SUCCEEDED, world(running(run(1), run(2)))
    ),
    "the end of a job that never ran changes nothing": Row(world(job()), SUCCEEDED, world(job())),
    "an unknown job changes nothing": Row(world(), SUCCEEDED, world()),
}

REBOOTED = "the machine rebooted during attempt 1"
INTERRUPTED = {
    "a reboot with a checkpoint leaves it interrupted, to resume from there": Row(
        world(running(run(), cancel_requested=True), **HERE),
        RunInterrupted(job_id=1, attempt=1, reason=REBOOTED, resume_from=CKPT),
        world(
            running(
                run(ended_ts=T),
                state="interrupted",
                resume_from=CKPT,
                reason="the machine rebooted during attempt 1; runs again from checkpoint-20",
            ),
            **HERE,
        ),
    ),
    "a reboot without a checkpoint fails it": Row(
        world(running(run()), **HERE),
        RunInterrupted(job_id=1, attempt=1, reason=REBOOTED),
        world(
            running(
                run(ended_ts=T),
                state="failed",
                ended_ts=T,
                reason=f"{REBOOTED}, and it had saved no checkpoint to resume from; retry it to start over",
            ),
            **HERE,
        ),
    ),
    "an interrupted job whose dataset is gone waits for it": Row(
        world(running(run())),
        RunInterrupted(job_id=1, attempt=1, reason=REBOOTED, resume_from=CKPT),
        world(
            running(
                run(ended_ts=T),
                state="interrupted",
                resume_from=CKPT,
                inputs={"chat": None},
                blocked="waiting for dataset chat",
                reason="waiting for dataset chat",
            )
        ),
    ),
    "a job no longer running is left as it is": Row(
        world(running(run(), state="queued")),
        RunInterrupted(job_id=1, attempt=1, reason=REBOOTED, resume_from=CKPT),
        world(running(run(), state="queued")),
    ),
    "an older attempt's changes nothing": Row(
        world(running(run(1), run(2))),
        RunInterrupted(job_id=1, attempt=1, reason=REBOOTED, resume_from=CKPT),
        world(running(run(1), run(2))),
    ),
    "an unknown job changes nothing": Row(
        world(), RunInterrupted(job_id=1, attempt=1, reason=REBOOTED, resume_from=CKPT), world()
    ),
}

SERVES = RunServing(job_id=1, attempt=1, url="http://127.0.0.1:8001", models=["qwen"])
SERVING = {
    "a deployment that answers shows where": Row(
        world(running(run())), SERVES, world(running(run(serving=SERVES)))
    ),
    "an older attempt's changes nothing": Row(
        world(running(run(1), run(2))), SERVES, world(running(run(1), run(2)))
    ),
}

SHARED = {
    "foreign processes are noted once per GPU, in order": Row(
        world(running(run(gpu_shared=[2]))),
        GpuShared(job_id=1, attempt=1, gpus=[3, 1, 2]),
        world(running(run(gpu_shared=[1, 2, 3]))),
    ),
    "an older attempt's changes nothing": Row(
        world(running(run(1), run(2))),
        GpuShared(job_id=1, attempt=1, gpus=[0]),
        world(running(run(1), run(2))),
    ),
}

GAVE_UP = JobFailed(job_id=1, reason="after job prep, which failed")
JOB_FAILED = {
    "a queued job the scheduler gives up on fails": Row(
        world(job(reason="after job prep (running)")),
        GAVE_UP,
        world(job(state="failed", ended_ts=T, reason="after job prep, which failed")),
    ),
    "an interrupted job the scheduler gives up on fails": Row(
        world(job(state="interrupted", resume_from=CKPT)),
        GAVE_UP,
        world(job(state="failed", ended_ts=T, reason="after job prep, which failed", resume_from=CKPT)),
    ),
    **{
        f"a {state} job is left as it is": Row(
            world(job(state=state, reason="r")), GAVE_UP, world(job(state=state, reason="r"))
        )
        for state in ("running", "succeeded", "failed", "cancelled")
    },
    "an unknown job changes nothing": Row(world(), GAVE_UP, world()),
}

WAITING = {
    "waiting jobs show why; other jobs and unknown ids are left alone": Row(
        world(
            job(1, reason="waiting for dataset chat", blocked="waiting for dataset chat"),
            job(2, name="b", state="interrupted", reason="r"),
            job(3, name="c", state="running"),
            job(4, name="d", state="succeeded"),
        ),
        JobsWaiting(
            reasons={
                "1": "needs 1 GPU, 0 free",
                "2": "needs a CPU slot, 1 of 1 in use",
                "3": "x",
                "4": "y",
                "9": "z",
            }
        ),
        world(
            job(1, reason="needs 1 GPU, 0 free", blocked="waiting for dataset chat"),
            job(2, name="b", state="interrupted", reason="needs a CPU slot, 1 of 1 in use"),
            job(3, name="c", state="running"),
            job(4, name="d", state="succeeded"),
        ),
    ),
}

TABLES = [
    STARTED,
    RUN_STARTED,
    PROGRESS,
    ARTIFACTS,
    EXITED,
    INTERRUPTED,
    SERVING,
    SHARED,
    JOB_FAILED,
    WAITING,
]


@pytest.mark.parametrize("row", rows(STARTED))
def test_job_started(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(RUN_STARTED))
def test_run_started(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(PROGRESS))
def test_job_progress(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(ARTIFACTS))
def test_artifacts_found(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(EXITED))
def test_run_exited(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(INTERRUPTED))
def test_run_interrupted(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(SERVING))
def test_run_serving(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(SHARED))
def test_gpu_shared(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(JOB_FAILED))
def test_job_failed(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(WAITING))
def test_jobs_waiting(row: Row) -> None:
    check(row)
