"""The fold's transitions for pause and resume (issue 18 item 3) and for pruned checkpoints, written from DESIGN.md's job states
(`running` <-> `paused`): a state before, the event, the state after, every value spelled out."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.core.events import (
    ArtifactRecord,
    CancelRequested,
    CheckpointPruned,
    JobPreempted,
    JobProgress,
    PauseRequested,
    ResumeRequested,
    RunExited,
)
from daemon.core.state import IntakeCounts, Job, JobState
from tests.fold_world import Row, T, check, dataset, job, rows, run, world

CKPT = "/s/runs/1/1/output/checkpoint-20"
CKPT_10 = "/s/runs/1/1/output/checkpoint-10"
CHECKPOINT_10 = ArtifactRecord(kind="adapter", path=CKPT_10, bytes=100, step=10)
CHECKPOINT_20 = ArtifactRecord(kind="adapter", path=CKPT, bytes=100, step=20)
CONTROL = IntakeCounts(controls=1)
HERE: dict[str, Any] = {"datasets": [dataset()], "dataset_names": {"chat": "s1"}}
PAUSE = PauseRequested(drop="p1", job_id=1, source="pause-train.yaml")
RESUME = ResumeRequested(drop="r1", job_id=1, source="resume-train.yaml")
STEP_20 = JobProgress(job_id=1, attempt=1, kind="train", step=20, max_steps=100, percent=20.0)
PAUSED_EXIT = RunExited(
    job_id=1, attempt=1, outcome="paused", returncode=0, stopped="pause", final_checkpoint=CKPT
)
PAUSED_REASON = "paused by pause-train.yaml at step 20; resumes from checkpoint-20 (llmtraind resume train)"


def _running(*, state: JobState = "running", **fields: Any) -> Job:
    """Job 1 on its first attempt, reading chat."""
    return job(state=state, attempts=1, inputs={"chat": "s1"}, **fields)


PAUSES = {
    "a running job is asked to pause and runs until its checkpoint": Row(
        world(_running(runs=[run()])),
        PAUSE,
        world(_running(runs=[run()], pause_requested="pause-train.yaml"), intake=CONTROL),
    ),
    "a second pause keeps the first request": Row(
        world(_running(runs=[run()], pause_requested="first.yaml")),
        PAUSE,
        world(_running(runs=[run()], pause_requested="first.yaml"), intake=CONTROL),
    ),
    **{
        f"a {other} job is left as it is": Row(
            world(job(state=other, reason="r")),
            PAUSE,
            world(job(state=other, reason="r"), intake=CONTROL),
        )
        for other in ("queued", "paused", "succeeded", "cancelled")
    },
    "an unknown job is only counted": Row(
        world(), PauseRequested(drop="p1", job_id=9, source="x"), world(intake=CONTROL)
    ),
}

PAUSED_RUNS = {
    "the pause's exit holds the job paused at its checkpoint, naming the request": Row(
        world(_running(runs=[run(progress=STEP_20)], pause_requested="pause-train.yaml")),
        PAUSED_EXIT,
        world(
            _running(
                runs=[run(progress=STEP_20, exit=PAUSED_EXIT, ended_ts=T)],
                state="paused",
                reason=PAUSED_REASON,
            )
        ),
    ),
    "a run that ends otherwise forgets the pause request": Row(
        world(_running(runs=[run()], pause_requested="pause-train.yaml")),
        RunExited(job_id=1, attempt=1, outcome="succeeded", returncode=0, final_checkpoint=CKPT),
        world(
            _running(
                runs=[
                    run(
                        exit=RunExited(
                            job_id=1, attempt=1, outcome="succeeded", returncode=0, final_checkpoint=CKPT
                        ),
                        ended_ts=T,
                    )
                ],
                state="succeeded",
                ended_ts=T,
                final_checkpoint=CKPT,
            )
        ),
    ),
}

RESUMES = {
    "a paused job is queued again with its inputs resolved": Row(
        world(_running(state="paused", reason=PAUSED_REASON, runs=[run(ended_ts=1500.0)]), **HERE),
        RESUME,
        world(_running(state="queued", runs=[run(ended_ts=1500.0)]), intake=CONTROL, **HERE),
    ),
    **{
        f"a {other} job is left as it is": Row(
            world(job(state=other, reason="r")),
            RESUME,
            world(job(state=other, reason="r"), intake=CONTROL),
        )
        for other in ("queued", "running", "failed")
    },
}

CANCEL_PAUSED = {
    "a paused job is cancelled at once: it has no run to stop": Row(
        world(_running(state="paused", reason=PAUSED_REASON, runs=[run(ended_ts=1500.0)])),
        CancelRequested(drop="c1", job_id=1, source="cancel-train.yaml"),
        world(
            _running(
                state="cancelled",
                ended_ts=T,
                reason="cancelled by cancel-train.yaml while it was paused",
                runs=[run(ended_ts=1500.0)],
            ),
            intake=CONTROL,
        ),
    ),
}

TABLES = [PAUSES, PAUSED_RUNS, RESUMES, CANCEL_PAUSED]


@pytest.mark.parametrize("row", rows(PAUSES))
def test_pause_requested(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(PAUSED_RUNS))
def test_paused_exit(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(RESUMES))
def test_resume_requested(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(CANCEL_PAUSED))
def test_cancel_of_a_paused_job(row: Row) -> None:
    check(row)


PRUNE = CheckpointPruned(job_id=1, attempt=1, path=CKPT_10, bytes=100, reason="keep_checkpoints 1")

PRUNES = {
    "a pruned checkpoint leaves the run's artifacts and is listed as pruned": Row(
        world(_running(runs=[run(artifacts=[CHECKPOINT_10, CHECKPOINT_20])])),
        PRUNE,
        world(_running(runs=[run(artifacts=[CHECKPOINT_20], pruned=[CKPT_10])])),
    ),
    "a deletion recorded twice is listed once": Row(
        world(_running(runs=[run(artifacts=[CHECKPOINT_20], pruned=[CKPT_10])])),
        PRUNE,
        world(_running(runs=[run(artifacts=[CHECKPOINT_20], pruned=[CKPT_10])])),
    ),
    "an unknown attempt changes nothing": Row(
        world(_running(runs=[run()])),
        PRUNE.model_copy(update={"attempt": 2}),
        world(_running(runs=[run()])),
    ),
}

TABLES.append(PRUNES)


@pytest.mark.parametrize("row", rows(PRUNES))
def test_checkpoint_pruned(row: Row) -> None:
    check(row)


PREEMPT = JobPreempted(job_id=1, attempt=1, by=2, reason="job urgent needs 1 GPU(s) that job train holds")
PREEMPTED_EXIT = PAUSED_EXIT

PREEMPTS = {
    "a running preemptible job is asked to pause for the other job": Row(
        world(_running(runs=[run()])),
        PREEMPT,
        world(_running(runs=[run()], pause_requested="preemption by job 2", preempted_by=2)),
    ),
    "a job already pausing is left as it is": Row(
        world(_running(runs=[run()], pause_requested="p.yaml")),
        PREEMPT,
        world(_running(runs=[run()], pause_requested="p.yaml")),
    ),
    "another attempt changes nothing": Row(
        world(_running(runs=[run()])),
        PREEMPT.model_copy(update={"attempt": 2}),
        world(_running(runs=[run()])),
    ),
    "the preempted run's pause queues it again to resume by itself": Row(
        world(
            _running(runs=[run(progress=STEP_20)], pause_requested="preemption by job 2", preempted_by=2),
            **HERE,
        ),
        PREEMPTED_EXIT,
        world(
            _running(
                runs=[run(progress=STEP_20, exit=PREEMPTED_EXIT, ended_ts=T)],
                state="queued",
                reason="preempted by job 2; resumes from checkpoint-20 when GPUs free up",
            ),
            **HERE,
        ),
    ),
}

TABLES.append(PREEMPTS)


@pytest.mark.parametrize("row", rows(PREEMPTS))
def test_job_preempted(row: Row) -> None:
    check(row)
