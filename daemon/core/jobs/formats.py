"""The job file formats as input models: the keys each format accepts, their validation, and the
published JSON Schema of a job file.

The formats' key sets overlap, so the tables here also name which format a key belongs to and its
synonyms in the other formats, for the hint when a file mixes them or misspells one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, WithJsonSchema

from daemon.core.jobs.fields import (
    _NAME_HINT,
    _Count,
    _Duration,
    _GpuIds,
    _int_like,
    _JobName,
    _Modules,
    _Names,
    _PositiveFloat,
    _PositiveInt,
    _Text,
    _Word,
)
from daemon.core.jobs.params import _DeployFields, _ExportFields, _TrainFields
from daemon.core.jobs.spec import RlhfType, Tuner
from daemon.core.jobs.values import _Datasets, _JobRef, _JobRefs, _ModelSource

__all__ = [
    "CancelFile",
    "PauseFile",
    "ResumeFile",
    "DeployJobFile",
    "ExportJobFile",
    "ManagementJobFile",
    "RetryFile",
    "TrainerJobFile",
    "job_file_schema",
]


class _FileKeys(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class KeepBest(_FileKeys):
    metric: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_./-]+$")] = Field(
        description="The metric's name as swift logs it (eval_loss, eval_rouge-l, loss, ...)."
    )
    mode: Literal["min", "max"] | None = Field(None, description="min or max; default min for a loss.")


class _CommonKeys(_FileKeys):
    name: _JobName | None = Field(None, description=f"Job name; default: the file name. {_NAME_HINT} chars.")
    project: _JobName | None = Field(None, description="Project the job is grouped under; default 'default'.")
    priority: Annotated[int, Field(ge=-(10**9), le=10**9), BeforeValidator(_int_like)] | None = Field(
        None, description="Higher runs first; default 0."
    )
    after: _JobRefs | None = Field(None, description="Jobs (names or ids) that must succeed first.")
    gpus: _Count | None = Field(None, description="GPUs to use; default 1 (0 on a box without GPUs).")
    gpu_ids: _GpuIds | None = Field(None, description="Exactly these GPUs (indices or UUIDs).")
    min_free_memory_mib: _Count | None = Field(None, description="Start only when each GPU has this free.")
    timeout: _Duration | None = Field(None, description="Seconds, or '2h', '30m', '1h30m'.")
    retries: Annotated[int, Field(ge=0, le=100), BeforeValidator(_int_like)] | None = Field(
        None, description="Runs again after a failure, at most this often; default 0."
    )
    preemptible: bool | None = Field(
        None,
        description="A higher-priority job that cannot be placed otherwise may pause this one (at a "
        "checkpoint) and take its GPUs; it resumes by itself when GPUs free up. Default false.",
    )
    keep_checkpoints: Annotated[int, Field(ge=0, le=10**6), BeforeValidator(_int_like)] | None = Field(
        None,
        description="Complete checkpoints the daemon keeps, newest first (the best and the last are "
        "kept besides); default [runs] keep_checkpoints; 0 keeps all.",
    )
    keep_best: str | KeepBest | None = Field(
        None,
        description="A logged metric (eval_loss, eval_rouge-l, loss, ...) whose best checkpoint is never "
        "pruned: lowest for a loss, highest otherwise, or {metric, mode: min | max}.",
    )
    model_type: _Word | None = Field(None, description="swift --model_type, e.g. qwen2.")
    template: _Word | None = Field(None, description="swift --template, e.g. qwen.")
    swift: dict[str, Any] | None = Field(
        None, description="Extra swift arguments by name, checked against the installed ms-swift."
    )
    nodes: Annotated[int, Field(ge=1, le=4096), BeforeValidator(_int_like)] | None = Field(
        None, description="Nodes a Slurm job runs on; default 1. `gpus` is then per node."
    )
    slurm: dict[str, Any] | None = Field(
        None, description="sbatch options for this job (partition, qos, time, constraint, ...)."
    )


class ManagementJobFile(_CommonKeys, _TrainFields):
    """The management API's training config: task_type sft | rl | lora | pretrain."""

    task_type: Literal["sft", "rl", "rlhf", "lora", "pretrain"] = Field(description="What to train.")
    model: _ModelSource | None = Field(None, description="The model (any task).")
    model_name: _ModelSource | None = Field(None, description="The model (sft, pretrain).")
    base_model: _ModelSource | None = Field(None, description="The model LoRA trains on (lora).")
    policy_model: _ModelSource | None = Field(None, description="The model to align (rl).")
    reward_model: _ModelSource | None = Field(None, description="Reward model (rl: ppo, grpo).")
    tuner: Tuner | None = Field(None, description="full | lora | qlora; default full, lora for lora.")
    dataset: _Datasets | None = Field(None, description="_Dataset name(s), e.g. datasets/sft.jsonl.")
    val_dataset: _Datasets | None = Field(None, description="Validation dataset name(s).")
    max_seq_length: _PositiveInt | None = Field(None, description="= max_length.")
    sequence_length: _PositiveInt | None = Field(None, description="= max_length.")
    per_device_batch_size: _PositiveInt | None = Field(None, description="= per_device_train_batch_size.")
    train_batch_size: _PositiveInt | None = Field(None, description="= global_batch_size.")
    lora_r: _PositiveInt | None = Field(None, description="= lora_rank.")
    peft_target_modules: _Modules | None = Field(None, description="= target_modules.")
    use_8bit: bool | None = Field(None, description="Load the base model in 8 bit (QLoRA).")
    algorithm: RlhfType | None = Field(None, description="rl algorithm; default dpo.")
    rollout_batch_size: _PositiveInt | None = Field(None, description="ppo/grpo rollout batch.")
    update_epochs: _PositiveInt | None = Field(None, description="ppo/grpo updates per rollout.")
    kl_target: Annotated[float, Field(ge=0), BeforeValidator(_int_like)] | None = Field(
        None, description="Accepted, not applied: swift 4.6 has no adaptive KL target."
    )
    tokenizer: _Text | None = Field(None, description="Accepted, not used: swift uses the model's tokenizer.")


class TrainerJobFile(_CommonKeys, _TrainFields):
    """The Swift Trainer API's LLM job body: LoRA SFT."""

    gpu_id: _GpuIds | None = Field(None, description='GPUs, e.g. "0" or "0,1".')
    datasets: _Datasets | None = Field(None, description="_Dataset names or hub ids, each with #N sampling.")
    val_dataset: _Datasets | None = Field(None, description="Validation dataset name(s).")
    model_path: _ModelSource | None = Field(None, description="The model.")
    model: _ModelSource | None = Field(None, description="= model_path.")
    output_dir: _Text | None = Field(None, description="Accepted, not used: the daemon owns run directories.")
    num_epochs: _PositiveFloat | None = Field(None, description="= num_train_epochs.")
    batch_size: _PositiveInt | None = Field(None, description="Train and eval batch per GPU.")
    model_name: _Names | None = Field(None, description="Self-cognition model names (--model_name).")


class ExportJobFile(_CommonKeys, _ExportFields):
    """Merge LoRA adapters into their base model and/or quantise a model."""

    task_type: Literal["export"]
    adapters: _ModelSource | None = Field(None, description="@JOB (its final checkpoint) or a directory.")
    model: _ModelSource | None = Field(None, description="Base or full model: @JOB, directory or hub id.")
    merge_lora: bool | None = Field(None, description="Merge the adapters; default true with adapters.")
    dataset: _Datasets | None = Field(None, description="Calibration data for awq/gptq.")


_SECRET_REF_SCHEMA = WithJsonSchema(
    {
        "oneOf": [
            {
                "type": "object",
                "properties": {"env": {"type": "string"}},
                "required": ["env"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"file": {"type": "string"}},
                "required": ["file"],
                "additionalProperties": False,
            },
        ]
    }
)


class DeployJobFile(_CommonKeys, _DeployFields):
    """Serve a model with `swift deploy` (OpenAI-compatible API)."""

    task_type: Literal["deploy"]
    api_key: Annotated[Any, _SECRET_REF_SCHEMA] = Field(
        None,
        description="The key clients must send (--api_key), by reference: {env: NAME} (listed in "
        "[swift] secret_env) or {file: /path} (under [swift] secret_files); never the key itself.",
    )
    model: _ModelSource | None = Field(None, description="@JOB (merged or full model), directory or hub id.")
    adapters: _ModelSource | None = Field(None, description="@JOB (its final checkpoint) or a directory.")


class CancelFile(_FileKeys):
    """Cancel a job."""

    cancel: _JobRef = Field(description="The job's id or name.")


class PauseFile(_FileKeys):
    """Pause a running training: it saves a checkpoint at its next step, stops, and frees its GPUs."""

    pause: _JobRef = Field(description="The job's id or name.")


class ResumeFile(_FileKeys):
    """Resume a paused job from the checkpoint its pause saved."""

    resume: _JobRef = Field(description="The job's id or name.")


class _RetryTarget(_FileKeys):
    model_config = ConfigDict(title="RetryTarget")

    job: _JobRef = Field(description="The job's id or name.")
    start: Literal["checkpoint", "scratch"] = Field(
        "checkpoint",
        alias="from",
        description="checkpoint (default): continue from the last complete checkpoint of the job's "
        "earlier attempts; scratch: start over.",
    )


def _retry_target(value: object) -> object:
    """`retry: JOB` is `retry: {job: JOB}`."""
    return value if isinstance(value, Mapping) else {"job": value}


class RetryFile(_FileKeys):
    """Run a failed or cancelled job again."""

    retry: Annotated[
        _RetryTarget,
        BeforeValidator(_retry_target),
        WithJsonSchema({"anyOf": [{"type": "string"}, _RetryTarget.model_json_schema(by_alias=True)]}),
    ] = Field(description="The job's id or name, or {job: JOB, from: checkpoint | scratch}.")


_FILE_MODELS: Mapping[str, type[_FileKeys]] = {
    "management": ManagementJobFile,
    "trainer": TrainerJobFile,
    "export": ExportJobFile,
    "deploy": DeployJobFile,
    "cancel": CancelFile,
    "retry": RetryFile,
    "pause": PauseFile,
    "resume": ResumeFile,
}
_LABELS = {
    "management": "the management-API format (task_type: sft | rl | lora | pretrain)",
    "trainer": "the Swift Trainer API format (model_path, datasets, num_epochs, ...)",
    "export": "an export job (task_type: export)",
    "deploy": "a deploy job (task_type: deploy)",
    "cancel": "a cancel request (cancel: JOB, nothing else)",
    "retry": "a retry request (retry: JOB or retry: {job: JOB, from: scratch}, nothing else)",
    "pause": "a pause request (pause: JOB, nothing else)",
    "resume": "a resume request (resume: JOB, nothing else)",
}
_TASK_DIALECT = {
    "sft": "management",
    "rl": "management",
    "rlhf": "management",
    "lora": "management",
    "pretrain": "management",
    "export": "export",
    "deploy": "deploy",
}
_TRAINER_MARKERS = ("model_path", "datasets", "gpu_id", "num_epochs", "batch_size", "output_dir")
_SYNONYMS = (  # in order of preference for the hint
    ("model", "model_path", "base_model", "policy_model"),
    ("datasets", "dataset"),
    ("num_train_epochs", "num_epochs"),
    ("per_device_train_batch_size", "batch_size", "per_device_batch_size"),
    ("gpu_ids", "gpu_id"),
    ("lora_rank", "lora_r"),
    ("max_length", "max_seq_length", "sequence_length"),
    ("target_modules", "peft_target_modules"),
    ("global_batch_size", "train_batch_size"),
    ("algorithm", "rlhf_type"),
)


def job_file_schema() -> dict[str, Any]:
    """JSON Schema of a job file (any format) or control request, for editors and `schemas/`."""
    union = (
        ManagementJobFile
        | TrainerJobFile
        | ExportJobFile
        | DeployJobFile
        | CancelFile
        | RetryFile
        | PauseFile
        | ResumeFile
    )
    schema: dict[str, Any] = TypeAdapter(union).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "llmtraind job file",
        "description": "A job YAML dropped into the inbox, in one of the accepted formats.",
        **schema,
    }


def _suggest(key: str, known: Iterable[str]) -> str:
    """A did-you-mean hint: a known synonym first, then close spellings."""
    names = list(known)
    for group in _SYNONYMS:
        same = [name for name in group if name in names]
        if key in group and same:
            return f"use `{same[0]}`"
    close = difflib.get_close_matches(key.lower(), names, n=3, cutoff=0.6)
    return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?" if close else ""
