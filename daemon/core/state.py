"""State is a fold over the log: `apply(state, recorded)` is the only way it changes.

`apply` is deterministic and does no I/O; it updates the accumulator it is given and returns it
(a reduce's accumulator, owned by the fold), which keeps a replay of a million events linear.
Callers that need an older state fold again or load a snapshot; nobody else mutates a State.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from daemon.core.events import (
    ArtifactRecord,
    ArtifactsFound,
    CancelRequested,
    ConfigReloaded,
    DaemonStarted,
    DaemonStopped,
    DatasetAccepted,
    DatasetValidating,
    DuplicateDropped,
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

__all__ = [
    "LIVE",
    "STATE_SCHEMA",
    "TERMINAL",
    "WAITING",
    "DaemonInfo",
    "Dataset",
    "IntakeCounts",
    "Job",
    "Run",
    "State",
    "Validation",
    "apply",
    "fold",
    "state_from_json",
    "state_to_json",
]

STATE_SCHEMA = 3
"""Bump when State's shape changes: snapshots of another schema are ignored and the log is replayed."""


@dataclass(slots=True)
class DaemonInfo:
    version: str
    pid: int
    host: str
    boot_id: str
    config_digest: str
    started_ts: float
    stopped_ts: float | None = None
    gpus: list[GpuSeen] = field(default_factory=list)


@dataclass(slots=True)
class Dataset:
    """One accepted content (by sha256); `names` are every name it was dropped under."""

    sha256: str
    name: str
    filename: str
    format: str
    task_types: list[str]
    rlhf_types: list[str]
    rows: int
    bytes: int
    stats: dict[str, Any]
    lora_hints: dict[str, Any] | None
    accepted_ts: float
    accepted_seq: int
    names: list[str] = field(default_factory=list)
    drops: int = 1


@dataclass(slots=True)
class Validation:
    """A dataset still being read: what the original design called upload progress."""

    drop: str
    name: str
    bytes_total: int
    bytes_done: int
    rows_done: int
    ts: float


@dataclass(slots=True)
class IntakeCounts:
    datasets: int = 0
    jobs: int = 0
    controls: int = 0
    duplicates: int = 0
    rejected: int = 0


LIVE = ("queued", "running", "interrupted")
"""Job states in which a name is taken and the same job file counts as a duplicate."""
TERMINAL = ("succeeded", "failed", "cancelled")
WAITING = ("queued", "interrupted")
"""States in which a job waits for the scheduler; `interrupted` carries a checkpoint to resume."""


@dataclass(slots=True)
class Run:
    """One attempt at a job: what was decided (JobStarted), then what was seen of it."""

    attempt: int
    gpu_uuids: list[str]
    gpu_indices: list[int]
    argv: list[str]
    env: dict[str, str]
    unset_env: list[str]
    command: str
    run_dir: str
    output_dir: str
    log: str
    inputs: dict[str, str]
    resume_from: str | None
    timeout_s: float | None
    ends_by: float | None
    placed_ts: float
    pid: int | None = None
    start_ticks: int | None = None
    boot_id: str | None = None
    child_pid: int | None = None
    session: int | None = None
    log_offset: int = 0
    started_ts: float | None = None
    progress: JobProgress | None = None
    """The last train or summary record kept."""
    last_eval: JobProgress | None = None
    metrics_count: int = 0
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    exit: RunExited | None = None
    ended_ts: float | None = None
    gpu_shared: list[int] = field(default_factory=list)
    """Indices of this run's GPUs on which a foreign process was seen (GpuShared)."""
    serving: RunServing | None = None
    """Where a deploy run answers, once it does."""


@dataclass(slots=True)
class Job:
    id: int
    name: str
    project: str
    filename: str
    sha256: str
    task: str
    tuner: str | None
    rlhf_type: str | None
    feeds: str | None
    datasets: list[str]
    priority: int
    after: list[str]
    gpus: int | None
    gpu_ids: list[int | str]
    min_free_memory_mib: int | None
    spec: dict[str, Any]
    submitted_ts: float
    submitted_seq: int
    state: str = "queued"
    reason: str = ""
    """Why a queued job is not running yet, or how a finished one ended, for a person to read."""
    blocked: str = ""
    """Why its inputs keep it from starting (a dataset missing or of the wrong format); the
    scheduler passes this on as the waiting reason."""
    inputs: dict[str, str | None] = field(default_factory=dict)
    """Dataset name -> the sha256 it resolves to now (None: not dropped yet, or unusable)."""
    cancel_requested: bool = False
    attempts: int = 0
    auto_retries: int = 0
    """Attempts started by the `retries` rule since the job was last queued by a person."""
    runs: list[Run] = field(default_factory=list)
    started_ts: float | None = None
    ended_ts: float | None = None
    final_checkpoint: str | None = None
    final_model: str | None = None
    resume_from: str | None = None
    """The checkpoint the next attempt continues from, when a reboot interrupted the last one."""

    @property
    def run(self) -> Run | None:
        """The current or last attempt."""
        return self.runs[-1] if self.runs else None


@dataclass(slots=True)
class State:
    """Plain slotted dataclasses, not pydantic models: the fold assigns millions of attributes on a
    long replay, and pydantic's validating __setattr__ made that the dominant cost."""

    schema_version: int = STATE_SCHEMA
    last_seq: int = 0
    daemon: DaemonInfo | None = None
    daemon_starts: int = 0
    unclean_stops: int = 0
    """Starts that found the previous daemon had not recorded DaemonStopped (a crash or kill -9)."""
    datasets: dict[str, Dataset] = field(default_factory=dict)
    """By sha256."""
    dataset_names: dict[str, str] = field(default_factory=dict)
    """Name -> sha256 of the newest content dropped under (or aliased to) that name."""
    validating: dict[str, Validation] = field(default_factory=dict)
    """By drop id, until the drop's terminal event."""
    jobs: dict[int, Job] = field(default_factory=dict)
    job_names: dict[str, int] = field(default_factory=dict)
    """Name -> id of the newest job of that name."""
    waiting_for: dict[str, list[int]] = field(default_factory=dict)
    """Dataset name -> queued jobs that read it: a new drop of that name re-resolves them."""
    next_job_id: int = 1
    intake: IntakeCounts = field(default_factory=IntakeCounts)

    def find_job(self, ref: str) -> Job | None:
        """A job by id (digits) or by name (the newest job of that name)."""
        if ref.isdigit() and int(ref) in self.jobs:
            return self.jobs[int(ref)]
        job_id = self.job_names.get(ref)
        return None if job_id is None else self.jobs[job_id]

    def live_job(self, name: str) -> Job | None:
        job = self.find_job(name)
        return job if job is not None and job.name == name and job.state in LIVE else None


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


def _resolve(state: State, job: Job, name: str) -> str | None:
    """Point the job's input `name` at the dataset now under that name; the reason if it cannot read it."""
    sha = state.dataset_names.get(name)
    if sha is None:
        job.inputs[name] = None
        return f"waiting for dataset {name}"
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
            f"drop a fitting {name}.jsonl"
        )
    job.inputs[name] = sha
    return None


def _refresh_inputs(state: State, job: Job) -> None:
    reasons = [r for name in job.datasets if (r := _resolve(state, job, name)) is not None]
    job.blocked = job.reason = "; ".join(reasons)


def _dataset_named(state: State, name: str, sha: str) -> None:
    state.dataset_names[name] = sha
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
    if job.state in WAITING:
        job.state, job.ended_ts = "cancelled", rec.ts
        job.reason = f"cancelled by {ev.source} while it waited to run"
    elif job.state in LIVE:
        job.cancel_requested = True


def _retry_requested(state: State, _: Recorded, ev: RetryRequested) -> None:
    _end_drop(state, ev.drop)
    state.intake.controls += 1
    job = state.jobs.get(ev.job_id)
    if job is None or job.state not in ("failed", "cancelled"):
        return
    job.state, job.ended_ts, job.cancel_requested, job.auto_retries = "queued", None, False, 0
    _refresh_inputs(state, job)


def _rejected(state: State, _: Recorded, ev: FileRejected) -> None:
    _end_drop(state, ev.drop)
    state.intake.rejected += 1


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


def _progress(state: State, rec: Recorded, ev: JobProgress) -> None:
    _, run = _run_of(state, ev.job_id, ev.attempt)
    if run is None:
        return
    run.metrics_count += 1
    if ev.kind == "eval":
        run.last_eval = ev
    else:
        run.progress = ev


def _artifacts(state: State, rec: Recorded, ev: ArtifactsFound) -> None:
    _, run = _run_of(state, ev.job_id, ev.attempt)
    if run is not None:
        run.artifacts = list(ev.artifacts)


def _run_exited(state: State, rec: Recorded, ev: RunExited) -> None:
    job, run = _run_of(state, ev.job_id, ev.attempt)
    if job is None or run is None:
        return
    run.exit, run.ended_ts = ev, rec.ts
    failure = ev.failure.reason if ev.failure is not None else ""
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
    FileRejected: _rejected,
    JobProgress: _progress,
    JobsWaiting: _waiting,
    JobStarted: _job_started,
    RunStarted: _run_started,
    ArtifactsFound: _artifacts,
    RunExited: _run_exited,
    RunInterrupted: _run_interrupted,
    GpuShared: _gpu_shared,
    RunServing: _run_serving,
    JobFailed: _job_failed,
    DaemonStarted: _daemon_started,
    DaemonStopped: _daemon_stopped,
    ConfigReloaded: _config_reloaded,
}
"""Event class -> its fold step; every event type has one (a test checks)."""


def apply(state: State, rec: Recorded) -> State:
    """Fold one recorded event into `state` and return it."""
    _FOLDS[type(rec.event)](state, rec, rec.event)
    state.last_seq = rec.seq
    return state


_STATE_ADAPTER: TypeAdapter[State] = TypeAdapter(State)


def state_to_json(state: State) -> str:
    return _STATE_ADAPTER.dump_json(state).decode()


def state_from_json(text: str | bytes) -> State:
    return _STATE_ADAPTER.validate_json(text)


def fold(events: Iterable[Recorded], state: State | None = None) -> State:
    acc = State() if state is None else state
    for rec in events:
        acc = apply(acc, rec)
    return acc
