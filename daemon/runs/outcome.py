"""How an attempt ended, decided from what the runner found: succeeded, failed (and why, and
whether the job runs again) or cancelled. Pure: the runner collects, this decides, the log records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon.core.events import FailureRecord, RunExited, RunInterrupted
from daemon.core.state import Job, Run
from daemon.runs.swift.artifacts import Artifact, final_checkpoint, final_model
from daemon.runs.swift.failures import Failure, classify_failure

__all__ = ["EVIDENCE_LINES", "RESUMABLE_TASKS", "RunEnd", "exit_event", "interrupted_event"]

EVIDENCE_LINES = 30
"""Lines of the log's end kept in RunExited: the error and what led to it, for people."""

RESUMABLE_TASKS = frozenset({"sft", "pretrain", "rlhf"})
"""Training: a checkpoint holds the weights, the optimizer and the step, so a later attempt goes on
from it (`--resume_from_checkpoint`); an export or a deployment just runs again."""


@dataclass(frozen=True)
class RunEnd:
    """How an attempt ended, as far as its files and its process tell."""

    returncode: int | None
    stopped: str | None
    """"cancel", "timeout" or "shutdown" when the supervisor stopped swift."""
    error: str | None
    """Why the run could not start, or why its end is unknown (its supervisor vanished)."""
    log_tail: Sequence[str]
    artifacts: Sequence[Artifact]
    output_dir: Path
    duration_s: float | None
    interrupted: bool = False
    """The machine rebooted under the run: its processes are gone and its exit was never written."""
    failure: Failure | None = None
    """A failure class the executor itself saw (Slurm's NODE_FAIL, OUT_OF_MEMORY); None: decided
    from the exit status and the log."""
    paused: bool = False
    """The daemon asked the run to pause (its run folder holds the pause file)."""
    hang: str | None = None
    """Why the daemon stopped the run as hung (its step stopped advancing)."""


def _absolute(output_dir: Path, artifact: Artifact | None) -> str | None:
    return None if artifact is None else str(output_dir / artifact.path)


def _failure(end: RunEnd, gpu_shared: bool) -> Failure:
    if end.failure is not None and end.stopped is None:
        return end.failure
    if end.returncode is None and end.stopped is None:
        return Failure("unknown", False, end.error or "the run's end is unknown")
    if end.error is not None and end.returncode == 127:
        return Failure("unknown", False, end.error)
    return classify_failure(
        end.log_tail,
        returncode=end.returncode,
        cancelled=end.stopped == "cancel",
        timed_out=end.stopped == "timeout",
        gpu_shared=gpu_shared,
    )


def exit_event(job: Job, attempt: int, end: RunEnd) -> RunExited:
    """The RunExited to record; `retry` follows the job's `retries` for transient failures (an
    out-of-memory is one when the run's GPU was shared, GpuShared), and a run the daemon stopped on
    its way down runs again when a daemon is back."""
    base = {
        "job_id": job.id,
        "attempt": attempt,
        "returncode": end.returncode,
        "signal": -end.returncode if end.returncode is not None and end.returncode < 0 else None,
        "stopped": end.stopped,
        "log_tail": list(end.log_tail[-EVIDENCE_LINES:]),
        "duration_s": end.duration_s,
    }
    # GpuShared folds into the job's current run only, as every run event does
    run = job.run if job.run is not None and job.run.attempt == attempt else None
    if end.returncode == 0:  # swift finished; a stop that raced its exit changed nothing
        checkpoint = _absolute(end.output_dir, final_checkpoint(end.artifacts))
        model = _absolute(end.output_dir, final_model(end.artifacts))
        if end.paused and end.stopped is None and not _finished(run):
            # the pause callback saved a checkpoint and ended the training early: exit 0 all the same
            return RunExited(**base | {"stopped": "pause"}, outcome="paused", final_checkpoint=checkpoint)
        if checkpoint is None and run is not None and run.resume_from is not None:
            # it resumed from the last step, so it had nothing left to train or save
            checkpoint, model = run.resume_from, model or _full_model(job, run.resume_from)
        return RunExited(**base, outcome="succeeded", final_checkpoint=checkpoint, final_model=model)
    hung = Failure("hung", True, end.hang) if end.hang is not None else None
    failure = hung or _failure(end, run is not None and bool(run.gpu_shared))
    record = FailureRecord(**asdict(failure))
    if end.stopped == "cancel":
        return RunExited(**base, outcome="cancelled", failure=record)
    retries = job.spec.get("retries")
    budget = retries if isinstance(retries, int) else 0
    retry = end.stopped == "shutdown" or (failure.transient and job.auto_retries < budget)
    return RunExited(**base, outcome="failed", failure=record, retry=retry)


def _finished(run: Run | None) -> bool:
    """Whether the run's last recorded step is its last step: a pause that came after the training's
    end changed nothing."""
    progress = None if run is None else run.progress
    return progress is not None and 0 < progress.max_steps <= progress.step


def _full_model(job: Job, checkpoint: str) -> str | None:
    """`checkpoint` again when an earlier attempt recorded it as a full-weight checkpoint (a model)."""
    kinds = {a.kind for run in job.runs for a in run.artifacts if a.path == checkpoint}
    return checkpoint if kinds == {"checkpoint"} else None


def interrupted_event(job: Job, attempt: int, end: RunEnd) -> RunInterrupted:
    """A reboot ended the run: training continues from its last complete checkpoint, else from
    where the run itself had continued from, if anywhere."""
    resume = None
    if job.spec.get("task") in RESUMABLE_TASKS:
        resume = _absolute(end.output_dir, final_checkpoint(end.artifacts))
        run = job.run
        if resume is None and run is not None and run.attempt == attempt:
            resume = run.resume_from
    reason = f"the machine rebooted during attempt {attempt}"
    return RunInterrupted(job_id=job.id, attempt=attempt, reason=reason, resume_from=resume)
