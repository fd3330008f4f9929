"""The canonical `JobSpec` every file format becomes, and the `ControlRequest` of a cancel or retry
file: what intake records and what the scheduler and the command builder read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from daemon.core.jobs.params import DeployParams, ExportParams, TrainParams
from daemon.core.jobs.resolved import Resolution
from daemon.core.jobs.secrets import SecretRef
from daemon.core.jobs.values import DatasetRef, ModelRef, _Frozen

__all__ = [
    "DEFAULT_RLHF_TYPE",
    "ControlRequest",
    "Dialect",
    "JobSpec",
    "RlhfType",
    "SwiftScalar",
    "SwiftValue",
    "Task",
    "Tuner",
    "dataset_names",
    "references",
]


Task = Literal["sft", "pretrain", "rlhf", "export", "deploy"]
Tuner = Literal["full", "lora", "qlora"]
RlhfType = Literal["dpo", "orpo", "simpo", "kto", "cpo", "rm", "ppo", "grpo", "gkd"]
DEFAULT_RLHF_TYPE: RlhfType = "dpo"
"""swift rlhf's own default, and the original design's choice for preference data."""
Dialect = Literal["management", "trainer", "export", "deploy"]
SwiftScalar = str | int | float | bool
SwiftValue = SwiftScalar | list[SwiftScalar]
_SWIFT_COMMAND: Mapping[str, str] = {
    "sft": "sft",
    "pretrain": "pt",
    "rlhf": "rlhf",
    "export": "export",
    "deploy": "deploy",
}


class JobSpec(_Frozen):
    """One job, whatever format it was written in, in ms-swift 4.x terms."""

    name: str
    project: str = "default"
    dialect: Dialect
    task: Task
    tuner: Tuner | None = None
    """None for export and deploy. qlora = LoRA on a quantised base (--quant_method/--quant_bits)."""
    rlhf_type: RlhfType | None = None
    """None for rlhf: swift's default (dpo)."""
    model: ModelRef | None = None
    model_type: str | None = None
    template: str | None = None
    adapters: ModelRef | None = None
    reward_model: ModelRef | None = None
    datasets: tuple[DatasetRef, ...] = ()
    val_datasets: tuple[DatasetRef, ...] = ()
    train: TrainParams | None = None
    export: ExportParams | None = None
    deploy: DeployParams | None = None
    priority: int = 0
    after: tuple[str, ...] = ()
    """Jobs (ids or names) that must succeed first, including every `@JOB` reference."""
    gpus: int | None = None
    """None: 1 on a box with managed GPUs, 0 on one without; the daemon decides."""
    gpu_ids: tuple[int | str, ...] = ()
    min_free_memory_mib: int | None = None
    timeout_s: int | None = None
    retries: int = 0
    preemptible: bool = False
    """A higher-priority job may pause it (at a checkpoint) for its GPUs; it then resumes by itself."""
    keep_checkpoints: int | None = None
    """Complete checkpoints kept, newest first; None: [runs] keep_checkpoints; 0: all."""
    keep_best: tuple[str, Literal["min", "max"]] | None = None
    """(metric, mode): the checkpoint with the best value of this logged metric is never pruned."""
    nodes: int = 1
    """Nodes of a Slurm job (`[executor] kind = "slurm"`); `gpus` is per node."""
    slurm: dict[str, str] = Field(default_factory=dict)
    """The job's own sbatch options (`SLURM_OPTIONS` names), by sbatch's long option name."""
    swift_args: dict[str, SwiftValue] = Field(default_factory=dict)
    """Extra swift arguments (underscore names) from the file's `swift:` block."""
    secrets: dict[str, SecretRef] = Field(default_factory=dict)
    """Secret swift arguments (api_key, swanlab_token, ...) by reference; the value is read only
    when the run starts, so neither the log nor the API ever holds it."""
    notes: tuple[str, ...] = ()
    """What was accepted but not applied, and why: the job's warnings."""
    resolved: tuple[Resolution, ...] = ()
    """What intake settled on this box: a model name that became a local folder, a model_type or
    template read from the model's config.json. The fields above already hold the settled values."""

    @property
    def swift_command(self) -> str:
        """The `swift` sub-command that runs this job (sft, pt, rlhf, export, deploy)."""
        return _SWIFT_COMMAND[self.task]

    @property
    def effective_rlhf_type(self) -> RlhfType | None:
        """The algorithm an rlhf job runs: its own, else swift's default; None for other tasks.

        `rlhf_type` stays None in the spec (the file did not choose), but what the data must fit
        and what the command line says are decided by this one value."""
        if self.task != "rlhf":
            return None
        return self.rlhf_type or DEFAULT_RLHF_TYPE


class ControlRequest(_Frozen):
    """A dropped `{cancel: JOB}`, `{retry: JOB}`, `{pause: JOB}` or `{resume: JOB}` file."""

    action: Literal["cancel", "retry", "pause", "resume"]
    job: str
    """The job's id or name."""
    from_scratch: bool = False
    """A retry that starts over (`retry: {job: JOB, from: scratch}`) instead of continuing from the
    last complete checkpoint."""


def references(spec: JobSpec) -> set[str]:
    """Jobs (ids or names) this job depends on; `@JOB` references are already in `after`."""
    return set(spec.after)


def dataset_names(spec: JobSpec) -> set[str]:
    """Names of the dropped datasets the job reads; hub datasets are not included."""
    return {ref.name for ref in (*spec.datasets, *spec.val_datasets) if not ref.hub}
