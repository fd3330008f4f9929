"""Transition tables for the Slurm executor's events: SlurmSubmitted records the Slurm job id and
where the attempt's output begins; SlurmJobState shows Slurm's pending reason as the job's reason,
clears it once the job runs, and marks the run started then."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.core.events import SlurmJobState, SlurmSubmitted
from daemon.core.state import Job, JobState, Run
from tests.fold_world import Row, T, check, job, rows, run, world


def running(*runs_: Run, state: JobState = "running", **fields: Any) -> Job:
    return job(state=state, attempts=len(runs_), started_ts=1500.0, runs=list(runs_), **fields)


SUBMIT = SlurmSubmitted(job_id=1, attempt=1, slurm_job_id=7, name="llmtraind-abcd-1-1", log_offset=42)
SUBMITTED = {
    "the Slurm job id and the log offset are recorded": Row(
        world(running(run())), SUBMIT, world(running(run(slurm_job_id=7, log_offset=42)))
    ),
    "an older attempt's changes nothing": Row(
        world(running(run(1), run(2))), SUBMIT, world(running(run(1), run(2)))
    ),
}

PENDING = SlurmJobState(job_id=1, attempt=1, slurm_job_id=7, state="PENDING", reason="Resources")
RUNNING = SlurmJobState(job_id=1, attempt=1, slurm_job_id=7, state="RUNNING", nodes="n[1-2]")
STATES = {
    "pending shows Slurm's reason as the job's": Row(
        world(running(run())),
        PENDING,
        world(
            running(
                run(slurm_job_id=7, slurm_state="PENDING", slurm_reason="Resources"),
                reason="Slurm job 7 is pending (Resources)",
            )
        ),
    ),
    "running clears the reason and starts the run": Row(
        world(running(run(slurm_job_id=7, slurm_state="PENDING"), reason="Slurm job 7 is pending")),
        RUNNING,
        world(running(run(slurm_job_id=7, slurm_state="RUNNING", slurm_nodes="n[1-2]", started_ts=T))),
    ),
    "a later state keeps the nodes and the start": Row(
        world(running(run(slurm_job_id=7, slurm_state="RUNNING", slurm_nodes="n1", started_ts=1.0))),
        SlurmJobState(job_id=1, attempt=1, slurm_job_id=7, state="COMPLETING"),
        world(running(run(slurm_job_id=7, slurm_state="COMPLETING", slurm_nodes="n1", started_ts=1.0))),
    ),
    "an ended job's reason is left alone": Row(
        world(running(run(), state="failed", reason="boom")),
        PENDING,
        world(
            running(
                run(slurm_job_id=7, slurm_state="PENDING", slurm_reason="Resources"),
                state="failed",
                reason="boom",
            )
        ),
    ),
    "an older attempt's changes nothing": Row(
        world(running(run(1), run(2))), PENDING, world(running(run(1), run(2)))
    ),
}

TABLES = [SUBMITTED, STATES]


@pytest.mark.parametrize("row", rows(SUBMITTED))
def test_slurm_submitted(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(STATES))
def test_slurm_job_state(row: Row) -> None:
    check(row)
