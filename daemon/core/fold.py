"""State is a fold over the log: `apply(state, recorded)` is the only way it changes.

`apply` is deterministic and does no I/O; it updates the accumulator it is given and returns it
(a reduce's accumulator, owned by the fold), which keeps a replay of a million events linear.
Callers that need an older state fold again or load a snapshot; nobody else mutates a State.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from daemon.core.drops import dataset_name
from daemon.core.events import (
    ArtifactsFound,
    CancelRequested,
    CheckpointPruned,
    ConfigReloaded,
    DaemonStarted,
    DaemonStopped,
    DatasetAccepted,
    DatasetValidating,
    DuplicateDropped,
    FileRejected,
    GpuShared,
    JobFailed,
    JobPreempted,
    JobProgress,
    JobStarted,
    JobSubmitted,
    JobsWaiting,
    NotifyCursor,
    NotifyDelivered,
    NotifyGivenUp,
    PauseRequested,
    Recorded,
    ResumeRequested,
    RetryRequested,
    RunExited,
    RunInterrupted,
    RunServing,
    RunStarted,
    SlurmJobState,
    SlurmSubmitted,
)
from daemon.core.state import (
    LIVE,
    WAITING,
    DaemonInfo,
    Dataset,
    Job,
    RejectedDrop,
    Run,
    State,
    Validation,
)

__all__ = ["apply", "fold"]


def _daemon_started(state: State, rec: Recorded, ev: DaemonStarted) -> None:
    if state.daemon is not None and state.daemon.stopped_ts is None:
        state.unclean_stops += 1
    state.daemon_starts += 1
    state.validating.clear()  # the reading died with the old process; its drops are redone
    state.daemon = DaemonInfo(
        version=ev.version,
        pid=ev.pid,
        host=ev.host,
        boot_id=ev.boot_id,
        config_digest=ev.config_digest,
        started_ts=rec.ts,
        gpus=list(ev.gpus),
    )


def _daemon_stopped(state: State, rec: Recorded, ev: DaemonStopped) -> None:
    if state.daemon is not None and state.daemon.pid == ev.pid:
        state.daemon.stopped_ts = rec.ts


def _config_reloaded(state: State, rec: Recorded, ev: ConfigReloaded) -> None:
    if state.daemon is not None:
        state.daemon.config_digest = ev.config_digest


def _no_state(state: State, rec: Recorded, ev: object) -> None:
    """Notification cursors are the notifier's, read from their own streams; the state keeps none."""


def _rejected_note(state: State, name: str) -> str:
    """What became of the newest drop of `name`, when it was rejected: the person waiting has a file
    to fix, not a drop to wait for. UTC, so a replay anywhere folds the same words."""
    drop = state.rejected_datasets.get(name)
    if drop is None:
        return ""
    at = time.strftime("%H:%M UTC", time.gmtime(drop.ts))
    return f" \u2014 {drop.filename} was rejected at {at}, see inbox/rejected/{drop.kept_as}.error.txt"


def _resolve(state: State, job: Job, name: str) -> str | None:
    """Point the job's input `name` at the dataset now under that name; the reason if it cannot read it."""
    sha = state.dataset_names.get(name)
    if sha is None:
        job.inputs[name] = None
        return f"waiting for dataset {name}{_rejected_note(state, name)}"
    ds = state.datasets[sha]
    fits = job.feeds is None or (
        job.feeds in ds.task_types
        and (job.feeds != "rl" or job.rlhf_type is None or job.rlhf_type in ds.rlhf_types)
    )
    if not fits:
        job.inputs[name] = None
        what = f"{job.feeds} ({job.rlhf_type})" if job.rlhf_type else job.feeds
        return (
            f"dataset {name} is {ds.format} data, which feeds {', '.join(ds.task_types)}, not {what}; "
            f"drop a fitting {name}.jsonl{_rejected_note(state, name)}"
        )
    job.inputs[name] = sha
    return None


def _refresh_inputs(state: State, job: Job) -> None:
    reasons = [r for name in job.datasets if (r := _resolve(state, job, name)) is not None]
    job.blocked = job.reason = "; ".join(reasons)


def _dataset_named(state: State, name: str, sha: str) -> None:
    state.dataset_names[name] = sha
    state.rejected_datasets.pop(name, None)
    _reresolve(state, name)


def _reresolve(state: State, name: str) -> None:
    """Resolve again the queued jobs that read `name`, after a drop of that name was recorded."""
    for job_id in state.waiting_for.get(name, ()):
        job = state.jobs[job_id]
        if job.state == "queued":
            _refresh_inputs(state, job)


def _end_drop(state: State, drop: str) -> None:
    state.validating.pop(drop, None)


_ENVELOPE = {"type", "drop"}
"""Intake event fields that are about the drop, not the dataset or job it made (the rest map 1:1)."""


def _dataset_accepted(state: State, rec: Recorded, ev: DatasetAccepted) -> None:
    _end_drop(state, ev.drop)
    state.intake.datasets += 1
    known = state.datasets.get(ev.sha256)
    if known is None:
        state.datasets[ev.sha256] = Dataset(
            **ev.model_dump(exclude=_ENVELOPE), accepted_ts=rec.ts, accepted_seq=rec.seq, names=[ev.name]
        )
    elif ev.name not in known.names:
        known.names.append(ev.name)
    _dataset_named(state, ev.name, ev.sha256)


def _duplicate(state: State, _: Recorded, ev: DuplicateDropped) -> None:
    _end_drop(state, ev.drop)
    state.intake.duplicates += 1
    ds = state.datasets.get(ev.sha256)
    if ds is not None:
        ds.drops += 1
        if ev.alias is not None and ev.alias not in ds.names:
            ds.names.append(ev.alias)
        if ev.alias is not None:
            _dataset_named(state, ev.alias, ev.sha256)
        elif ev.kind == "dataset":
            name = dataset_name(ev.filename)
            if state.rejected_datasets.pop(name, None) is not None:
                _reresolve(state, name)


def _job_submitted(state: State, rec: Recorded, ev: JobSubmitted) -> None:
    _end_drop(state, ev.drop)
    state.intake.jobs += 1
    job = Job(**ev.model_dump(exclude=_ENVELOPE), submitted_ts=rec.ts, submitted_seq=rec.seq)
    state.jobs[ev.id] = job
    state.job_names[ev.name] = ev.id
    state.next_job_id = max(state.next_job_id, ev.id + 1)
    for name in job.datasets:
        state.waiting_for.setdefault(name, []).append(ev.id)
    _refresh_inputs(state, job)


def _cancel_requested(state: State, rec: Recorded, ev: CancelRequested) -> None:
    _end_drop(state, ev.drop)
    state.intake.controls += 1
    job = state.jobs.get(ev.job_id)
    if job is None:
        return
    if job.state in WAITING or job.state == "paused":
        while_ = "while it waited to run" if job.state in WAITING else "while it was paused"
        job.state, job.ended_ts = "cancelled", rec.ts
        job.reason = f"cancelled by {ev.source} {while_}"
    elif job.state in LIVE:
        job.cancel_requested = True


def _retry_requested(state: State, _: Recorded, ev: RetryRequested) -> None:
    _end_drop(state, ev.drop)
    state.intake.controls += 1
    job = state.jobs.get(ev.job_id)
    if job is None or job.state not in ("failed", "cancelled"):
        return
    job.state, job.ended_ts, job.cancel_requested, job.auto_retries = "queued", None, False, 0
    job.from_scratch = ev.from_scratch
    if ev.from_scratch:
        job.resume_from = None
    _refresh_inputs(state, job)


def _pause_requested(state: State, _: Recorded, ev: PauseRequested) -> None:
    _end_drop(state, ev.drop)
    state.intake.controls += 1
    job = state.jobs.get(ev.job_id)
    if job is not None and job.state == "running" and job.pause_requested is None:
        job.pause_requested = ev.source


def _preempted(state: State, _: Recorded, ev: JobPreempted) -> None:
    job, run = _run_of(state, ev.job_id, ev.attempt)
    if job is not None and run is not None and job.state == "running" and job.pause_requested is None:
        job.pause_requested, job.preempted_by = f"preemption by job {ev.by}", ev.by


def _resume_requested(state: State, _: Recorded, ev: ResumeRequested) -> None:
    _end_drop(state, ev.drop)
    state.intake.controls += 1
    job = state.jobs.get(ev.job_id)
    if job is None or job.state != "paused":
        return
    job.state = "queued"
    _refresh_inputs(state, job)


def _rejected(state: State, rec: Recorded, ev: FileRejected) -> None:
    _end_drop(state, ev.drop)
    state.intake.rejected += 1
    if ev.kind == "dataset":
        name = dataset_name(ev.filename)
        state.rejected_datasets[name] = RejectedDrop(ev.filename, ev.kept_as, rec.ts)
        _reresolve(state, name)


def _validating(state: State, rec: Recorded, ev: DatasetValidating) -> None:
    state.validating[ev.drop] = Validation(
        ev.drop, ev.name, ev.bytes_total, ev.bytes_done, ev.rows_done, rec.ts
    )


def _job_started(state: State, rec: Recorded, ev: JobStarted) -> None:
    job = state.jobs.get(ev.job_id)
    if job is None:
        return
    job.runs.append(Run(**ev.model_dump(exclude={"type", "job_id"}), placed_ts=rec.ts))
    job.state, job.reason, job.attempts, job.resume_from = "running", "", ev.attempt, None
    job.from_scratch, job.pause_requested, job.preempted_by = False, None, None
    if job.started_ts is None:
        job.started_ts = rec.ts


def _run_of(state: State, job_id: int, attempt: int) -> tuple[Job, Run] | tuple[None, None]:
    job = state.jobs.get(job_id)
    run = job.run if job is not None else None
    if job is None or run is None or run.attempt != attempt:
        return None, None
    return job, run


def _run_started(state: State, rec: Recorded, ev: RunStarted) -> None:
    _, run = _run_of(state, ev.job_id, ev.attempt)
    if run is not None:
        run.pid, run.start_ticks, run.boot_id = ev.pid, ev.start_ticks, ev.boot_id
        run.child_pid, run.session, run.log_offset, run.started_ts = (
            ev.child_pid,
            ev.session,
            ev.log_offset,
            rec.ts,
        )


def _slurm_submitted(state: State, rec: Recorded, ev: SlurmSubmitted) -> None:
    _, run = _run_of(state, ev.job_id, ev.attempt)
    if run is not None:
        run.slurm_job_id, run.log_offset = ev.slurm_job_id, ev.log_offset


def _slurm_state(state: State, rec: Recorded, ev: SlurmJobState) -> None:
    job, run = _run_of(state, ev.job_id, ev.attempt)
    if job is None or run is None:
        return
    run.slurm_job_id, run.slurm_state, run.slurm_reason = ev.slurm_job_id, ev.state, ev.reason
    run.slurm_nodes = ev.nodes or run.slurm_nodes
    if ev.state != "PENDING" and run.started_ts is None:
        run.started_ts = rec.ts
    if job.state == "running":
        why = f" ({ev.reason})" if ev.reason else ""
        job.reason = f"Slurm job {ev.slurm_job_id} is pending{why}" if ev.state == "PENDING" else ""


def _progress(state: State, rec: Recorded, ev: JobProgress) -> None:
    job, run = _run_of(state, ev.job_id, ev.attempt)
    if job is None or run is None:
        return
    run.metrics_count += 1
    if ev.kind == "eval":
        run.last_eval = ev
        _keep_best(job.best_eval, ev)
    else:
        run.progress = ev


_NOT_QUALITY = ("_runtime", "_samples_per_second", "_steps_per_second", "_epoch")
"""Timings and counters swift logs beside each evaluation: no better or worse."""


def _lower_is_better(metric: str) -> bool:
    return "loss" in metric or "perplexity" in metric or metric.endswith("_ppl")


def _keep_best(best: dict[str, tuple[float, int]], ev: JobProgress) -> None:
    values = dict(ev.raw)
    if ev.loss is not None:
        values.setdefault("eval_loss", ev.loss)
    for metric, value in values.items():
        if not metric.startswith("eval_") or metric.endswith(_NOT_QUALITY) or value != value:
            continue
        old = best.get(metric)
        if old is None or (value < old[0] if _lower_is_better(metric) else value > old[0]):
            best[metric] = (value, ev.step)


def _artifacts(state: State, rec: Recorded, ev: ArtifactsFound) -> None:
    _, run = _run_of(state, ev.job_id, ev.attempt)
    if run is not None:
        run.artifacts = list(ev.artifacts)


def _pruned(state: State, rec: Recorded, ev: CheckpointPruned) -> None:
    job = state.jobs.get(ev.job_id)
    run = next((r for r in job.runs if r.attempt == ev.attempt), None) if job is not None else None
    if run is not None and ev.path not in run.pruned:
        run.pruned.append(ev.path)
        run.artifacts = [a for a in run.artifacts if a.path != ev.path]


def _run_exited(state: State, rec: Recorded, ev: RunExited) -> None:
    job, run = _run_of(state, ev.job_id, ev.attempt)
    if job is None or run is None:
        return
    run.exit, run.ended_ts = ev, rec.ts
    failure = ev.failure.reason if ev.failure is not None else ""
    asked, job.pause_requested = job.pause_requested, None
    by, job.preempted_by = job.preempted_by, None
    if ev.outcome == "paused" and by is not None:
        job.state = "queued"
        _refresh_inputs(state, job)
        saved = ev.final_checkpoint.rsplit("/", 1)[-1] if ev.final_checkpoint else "its last checkpoint"
        job.reason = job.reason or f"preempted by job {by}; resumes from {saved} when GPUs free up"
        return
    if ev.outcome == "paused":
        step = run.progress.step if run.progress is not None else None
        at = f" at step {step}" if step is not None else ""
        saved = ev.final_checkpoint.rsplit("/", 1)[-1] if ev.final_checkpoint else "its last checkpoint"
        job.state = "paused"
        job.reason = (
            f"paused by {asked or 'a pause request'}{at}; resumes from {saved} (llmtraind resume {job.name})"
        )
        return
    if ev.retry:
        job.state, job.cancel_requested = "queued", False
        if ev.stopped == "shutdown":
            again = f"runs again: the daemon stopped attempt {ev.attempt} when it shut down"
        else:
            job.auto_retries += 1
            again = f"runs again after attempt {ev.attempt} failed: {failure}"
        _refresh_inputs(state, job)
        job.reason = job.reason or again
        return
    job.state, job.ended_ts, job.reason = ev.outcome, rec.ts, failure
    if ev.outcome == "succeeded":
        job.final_checkpoint, job.final_model = ev.final_checkpoint, ev.final_model


def _run_interrupted(state: State, rec: Recorded, ev: RunInterrupted) -> None:
    job, run = _run_of(state, ev.job_id, ev.attempt)
    if job is None or run is None or job.state != "running":
        return
    run.ended_ts = rec.ts
    if ev.resume_from is None:
        job.state, job.ended_ts = "failed", rec.ts
        job.reason = f"{ev.reason}, and it had saved no checkpoint to resume from; retry it to start over"
        return
    job.state, job.cancel_requested, job.resume_from = "interrupted", False, ev.resume_from
    _refresh_inputs(state, job)
    job.reason = job.reason or f"{ev.reason}; runs again from {ev.resume_from.rsplit('/', 1)[-1]}"


def _run_serving(state: State, rec: Recorded, ev: RunServing) -> None:
    _, run = _run_of(state, ev.job_id, ev.attempt)
    if run is not None:
        run.serving = ev


def _gpu_shared(state: State, rec: Recorded, ev: GpuShared) -> None:
    _, run = _run_of(state, ev.job_id, ev.attempt)
    if run is not None:
        run.gpu_shared = sorted({*run.gpu_shared, *ev.gpus})


def _job_failed(state: State, rec: Recorded, ev: JobFailed) -> None:
    job = state.jobs.get(ev.job_id)
    if job is not None and job.state in WAITING:
        job.state, job.ended_ts, job.reason = "failed", rec.ts, ev.reason


def _waiting(state: State, _: Recorded, ev: JobsWaiting) -> None:
    for key, reason in ev.reasons.items():
        job = state.jobs.get(int(key))
        if job is not None and job.state in WAITING:
            job.reason = reason


_FOLDS: dict[type, Callable[[State, Recorded, Any], None]] = {
    DatasetValidating: _validating,
    DatasetAccepted: _dataset_accepted,
    JobSubmitted: _job_submitted,
    DuplicateDropped: _duplicate,
    CancelRequested: _cancel_requested,
    RetryRequested: _retry_requested,
    PauseRequested: _pause_requested,
    ResumeRequested: _resume_requested,
    FileRejected: _rejected,
    JobProgress: _progress,
    JobsWaiting: _waiting,
    JobStarted: _job_started,
    RunStarted: _run_started,
    SlurmSubmitted: _slurm_submitted,
    SlurmJobState: _slurm_state,
    ArtifactsFound: _artifacts,
    CheckpointPruned: _pruned,
    JobPreempted: _preempted,
    RunExited: _run_exited,
    RunInterrupted: _run_interrupted,
    GpuShared: _gpu_shared,
    RunServing: _run_serving,
    JobFailed: _job_failed,
    DaemonStarted: _daemon_started,
    DaemonStopped: _daemon_stopped,
    ConfigReloaded: _config_reloaded,
    NotifyDelivered: _no_state,
    NotifyGivenUp: _no_state,
    NotifyCursor: _no_state,
}
"""Event class -> its fold step; every event type has one (a test checks)."""


def apply(state: State, rec: Recorded) -> State:
    """Fold one recorded event into `state` and return it."""
    _FOLDS[type(rec.event)](state, rec, rec.event)
    state.last_seq = rec.seq
    return state


def fold(events: Iterable[Recorded], state: State | None = None) -> State:
    acc = State() if state is None else state
    for rec in events:
        acc = apply(acc, rec)
    return acc
