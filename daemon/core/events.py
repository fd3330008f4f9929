"""The event catalogue: every fact the daemon records, typed and versioned.

Events are immutable once written. When a shape must change, bump the class's `schema_version` and
register an upcaster from the old version: old rows are never rewritten, they are lifted on read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "EVENT_TYPES",
    "ArtifactRecord",
    "ArtifactsFound",
    "CheckpointPruned",
    "FailureRecord",
    "JobFailed",
    "JobPreempted",
    "JobProgress",
    "JobStarted",
    "JobsWaiting",
    "NotifyCursor",
    "NotifyDelivered",
    "NotifyGivenUp",
    "RunExited",
    "GpuShared",
    "RunInterrupted",
    "RunOutcome",
    "RunServing",
    "RunStarted",
    "SlurmJobState",
    "SlurmSubmitted",
    "CancelRequested",
    "ConfigReloaded",
    "DaemonStarted",
    "DaemonStopped",
    "DatasetAccepted",
    "DatasetValidating",
    "DuplicateDropped",
    "Event",
    "FileKind",
    "FileRejected",
    "GpuSeen",
    "JobSubmitted",
    "NewEvent",
    "Recorded",
    "PauseRequested",
    "ResumeRequested",
    "RetryRequested",
    "decode_event",
    "upcast",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: ClassVar[int] = 1


class GpuSeen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    index: int
    uuid: str
    name: str
    memory_total_mib: int


class DaemonStarted(_Event):
    """A daemon process took the state directory's lock and began serving."""

    type: Literal["DaemonStarted"] = "DaemonStarted"
    version: str
    config_digest: str
    host: str
    pid: int
    boot_id: str
    gpus: list[GpuSeen] = []


class DaemonStopped(_Event):
    """A daemon process stopped cleanly; its absence before the next DaemonStarted means a crash."""

    type: Literal["DaemonStopped"] = "DaemonStopped"
    pid: int
    reason: str


class ConfigReloaded(_Event):
    """SIGHUP: the config file was read again; what changed live and what needs a restart."""

    type: Literal["ConfigReloaded"] = "ConfigReloaded"
    config_digest: str
    applied: list[str]
    refused: list[str]


# -- intake: one terminal event per dropped file, keyed `drop:<drop id>` ---------------------------
#
# A drop id names one claim of one file (its name in inbox/.processing/), so redoing a claim after a
# crash finds its event again, while the same bytes dropped a second time are a new drop: a duplicate.

FileKind = Literal["dataset", "job", "control", "unknown"]


class DatasetValidating(_Event):
    """Progress of a large dataset's validation (the original design's "upload progress")."""

    type: Literal["DatasetValidating"] = "DatasetValidating"
    drop: str
    name: str
    bytes_total: int
    bytes_done: int
    rows_done: int


class DatasetAccepted(_Event):
    """A dropped dataset passed validation; its original and its swift-ready copy are in the blob store."""

    type: Literal["DatasetAccepted"] = "DatasetAccepted"
    drop: str
    name: str
    filename: str
    sha256: str
    format: str
    task_types: list[str]
    rlhf_types: list[str]
    rows: int
    bytes: int
    stats: dict[str, Any]
    lora_hints: dict[str, Any] | None = None


class JobSubmitted(_Event):
    """A dropped job file became job `id`. The fields the scheduler folds over are lifted out of
    `spec` (the canonical spec as JSON, read by the command builder)."""

    type: Literal["JobSubmitted"] = "JobSubmitted"
    drop: str
    id: int
    name: str
    project: str
    filename: str
    sha256: str
    task: str
    tuner: str | None
    rlhf_type: str | None
    """The algorithm an rlhf job runs (swift's default, dpo, when the file names none); None else."""
    feeds: str | None
    """The dataset task type this job reads (sft, lora, pretrain, rl); None when it reads none."""
    datasets: list[str]
    priority: int
    after: list[str]
    gpus: int | None
    gpu_ids: list[int | str]
    min_free_memory_mib: int | None
    spec: dict[str, Any]


class DuplicateDropped(_Event):
    """The same bytes as a known dataset, or as a job still queued or running: nothing new was made.
    A dataset dropped under a new name makes that name another name of the same dataset."""

    type: Literal["DuplicateDropped"] = "DuplicateDropped"
    drop: str
    filename: str
    kind: FileKind
    sha256: str
    dataset: str | None = None
    """The name the bytes were first accepted under."""
    alias: str | None = None
    """The new name, when it differs from every name the dataset already has."""
    job_id: int | None = None


class CancelRequested(_Event):
    type: Literal["CancelRequested"] = "CancelRequested"
    drop: str
    job_id: int
    source: str
    """Where the request came from (the control file's name)."""


class RetryRequested(_Event):
    """Run a failed or cancelled job again: from the last complete checkpoint its attempts left, or
    from the start when `from_scratch` (`retry: {job: X, from: scratch}`)."""

    type: Literal["RetryRequested"] = "RetryRequested"
    drop: str
    job_id: int
    source: str
    from_scratch: bool = False


class PauseRequested(_Event):
    """Stop a running training at its next step with a checkpoint and hold it `paused`, releasing
    its slot or GPUs until `ResumeRequested`."""

    type: Literal["PauseRequested"] = "PauseRequested"
    drop: str
    job_id: int
    source: str


class ResumeRequested(_Event):
    """Queue a paused job again: its next attempt continues from the checkpoint the pause saved."""

    type: Literal["ResumeRequested"] = "ResumeRequested"
    drop: str
    job_id: int
    source: str


class FileRejected(_Event):
    """A dropped file was refused; it is kept as `kept_as` (under the inbox) with `kept_as`.error.txt."""

    type: Literal["FileRejected"] = "FileRejected"
    drop: str
    filename: str
    kind: FileKind
    summary: str
    problems: str
    sha256: str | None = None
    kept_as: str


# -- runs: the scheduler's decisions and what it saw of each attempt, on the job's stream ----------
#
# A decision (JobStarted, JobFailed, JobsWaiting) is recorded before it is acted on; an observation
# (RunStarted, JobProgress, ArtifactsFound, RunExited) as soon as it is seen. Every run event is
# keyed by job, attempt and what it is, so re-recording it after a daemon restart changes nothing.


class JobStarted(_Event):
    """The scheduler gave job `job_id` its resources and fixed the command of attempt `attempt`."""

    type: Literal["JobStarted"] = "JobStarted"
    job_id: int
    attempt: int
    gpu_uuids: list[str]
    """Empty for a CPU slot."""
    gpu_indices: list[int]
    argv: list[str]
    env: dict[str, str]
    """What the run's environment adds to or changes in the daemon's."""
    unset_env: list[str] = []
    """What it removes from the daemon's."""
    secrets: dict[str, str] = {}
    """Variable of the run's environment -> the secret's reference (`env:NAME`, `file:/path`), read
    only when the run starts; a `${VAR}` in argv is replaced by its value then. Never the value."""
    command: str
    """argv and env as one shell line, for people."""
    run_dir: str
    output_dir: str
    log: str
    inputs: dict[str, str]
    """Dataset name -> the sha256 this attempt reads."""
    resume_from: str | None = None
    """The complete checkpoint of an earlier attempt this one continues from (its step count goes on
    from there); None: it starts from the beginning."""
    timeout_s: float | None = None
    ends_by: float | None = None
    """When the run is sure to be over (start + timeout + the stop grace), for backfill."""


class RunStarted(_Event):
    """The attempt's supervisor is running and has started swift; how to find both again."""

    type: Literal["RunStarted"] = "RunStarted"
    job_id: int
    attempt: int
    pid: int
    """The supervisor, leader of the run's session."""
    start_ticks: int
    """The supervisor's start time (field 22 of /proc/<pid>/stat): a reused pid has another."""
    boot_id: str
    child_pid: int
    """swift, leader of its own process group inside the session."""
    session: int
    """The run's session id: a GPU process in this session is ours."""
    log_offset: int
    """Where this attempt's output begins in the job's log."""


class SlurmSubmitted(_Event):
    """sbatch accepted the attempt (`[executor] kind = "slurm"`): recorded before anything else is
    done with it, so a restarted daemon watches this Slurm job and never submits the attempt again."""

    type: Literal["SlurmSubmitted"] = "SlurmSubmitted"
    job_id: int
    attempt: int
    slurm_job_id: int
    name: str
    """The attempt's unique Slurm job name (also its comment)."""
    log_offset: int
    """Where this attempt's output begins in the job's log."""


class SlurmJobState(_Event):
    """Slurm's word on a submitted attempt changed (squeue): its state and, while it waits, why."""

    type: Literal["SlurmJobState"] = "SlurmJobState"
    job_id: int
    attempt: int
    slurm_job_id: int
    state: str
    """Slurm's job state: PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ..."""
    reason: str | None = None
    """Slurm's state reason (Resources, Priority, QOSMaxGRESPerUser, ...); None when it gives none."""
    nodes: str = ""
    """The allocation's nodes, in Slurm's notation (n[1-2])."""


class JobProgress(_Event):
    """One record of the run's log that the metrics sampler kept (train step, eval or summary)."""

    type: Literal["JobProgress"] = "JobProgress"
    job_id: int
    attempt: int
    kind: Literal["train", "eval", "summary"]
    step: int
    max_steps: int
    percent: float
    eta_s: float | None = None
    elapsed_s: float | None = None
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    token_acc: float | None = None
    memory_gib: float | None = None
    train_speed: float | None = None
    raw: dict[str, float] = {}


class ArtifactRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    path: str
    """Absolute."""
    bytes: int
    step: int | None = None
    complete: bool = True


class ArtifactsFound(_Event):
    """The run's output directory as last scanned: every checkpoint, adapter, model and record."""

    type: Literal["ArtifactsFound"] = "ArtifactsFound"
    job_id: int
    attempt: int
    artifacts: list[ArtifactRecord]


class FailureRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    transient: bool
    reason: str
    exception: str | None = None
    argument: str | None = None
    path: str | None = None
    row: int | None = None
    signal: str | None = None


RunOutcome = Literal["succeeded", "failed", "cancelled", "paused"]


class RunExited(_Event):
    """An attempt ended; with the decision whether the job runs again (`retry`)."""

    type: Literal["RunExited"] = "RunExited"
    job_id: int
    attempt: int
    outcome: RunOutcome
    returncode: int | None
    """None: unknown (the supervisor died, or the run could not start)."""
    signal: int | None = None
    stopped: Literal["cancel", "timeout", "shutdown", "pause", "hang"] | None = None
    """Why the daemon stopped it, if it did; "pause": it saved a checkpoint and stopped when asked;
    "hang": its step stopped advancing (`[runs] hang_factor`, `hang_min_s`)."""
    failure: FailureRecord | None = None
    log_tail: list[str] = []
    """The last lines of the attempt's output, for people and for the failure's evidence."""
    retry: bool = False
    final_checkpoint: str | None = None
    """What `adapters: "@JOB"` names from now on (absolute)."""
    final_model: str | None = None
    """What `model: "@JOB"` names from now on (absolute)."""
    duration_s: float | None = None


class GpuShared(_Event):
    """A GPU this run holds also carried a process that is not one of our runs' (seen by a probe): an
    out-of-memory in this run may be that process's doing, so it counts as transient."""

    type: Literal["GpuShared"] = "GpuShared"
    job_id: int
    attempt: int
    gpus: list[int]
    """The indices of the run's GPUs that had foreign processes."""


class RunServing(_Event):
    """A deploy run answers requests: swift said where its server listens (it moves to the next free
    port when the one asked for is taken) and that address's /health returned 200."""

    type: Literal["RunServing"] = "RunServing"
    job_id: int
    attempt: int
    url: str
    """The server's base URL as swift printed it; its OpenAI API is under /v1."""
    models: list[str]
    """The model names that API serves (GET /v1/models)."""


class RunInterrupted(_Event):
    """A run the log says was running did not survive a reboot of the machine: it runs again from
    `resume_from`, its last complete checkpoint, or, without one, the job fails."""

    type: Literal["RunInterrupted"] = "RunInterrupted"
    job_id: int
    attempt: int
    reason: str
    resume_from: str | None = None


class JobPreempted(_Event):
    """The scheduler pauses running job `job_id` (preemptible) so that job `by`, of higher priority
    and placeable no other way, gets its GPUs; the paused job is queued again by itself, continuing
    from the checkpoint the pause saves."""

    type: Literal["JobPreempted"] = "JobPreempted"
    job_id: int
    attempt: int
    by: int
    reason: str


class CheckpointPruned(_Event):
    """The retention rules (`keep_checkpoints`, `keep_best`) deleted a complete checkpoint; recorded
    before the deletion, which a restarted daemon finishes."""

    type: Literal["CheckpointPruned"] = "CheckpointPruned"
    job_id: int
    attempt: int
    path: str
    """Absolute."""
    bytes: int
    """What the deletion frees."""
    reason: str


class JobFailed(_Event):
    """The scheduler gave up on a job that never started this attempt (a dependency failed, or its
    command cannot be built)."""

    type: Literal["JobFailed"] = "JobFailed"
    job_id: int
    reason: str


class JobsWaiting(_Event):
    """Why queued jobs are not running, where that changed since the last such event."""

    type: Literal["JobsWaiting"] = "JobsWaiting"
    reasons: dict[str, str]
    """Job id (as text: JSON keys are strings) -> the reason for a person."""


# -- notifications: each target's cursor, on the stream `notify:<target>` --------------------------
#
# A delivery's record is the target's cursor: the next delivery starts after its seq. These events
# never map to a notification themselves, so recording them cannot start a loop.


class NotifyDelivered(_Event):
    """Target `target` acknowledged (2xx, exit 0) the notification of event `seq`."""

    type: Literal["NotifyDelivered"] = "NotifyDelivered"
    target: str
    seq: int
    webhook_id: str
    attempts: int


class NotifyGivenUp(_Event):
    """Every attempt to notify `target` of event `seq` failed; the cursor moved on without it."""

    type: Literal["NotifyGivenUp"] = "NotifyGivenUp"
    target: str
    seq: int
    webhook_id: str
    attempts: int
    reason: str


class NotifyCursor(_Event):
    """A target's cursor moved to `seq` without a delivery: a new target starts at the log's end, and
    a long run of events it does not notify is skipped once, rather than read again at each start."""

    type: Literal["NotifyCursor"] = "NotifyCursor"
    target: str
    seq: int


_EVENT_CLASSES: tuple[type[_Event], ...] = (
    DaemonStarted,
    DaemonStopped,
    ConfigReloaded,
    DatasetValidating,
    DatasetAccepted,
    JobSubmitted,
    DuplicateDropped,
    CancelRequested,
    RetryRequested,
    PauseRequested,
    ResumeRequested,
    FileRejected,
    JobStarted,
    RunStarted,
    SlurmSubmitted,
    SlurmJobState,
    JobProgress,
    ArtifactsFound,
    RunExited,
    RunInterrupted,
    RunServing,
    GpuShared,
    JobPreempted,
    CheckpointPruned,
    JobFailed,
    JobsWaiting,
    NotifyDelivered,
    NotifyGivenUp,
    NotifyCursor,
)

Event = Annotated[
    DaemonStarted
    | DaemonStopped
    | ConfigReloaded
    | DatasetValidating
    | DatasetAccepted
    | JobSubmitted
    | DuplicateDropped
    | CancelRequested
    | RetryRequested
    | PauseRequested
    | ResumeRequested
    | FileRejected
    | JobStarted
    | RunStarted
    | SlurmSubmitted
    | SlurmJobState
    | JobProgress
    | ArtifactsFound
    | RunExited
    | RunInterrupted
    | RunServing
    | GpuShared
    | JobPreempted
    | CheckpointPruned
    | JobFailed
    | JobsWaiting
    | NotifyDelivered
    | NotifyGivenUp
    | NotifyCursor,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: dict[str, type[_Event]] = {cls.model_fields["type"].default: cls for cls in _EVENT_CLASSES}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(type, from_schema) -> function lifting that shape to from_schema + 1."""


def upcast(
    type_: str, schema: int, data: dict[str, Any], upcasters: Mapping[tuple[str, int], Upcaster]
) -> dict[str, Any]:
    """Lift `data` written at `schema` to the class's current schema through the registered chain."""
    target = EVENT_TYPES[type_].schema_version
    while schema < target:
        step = upcasters.get((type_, schema))
        if step is None:
            raise ValueError(f"no upcaster for {type_} schema {schema} -> {schema + 1}")
        data = step(data)
        schema += 1
    if schema > target:
        raise ValueError(f"{type_} schema {schema} is newer than this daemon understands ({target})")
    return data


_VALIDATE_CURRENT: dict[tuple[str, int], Callable[[str], Event]] = {
    (name, cls.schema_version): cls.__pydantic_validator__.validate_json for name, cls in EVENT_TYPES.items()
}
"""(type, current schema) -> its validator's JSON entry: a replay decodes millions of rows, nearly all
at the current schema, with one lookup each."""


def decode_event(type_: str, schema: int, data_json: str) -> Event:
    """Rows written at the current schema validate straight from JSON; older ones are upcast first."""
    validate = _VALIDATE_CURRENT.get((type_, schema))
    if validate is not None:
        return validate(data_json)
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    lifted = upcast(type_, schema, json.loads(data_json), UPCASTERS)
    return EVENT_ADAPTER.validate_python(lifted)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event on its way into the log, with the key that makes its append idempotent."""

    event: Event
    idem_key: str | None = None


class Recorded(NamedTuple):
    """An event as the log holds it: the envelope the fold and the API see (a tuple: replays make
    millions of them)."""

    seq: int
    stream: str
    version: int
    ts: float
    event: Event
