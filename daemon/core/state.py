"""The state's values: what a fold over the log builds, and its JSON form for snapshots and the API.

The fold itself (daemon.core.fold) is the only writer of these objects; everyone else reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter

from daemon.core.events import ArtifactRecord, GpuSeen, JobProgress, RunExited, RunServing

__all__ = [
    "LIVE",
    "STATE_SCHEMA",
    "TERMINAL",
    "WAITING",
    "DaemonInfo",
    "Dataset",
    "IntakeCounts",
    "Job",
    "JobState",
    "RejectedDrop",
    "Run",
    "State",
    "Validation",
    "state_from_json",
    "state_to_json",
]

STATE_SCHEMA = 8
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
class RejectedDrop:
    """The newest rejected drop of a dataset name, so a job waiting for that name can say why it waits."""

    filename: str
    kept_as: str
    """Its name under the inbox's rejected/, beside `kept_as`.error.txt."""
    ts: float


@dataclass(slots=True)
class IntakeCounts:
    datasets: int = 0
    jobs: int = 0
    controls: int = 0
    duplicates: int = 0
    rejected: int = 0


JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted", "paused"]
"""Every state the fold gives a job: `queued` until it starts, `running` while an attempt runs, one of
the three ends, `interrupted` when a reboot stopped an attempt that resumes from its checkpoint, or
`paused` when a pause stopped it at a checkpoint it resumes from once a person says so."""

LIVE: tuple[JobState, ...] = ("queued", "running", "interrupted", "paused")
"""Job states in which a name is taken and the same job file counts as a duplicate."""
TERMINAL: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
WAITING: tuple[JobState, ...] = ("queued", "interrupted")
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
    secrets: dict[str, str] = field(default_factory=dict)
    """The run's secrets by reference (`env:NAME`, `file:/path`), never a value: an attempt the
    daemon submits again after a restart (Slurm) resolves them as its first start did."""
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
    pruned: list[str] = field(default_factory=list)
    """Checkpoints the retention rules deleted (absolute paths)."""
    slurm_job_id: int | None = None
    """The Slurm job running this attempt (`[executor] kind = "slurm"`), once sbatch accepted it."""
    slurm_state: str | None = None
    slurm_reason: str | None = None
    slurm_nodes: str = ""


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
    state: JobState = "queued"
    reason: str = ""
    """Why a queued job is not running yet, or how a finished one ended, for a person to read."""
    blocked: str = ""
    """Why its inputs keep it from starting (a dataset missing or of the wrong format); the
    scheduler passes this on as the waiting reason."""
    inputs: dict[str, str | None] = field(default_factory=dict)
    """Dataset name -> the sha256 it resolves to now (None: not dropped yet, or unusable)."""
    cancel_requested: bool = False
    pause_requested: str | None = None
    """Who asked the running attempt to pause (a control file, or a preemption), until it ends."""
    preempted_by: int | None = None
    """The job whose preemption pauses the running attempt: it is queued again, not held paused."""
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
    from_scratch: bool = False
    """A person asked that the next attempt start over rather than continue from a checkpoint."""
    best_eval: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Each evaluation metric's best value over every attempt, and its step: the lowest of a loss,
    the highest of the others."""

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
    rejected_datasets: dict[str, RejectedDrop] = field(default_factory=dict)
    """Dataset name -> its newest rejected drop, until a drop of that name is accepted."""
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


_STATE_ADAPTER: TypeAdapter[State] = TypeAdapter(State)


def state_to_json(state: State) -> str:
    return _STATE_ADAPTER.dump_json(state).decode()


def state_from_json(text: str | bytes) -> State:
    return _STATE_ADAPTER.validate_json(text)
