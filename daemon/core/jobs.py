"""Job files -> one canonical `JobSpec`.

People write jobs in the format they already know: the original management API's task types
(`task_type: sft | rl | lora | pretrain`), the Swift Trainer API's LLM job body (`model_path`,
`datasets`, `num_epochs`, ...), or the daemon's own `export` and `deploy` jobs. Every format becomes
the same `JobSpec`, in ms-swift 4.x argument names, so nothing after intake needs to know which
format a job came in. A file is rejected as a whole, with every problem found (field, line, what to
do): a half-understood job must never start a multi-hour run.

Pure: given the file's bytes and the installed ms-swift's argument names, no I/O, so that
`llmtraind check` and the inbox run exactly the same code.

Decisions where the seed documents leave a choice:

* `task_type: sft`, `rl` and `pretrain` train all weights (the seed's outputs are full model
  directories); `lora` trains LoRA. `tuner: full | lora | qlora` overrides. The Swift Trainer API
  body is LoRA SFT. Any quantisation key (`use_8bit`, `bnb_4bit_quant_type`, `quant_bits`) makes a
  LoRA job QLoRA (`--quant_method bnb`), and is an error for full training.
* `algorithm` absent: `rlhf_type` stays None, so swift rlhf runs its default, dpo, which is also the
  seed's rule for preference data. `rollout_batch_size` and `update_epochs` map to
  `local_rollout_forward_batch_size`/`num_ppo_epochs` (ppo) or `generation_batch_size`/
  `num_iterations` (grpo). `kl_target` has no swift 4.6 counterpart (PPO has a fixed `kl_coef`, no
  adaptive KL target): accepted, not applied, recorded in `notes`.
* `train_batch_size`/`global_batch_size` are the samples per optimizer step over all GPUs; swift
  4.6 has no such argument outside megatron, so it stays in `TrainParams.global_batch_size` and the
  command builder derives `gradient_accumulation_steps` once it knows the GPU count.
* `tokenizer` is accepted and not used: swift loads the tokenizer from the model directory.
  `output_dir` (trainer body) is accepted and not used: the daemon owns run directories.
* _Datasets are named by the name they were dropped under; an `org/name` id (or an `hf::`/`ms::`
  prefixed one) is kept as a hub dataset (`DatasetRef.hub`), which an offline daemon reports as
  unavailable when it would start the job. Models are an absolute directory, `@JOB`, or a hub id.
* `swift:` holds extra swift arguments, checked against the installed ms-swift. Names that the job
  models itself (`learning_rate`, `template`, ...) are moved to their typed place; names the daemon
  owns (`output_dir`, ...) or that name models and datasets are errors with the key to use instead.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NoReturn, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from daemon.core.jobyaml import JobFileError, JobProblem, Report, load_document, show

if TYPE_CHECKING:
    from daemon.core.swift_args import SwiftArgs

__all__ = [
    "CancelFile",
    "DEFAULT_RLHF_TYPE",
    "ControlRequest",
    "DatasetRef",
    "Dialect",
    "DeployJobFile",
    "DeployParams",
    "ExportJobFile",
    "ExportParams",
    "JobFileError",
    "JobProblem",
    "JobSpec",
    "ManagementJobFile",
    "ModelRef",
    "RetryFile",
    "RlhfType",
    "SwiftValue",
    "Task",
    "TrainParams",
    "TrainerJobFile",
    "Tuner",
    "dataset_name_problem",
    "dataset_names",
    "job_file_schema",
    "parse_job_file",
    "references",
]

Task = Literal["sft", "pretrain", "rlhf", "export", "deploy"]
Tuner = Literal["full", "lora", "qlora"]
RlhfType = Literal["dpo", "orpo", "simpo", "kto", "cpo", "rm", "ppo", "grpo", "gkd"]
DEFAULT_RLHF_TYPE: RlhfType = "dpo"
"""swift rlhf's own default, and the original design's choice for preference data."""
Dialect = Literal["management", "trainer", "export", "deploy"]
TorchDtype = Literal["bfloat16", "float16", "float32"]
SwiftScalar = str | int | float | bool
SwiftValue = SwiftScalar | list[SwiftScalar]
_M = TypeVar("_M", bound=BaseModel)

_MAX_TIMEOUT_S = 366 * 86400

_SWIFT_COMMAND: Mapping[str, str] = {
    "sft": "sft",
    "pretrain": "pt",
    "rlhf": "rlhf",
    "export": "export",
    "deploy": "deploy",
}
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DATASET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HUB_MODEL_RE = re.compile(rf"(?:hf::|ms::)?{_HUB_PART}(?:/{_HUB_PART})?")
_HUB_DATASET_RE = re.compile(rf"(?:hf::|ms::)?{_HUB_PART}(?:/{_HUB_PART})?(?::[A-Za-z0-9._/-]{{1,128}})?")
_DATASET_EXTS = (".jsonl", ".txt")
_OTHER_DATA_EXTS = (".json", ".csv", ".tsv", ".parquet", ".arrow", ".gz", ".zip")
_DURATION_RE = re.compile(r"\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*([dhms])\s*")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NAME_HINT = "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64"
_DATASET_HINT = (
    "name a dataset by the name it was dropped under: sft_demo, sft_demo.jsonl or datasets/sft_demo.jsonl"
)
_MODEL_HINT = "a model is an absolute directory such as /models/qwen, @JOB for a job's output, or a hub id"


# ---------------------------------------------------------------------------------------------
# Value checks shared by the file formats (pydantic before-validators)


def _fail(message: str, hint: str = "") -> NoReturn:
    """Raise a validation error that carries a hint for JobProblem."""
    raise PydanticCustomError("job_file", "{message}", {"message": message, "hint": hint})


def _int_like(value: object) -> object:
    """YAML 1.1 reads `true` as a bool, which Python counts as 1; a number must be written as one."""
    if isinstance(value, bool):
        _fail("expected a number, not true/false")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
        return int(value)
    return value


def _text(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        _fail("text must not contain NUL characters")
    return value


def _word(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(r"[^\s\x00-\x1f\x7f]{1,256}", value):
        _fail(f"{show(value)} must be one word without spaces or control characters")
    return value


def _listify(value: object) -> object:
    """A single item where a list is expected is a list of one (`after: a`, `dataset: x`)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return [value]
    return value


def _split_words(value: object) -> object:
    """`target_modules: "q_proj v_proj"` or "q_proj,v_proj" is a list, as on swift's command line."""
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,]+", value) if part]
    return value


def _job_name(value: object) -> object:
    if isinstance(value, str) and not _NAME_RE.fullmatch(value):
        _fail(f"{show(value)} is not a valid name", f"use {_NAME_HINT} characters")
    return value


def _job_ref(value: object) -> str:
    """A job named by id or name, with or without the `@` used in model references."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        _fail("a job is named by its name or id")
    ref = value.removeprefix("@")
    if not _REF_RE.fullmatch(ref):
        _fail(f"{show(value)} is not a job name or id", "job names are letters, digits, '.', '_' and '-'")
    return ref


def _duration(value: object) -> int:
    """Seconds, or a string such as "2h", "30m", "1h30m", "90s", "1d"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail("a timeout is a number of seconds or a string such as '2h', '30m' or '1h30m'")
    seconds = _duration_seconds(value) if isinstance(value, str) else value
    if not 0 < seconds <= _MAX_TIMEOUT_S:
        _fail(f"timeout {show(value)} must be more than 0 s and at most 366 days")
    return math.ceil(seconds)


def _duration_seconds(text: str) -> float:
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    total, pos = 0.0, 0
    while pos < len(text):
        match = _DURATION_RE.match(text, pos)
        if match is None:
            _fail(f"{show(text)} is not a duration", "write seconds or e.g. '2h', '30m', '1h30m', '1d'")
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    return total if text else _fail("an empty string is not a duration")


def _gpu_ids(value: object) -> tuple[int | str, ...]:
    """GPU indices or UUIDs: [0, 1], "0,1" (the trainer API's gpu_id) or a single 0."""
    items = value.split(",") if isinstance(value, str) else _listify(value)
    if not isinstance(items, list | tuple) or not items:
        _fail('GPUs are a list such as [0, 1] or a string such as "0,1"')
    ids = tuple(_gpu_id(item) for item in items)
    if len(set(ids)) != len(ids):
        _fail("a GPU is listed twice")
    return ids


def _gpu_id(item: object) -> int | str:
    if isinstance(item, str):
        item = item.strip()
        if re.fullmatch(r"[0-9]{1,4}", item):
            return int(item)
        if re.fullmatch(r"(?:GPU|MIG)-[0-9A-Za-z/-]{1,96}", item):
            return item
    elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 10000:
        return item
    _fail(f"{show(item)} is not a GPU index or UUID", "write indices such as 0 or UUIDs such as GPU-5d3c...")


def _check_name_path(text: str, what: str) -> None:
    """Files are named relative to the inbox: no absolute paths, no `..`, no backslashes."""
    if _CONTROL_RE.search(text) or "\\" in text:
        _fail(f"{what} {show(text)} contains a backslash or a control character")
    if text.startswith(("/", "~")):
        _fail(f"{what} {show(text)} is an absolute path", _DATASET_HINT if what == "dataset" else "")
    if any(part in ("", ".", "..") for part in text.split("/")):
        _fail(f"{what} {show(text)} contains an empty, '.' or '..' path segment", "")


def _split_sample(value: str) -> tuple[str, int | None]:
    base, sep, tail = value.rpartition("#")
    if not sep:
        return value, None
    if not re.fullmatch(r"[0-9]{1,9}", tail) or int(tail) == 0:
        _fail(f"{show(value)}: the part after '#' must be the number of rows to sample (1 or more)")
    return base, int(tail)


def _dataset_ref(value: object) -> DatasetRef:
    """`sft_demo`, `sft_demo.jsonl`, `datasets/sft_demo.jsonl`, `org/name` (hub), each with `#N`."""
    if not isinstance(value, str) or not value:
        _fail("a dataset is named by a non-empty string", _DATASET_HINT)
    base, sample = _split_sample(value)
    _check_name_path(base, "dataset")
    if base.startswith(("hf::", "ms::")) or ("/" in base and not base.startswith("datasets/")):
        return _hub_dataset(base, sample)
    name = base.removeprefix("datasets/")
    for ext in _DATASET_EXTS:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        if name.lower().endswith(_OTHER_DATA_EXTS):
            _fail(f"{show(value)}: only .jsonl and .txt files are datasets", _DATASET_HINT)
    if not _DATASET_RE.fullmatch(name):
        _fail(f"{show(value)} is not a dataset name", _DATASET_HINT)
    return DatasetRef(name=name, sample=sample)


def _hub_dataset(base: str, sample: int | None) -> DatasetRef:
    if not _HUB_DATASET_RE.fullmatch(base) or base.lower().endswith(_DATASET_EXTS + _OTHER_DATA_EXTS):
        _fail(
            f"{show(base)} names a file in another folder",
            "drop the file into the inbox and use its dataset name, or give a hub id such as "
            "AI-ModelScope/alpaca-gpt4-data-zh",
        )
    return DatasetRef(name=base, sample=sample, hub=True)


def _model_ref(value: object) -> ModelRef:
    if not isinstance(value, str) or not value:
        _fail("a model is named by a non-empty string", _MODEL_HINT)
    if value.startswith("@"):
        return ModelRef(kind="job", ref=_job_ref(value))
    if _CONTROL_RE.search(value) or "\\" in value:
        _fail(f"{show(value)} contains a backslash or a control character", _MODEL_HINT)
    if value.startswith("/"):
        path = value.rstrip("/")
        if not path or any(part in ("", ".", "..") for part in path.split("/")[1:]):
            _fail(f"{show(value)} is not a clean absolute directory (no '..', '.' or '//')", _MODEL_HINT)
        return ModelRef(kind="path", ref=path)
    if _HUB_MODEL_RE.fullmatch(value) and ".." not in value:
        return ModelRef(kind="hub", ref=value)
    _fail(f"{show(value)} is not an absolute directory, @JOB or a hub id", _MODEL_HINT)


def _one_or_many(item: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]})


_STRING = {"type": "string"}
_PositiveInt = Annotated[int, Field(gt=0), BeforeValidator(_int_like)]
_Count = Annotated[int, Field(ge=0), BeforeValidator(_int_like)]
_PositiveFloat = Annotated[float, Field(gt=0), BeforeValidator(_int_like)]
_Fraction = Annotated[float, Field(ge=0, lt=1), BeforeValidator(_int_like)]
_QuantBits = Annotated[Literal[1, 2, 3, 4, 8], BeforeValidator(_int_like)]
_Text = Annotated[str, BeforeValidator(_text)]
_Word = Annotated[str, BeforeValidator(_word)]
_Names = Annotated[tuple[_Text, ...], BeforeValidator(_listify), Field(min_length=1), _one_or_many(_STRING)]
_Modules = Annotated[
    tuple[_Word, ...], BeforeValidator(_split_words), Field(min_length=1), _one_or_many(_STRING)
]
_JobName = Annotated[str, Field(pattern=f"^{_NAME_RE.pattern}$"), BeforeValidator(_job_name)]
_JobRef = Annotated[str, BeforeValidator(_job_ref), WithJsonSchema(_STRING)]
_JobRefs = Annotated[tuple[_JobRef, ...], BeforeValidator(_listify), _one_or_many(_STRING)]
_Duration = Annotated[
    int,
    BeforeValidator(_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]}),
]
_GpuIds = Annotated[
    tuple[int | str, ...],
    BeforeValidator(_gpu_ids),
    _one_or_many({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}),
]


# ---------------------------------------------------------------------------------------------
# The canonical spec


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class ModelRef(_Frozen):
    """Where a model or an adapter comes from; only `job` references create a dependency."""

    kind: Literal["path", "job", "hub"]
    """`path`: an absolute directory; `job`: that job's output; `hub`: a hub id, kept as given."""
    ref: str
    """The directory, the job's id or name (without `@`), or the hub id."""

    def __str__(self) -> str:
        return f"@{self.ref}" if self.kind == "job" else self.ref


class DatasetRef(_Frozen):
    """A dataset by the name it was dropped under (or a hub id), with swift's `#N` row sampling."""

    name: str
    sample: int | None = Field(default=None, gt=0)
    hub: bool = False
    """A hub dataset id; the daemon runs offline and reports it as unavailable."""


_Dataset = Annotated[DatasetRef, BeforeValidator(_dataset_ref), WithJsonSchema(_STRING)]
_Datasets = Annotated[
    tuple[_Dataset, ...], BeforeValidator(_listify), Field(min_length=1), _one_or_many(_STRING)
]
_ModelSource = Annotated[ModelRef, BeforeValidator(_model_ref), WithJsonSchema(_STRING)]


class _TrainFields(BaseModel):
    """Training hyper-parameters in ms-swift 4.x names, accepted at the top level of training jobs."""

    max_length: _PositiveInt | None = Field(None, description="Longest sequence in tokens (--max_length).")
    num_train_epochs: _PositiveFloat | None = Field(None, description="Epochs (--num_train_epochs).")
    max_steps: _PositiveInt | None = Field(None, description="Stop after this many steps (--max_steps).")
    per_device_train_batch_size: _PositiveInt | None = Field(None, description="Batch per GPU.")
    per_device_eval_batch_size: _PositiveInt | None = Field(None, description="Eval batch per GPU.")
    global_batch_size: _PositiveInt | None = Field(
        None,
        description="Samples per optimizer step over all GPUs (per-device batch x GPUs x accumulation). "
        "Not a swift argument: the daemon derives gradient_accumulation_steps from it.",
    )
    gradient_accumulation_steps: _PositiveInt | None = Field(
        None, description="--gradient_accumulation_steps."
    )
    learning_rate: _PositiveFloat | None = Field(None, description="--learning_rate; 2e-5 or '2e-5'.")
    warmup_ratio: _Fraction | None = Field(None, description="--warmup_ratio, 0 <= r < 1.")
    lora_rank: _PositiveInt | None = Field(None, description="LoRA rank (--lora_rank).")
    lora_alpha: _PositiveInt | None = Field(None, description="LoRA alpha (--lora_alpha).")
    lora_dropout: _Fraction | None = Field(None, description="LoRA dropout (--lora_dropout).")
    target_modules: _Modules | None = Field(None, description="LoRA target modules, e.g. all-linear.")
    torch_dtype: TorchDtype | None = Field(None, description="--torch_dtype; default: from the model.")
    eval_steps: _PositiveInt | None = Field(None, description="--eval_steps.")
    save_steps: _PositiveInt | None = Field(None, description="--save_steps.")
    save_total_limit: _PositiveInt | None = Field(None, description="Checkpoints to keep.")
    logging_steps: _PositiveInt | None = Field(None, description="--logging_steps.")
    dataloader_num_workers: _Count | None = Field(None, description="--dataloader_num_workers.")
    system: _Text | None = Field(None, description="Default system prompt (--system).")
    model_author: _Names | None = Field(None, description="Self-cognition author names (--model_author).")
    quant_method: Literal["bnb", "hqq", "eetq", "quanto", "fp8"] | None = Field(
        None, description="Quantise the base model for QLoRA (--quant_method)."
    )
    quant_bits: _QuantBits | None = Field(None, description="QLoRA bits (--quant_bits).")
    bnb_4bit_quant_type: Literal["fp4", "nf4"] | None = Field(None, description="4-bit type; implies QLoRA.")
    num_ppo_epochs: _PositiveInt | None = Field(None, description="PPO update epochs per batch.")
    num_iterations: _PositiveInt | None = Field(None, description="GRPO updates per generation batch.")
    local_rollout_forward_batch_size: _PositiveInt | None = Field(None, description="PPO rollout batch.")
    generation_batch_size: _PositiveInt | None = Field(None, description="GRPO rollout batch.")


class TrainParams(_TrainFields, _Frozen):
    """Training hyper-parameters in ms-swift 4.x names; None leaves swift's default."""

    model_name: _Names | None = Field(None, description="Self-cognition model names (--model_name).")

    NOT_SWIFT: ClassVar[frozenset[str]] = frozenset({"global_batch_size"})
    """Fields the daemon resolves itself rather than passing on as a swift argument."""


class _ExportFields(BaseModel):
    quant_method: Literal["awq", "gptq", "gptq_v2", "bnb", "fp8"] | None = Field(
        None, description="Quantise the exported model (--quant_method); awq/gptq need a dataset."
    )
    quant_bits: _QuantBits | None = Field(None, description="--quant_bits.")
    max_length: _PositiveInt | None = Field(None, description="--max_length for calibration.")
    torch_dtype: TorchDtype | None = Field(None, description="--torch_dtype.")


class ExportParams(_ExportFields, _Frozen):
    """What `swift export` does with the model or adapters."""

    merge_lora: bool = False


class _DeployFields(BaseModel):
    port: Annotated[int, Field(ge=1, le=65535), BeforeValidator(_int_like)] | None = Field(
        None, description="Port to serve on (--port); swift moves to the next free one if taken."
    )
    host: _Word | None = Field(None, description="Address to bind (--host); default chosen by the daemon.")
    served_model_name: _Word | None = Field(None, description="Model name in the OpenAI API.")
    infer_backend: Literal["transformers", "vllm", "sglang", "lmdeploy"] | None = Field(
        None, description="--infer_backend; default transformers."
    )
    torch_dtype: TorchDtype | None = Field(None, description="--torch_dtype.")
    max_new_tokens: _PositiveInt | None = Field(None, description="Default generation length.")


class DeployParams(_DeployFields, _Frozen):
    """How `swift deploy` serves the model."""


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
    swift_args: dict[str, SwiftValue] = Field(default_factory=dict)
    """Extra swift arguments (underscore names) from the file's `swift:` block."""
    notes: tuple[str, ...] = ()
    """What was accepted but not applied, and why."""

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
    """A dropped `{cancel: JOB}` or `{retry: JOB}` file."""

    action: Literal["cancel", "retry"]
    job: str
    """The job's id or name."""


def references(spec: JobSpec) -> set[str]:
    """Jobs (ids or names) this job depends on; `@JOB` references are already in `after`."""
    return set(spec.after)


def dataset_name_problem(name: str) -> str | None:
    """Why `name` (a dropped file's name without .jsonl/.txt) cannot name a dataset, or None."""
    if _DATASET_RE.fullmatch(name):
        return None
    return (
        f"{show(name)} cannot name a dataset: use letters, digits, '.', '_' and '-', starting with a "
        "letter or digit, at most 128 (rename the file)"
    )


def dataset_names(spec: JobSpec) -> set[str]:
    """Names of the dropped datasets the job reads; hub datasets are not included."""
    return {ref.name for ref in (*spec.datasets, *spec.val_datasets) if not ref.hub}


# ---------------------------------------------------------------------------------------------
# The file formats (input models: validation and the published JSON Schema)


class _FileKeys(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


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
    model_type: _Word | None = Field(None, description="swift --model_type, e.g. qwen2.")
    template: _Word | None = Field(None, description="swift --template, e.g. qwen.")
    swift: dict[str, Any] | None = Field(
        None, description="Extra swift arguments by name, checked against the installed ms-swift."
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


class DeployJobFile(_CommonKeys, _DeployFields):
    """Serve a model with `swift deploy` (OpenAI-compatible API)."""

    task_type: Literal["deploy"]
    model: _ModelSource | None = Field(None, description="@JOB (merged or full model), directory or hub id.")
    adapters: _ModelSource | None = Field(None, description="@JOB (its final checkpoint) or a directory.")


class CancelFile(_FileKeys):
    """Cancel a job."""

    cancel: _JobRef = Field(description="The job's id or name.")


class RetryFile(_FileKeys):
    """Run a failed or cancelled job again."""

    retry: _JobRef = Field(description="The job's id or name.")


_FILE_MODELS: Mapping[str, type[_FileKeys]] = {
    "management": ManagementJobFile,
    "trainer": TrainerJobFile,
    "export": ExportJobFile,
    "deploy": DeployJobFile,
    "cancel": CancelFile,
    "retry": RetryFile,
}
_LABELS = {
    "management": "the management-API format (task_type: sft | rl | lora | pretrain)",
    "trainer": "the Swift Trainer API format (model_path, datasets, num_epochs, ...)",
    "export": "an export job (task_type: export)",
    "deploy": "a deploy job (task_type: deploy)",
    "cancel": "a cancel request (cancel: JOB, nothing else)",
    "retry": "a retry request (retry: JOB, nothing else)",
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
    union = ManagementJobFile | TrainerJobFile | ExportJobFile | DeployJobFile | CancelFile | RetryFile
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


# ---------------------------------------------------------------------------------------------
# Detection and validation


@dataclass
class _Ctx:
    """What the builders share: the report, notes, and which file key set each canonical field."""

    filename: str
    swift_args: SwiftArgs
    report: Report
    notes: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, message: str, hint: str = "") -> None:
        self.report.add(key, message, hint)

    def key(self, target: str) -> str:
        return self.origin.get(target, target)


def _detect(doc: Mapping[str, Any], report: Report) -> tuple[str | None, str]:
    """The file's format, and why (for the message when keys of two formats are mixed)."""
    controls = [key for key in ("cancel", "retry") if key in doc]
    if len(controls) > 1:
        report.add("retry", "a file is either a cancel or a retry request", "drop two files")
        return None, ""
    if controls:
        return controls[0], f"it has `{controls[0]}:`"
    task = doc.get("task_type")
    if task is None:
        marker = next((key for key in _TRAINER_MARKERS if key in doc), None)
        if marker is not None:
            return "trainer", f"it has `{marker}:` and no task_type"
        report.add(
            "task_type",
            "cannot tell what kind of job this is",
            "add task_type: sft | rl | lora | pretrain | export | deploy, "
            "or use the Swift Trainer API keys (model_path, datasets, ...)",
        )
        return None, ""
    dialect = _TASK_DIALECT.get(task) if isinstance(task, str) else None
    if dialect is None:
        hint = _suggest(str(task), _TASK_DIALECT) or "one of: " + ", ".join(_TASK_DIALECT)
        report.add("task_type", f"unknown task_type {show(task)}", hint)
    return dialect, f"it has task_type: {task}"


def _check_keys(doc: Mapping[str, Any], dialect: str, why: str, report: Report) -> dict[str, Any]:
    """Keep the keys the format knows; report the others, naming the format a key belongs to."""
    known = _FILE_MODELS[dialect].model_fields
    for key in doc:
        if key in known:
            continue
        owners = [
            d for d in ("management", "trainer", "export", "deploy") if key in _FILE_MODELS[d].model_fields
        ]
        hint = _suggest(key, known)
        if dialect in ("cancel", "retry"):
            report.add(key, f"unknown key `{key}` in {_LABELS[dialect]}", hint or "drop one file per request")
        elif owners:
            report.add(
                key,
                f"`{key}` belongs to {_LABELS[owners[0]]}, but this file is {_LABELS[dialect]} "
                f"because {why}; the formats cannot be mixed",
                hint or "write the file in one format",
            )
        else:
            report.add(key, f"unknown key `{key}`", hint)
    return {key: value for key, value in doc.items() if key in known}


def _describe(error: ErrorDetails) -> tuple[str, str]:
    ctx = error.get("ctx") or {}
    if error["type"] == "job_file":
        return str(ctx.get("message", error["msg"])), str(ctx.get("hint", ""))
    if error["type"] == "missing":
        return "this key is required", ""
    return f"{error['msg']} (got {show(error.get('input'))})", ""


def _validate(model: type[_M], values: Mapping[str, Any], c: _Ctx) -> _M | None:
    """Validate, reporting each error at the file key that supplied the value."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            where = ".".join([c.key(loc[0]), *loc[1:]]) if loc else ""
            c.add(where, *_describe(error))
        return None


# ---------------------------------------------------------------------------------------------
# The `swift:` block


_DAEMON_OWNED = {
    "output_dir": "the daemon gives every run its own output directory",
    "add_version": "the daemon gives every run its own output directory",
    "logging_dir": "logs are written under the run's own directory",
    "exist_ok": "the daemon gives every export its own output directory",
    "ignore_args_error": "unknown swift arguments must stay errors",
    "check_model": "set from [swift] offline in llmtraind.toml",
    "use_hf": "set from [swift] offline in llmtraind.toml",
    "hub_token": "put tokens in the daemon's environment, never in a job file",
    "resume_from_checkpoint": "the daemon resumes retried runs itself",
}
_JOB_KEYS = {
    "model": "the job's own model key (model_name, base_model, policy_model, model_path or model)",
    "dataset": "the job's own dataset key (dataset or datasets)",
    "val_dataset": "the job's own val_dataset key",
    "adapters": "the job's own adapters key",
    "reward_model": "the job's own reward_model key",
    "tuner_type": "task_type: lora, or tuner: full | lora | qlora",
    "rlhf_type": "algorithm",
}
_NAMING = ("model_type", "template")
_TRAIN_LIFTABLE = (frozenset(TrainParams.model_fields) - TrainParams.NOT_SWIFT).union(_NAMING)
_EXPORT_LIFTABLE = frozenset(ExportParams.model_fields).union(_NAMING)
_DEPLOY_LIFTABLE = frozenset(DeployParams.model_fields).union(_NAMING)
_Lifted = dict[str, tuple[str, Any]]


def _swift_name(key: str, command: str, c: _Ctx) -> str | None:
    """The swift argument a `swift:` key names, or None after reporting why it cannot be used."""
    name, where = key.replace("-", "_"), f"swift.{key}"
    if name in _DAEMON_OWNED:
        c.add(where, f"`{key}` is set by the daemon, not by jobs", _DAEMON_OWNED[name])
    elif name in _JOB_KEYS:
        c.add(where, f"`{key}` is not given under swift:", f"use {_JOB_KEYS[name]}")
    elif name not in c.swift_args.names(command):
        message = f"`swift {command}` of ms-swift {c.swift_args.version} has no argument `{key}`"
        c.add(where, message, _suggest(name, c.swift_args.names(command)))
    else:
        return name
    return None


def _swift_scalar(value: object) -> SwiftScalar | None:
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return value if isinstance(value, str) and "\x00" not in value else None


def _swift_value(value: object) -> SwiftValue | None:
    """A value for the command line: scalars, non-empty lists of scalars, mappings as JSON."""
    if isinstance(value, dict):
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):
            return None
    if isinstance(value, list):
        items = [_swift_scalar(item) for item in value]
        clean = [item for item in items if item is not None]
        return clean if clean and len(clean) == len(items) else None
    return _swift_scalar(value)


def _swift_block(
    raw: Mapping[str, Any] | None, command: str, liftable: frozenset[str], c: _Ctx
) -> tuple[_Lifted, dict[str, SwiftValue]]:
    """Split `swift:` into values the spec types itself (lifted) and extra arguments."""
    lifted: _Lifted = {}
    extras: dict[str, SwiftValue] = {}
    for key, value in (raw or {}).items():
        name = _swift_name(key, command, c)
        if name is None:
            continue
        if name in lifted or name in extras:
            c.add(f"swift.{key}", f"`{name}` is given twice", "keep one spelling")
        elif name in liftable:
            lifted[name] = (f"swift.{key}", value)
        elif (converted := _swift_value(value)) is not None:
            extras[name] = converted
        else:
            c.add(
                f"swift.{key}",
                f"{show(value)} is not a swift argument value",
                "use a string, number, true/false, a list of those, or a mapping (passed as JSON)",
            )
    return lifted, extras


def _merge_lifted(values: dict[str, Any], lifted: _Lifted, names: Iterable[str], c: _Ctx) -> None:
    for name in names:
        if name not in lifted:
            continue
        where, value = lifted[name]
        if name in values:
            c.add(where, f"{name} is set twice: by `{c.key(name)}` and by `{where}`", "keep one")
        else:
            values[name] = value
            c.origin[name] = where


# ---------------------------------------------------------------------------------------------
# Building the spec


class _Naming(_Frozen):
    model_type: _Word | None = None
    template: _Word | None = None


_MGMT_TASKS: Mapping[str, tuple[Task, Tuner]] = {
    "sft": ("sft", "full"),
    "rl": ("rlhf", "full"),
    "rlhf": ("rlhf", "full"),
    "lora": ("sft", "lora"),
    "pretrain": ("pretrain", "full"),
}
_MGMT_MODEL_KEYS = {
    "lora": ("base_model", "model_name", "policy_model", "model"),
    "rl": ("policy_model", "model_name", "base_model", "model"),
    "rlhf": ("policy_model", "model_name", "base_model", "model"),
}
_MGMT_ALIASES = {
    "max_length": ("max_length", "max_seq_length", "sequence_length"),
    "per_device_train_batch_size": ("per_device_train_batch_size", "per_device_batch_size"),
    "global_batch_size": ("global_batch_size", "train_batch_size"),
    "lora_rank": ("lora_rank", "lora_r"),
    "target_modules": ("target_modules", "peft_target_modules"),
    "model_name": (),
}
_TRAINER_ALIASES = {
    "num_train_epochs": ("num_train_epochs", "num_epochs"),
    "per_device_train_batch_size": ("per_device_train_batch_size", "batch_size"),
}
_RL_ONLY = ("algorithm", "reward_model", "rollout_batch_size", "update_epochs", "kl_target")
_RL_TARGETS = {
    ("rollout_batch_size", "ppo"): "local_rollout_forward_batch_size",
    ("rollout_batch_size", "grpo"): "generation_batch_size",
    ("update_epochs", "ppo"): "num_ppo_epochs",
    ("update_epochs", "grpo"): "num_iterations",
}
_LORA_ONLY = ("lora_rank", "lora_alpha", "lora_dropout", "target_modules")
_QUANT = ("quant_method", "quant_bits", "bnb_4bit_quant_type")


def _given(f: BaseModel, names: Iterable[str], c: _Ctx) -> dict[str, Any]:
    """The values the file sets for these keys, remembering the key of each."""
    values = {name: getattr(f, name) for name in names if getattr(f, name, None) is not None}
    c.origin.update({name: name for name in values})
    return values


def _train_values(f: BaseModel, aliases: Mapping[str, tuple[str, ...]], c: _Ctx) -> dict[str, Any]:
    """TrainParams values from the file, each from the one key (or alias) that sets it."""
    fields = type(f).model_fields
    values: dict[str, Any] = {}
    for target in TrainParams.model_fields:
        given = [
            key for key in aliases.get(target, (target,)) if key in fields and getattr(f, key) is not None
        ]
        if len(given) > 1:
            c.add(given[1], f"`{given[0]}` and `{given[1]}` both set {target}", "keep one")
        if given:
            values[target] = getattr(f, given[0])
            c.origin[target] = given[0]
    return values


def _one_of(f: BaseModel, keys: tuple[str, ...], what: str, c: _Ctx) -> ModelRef | None:
    """The one key among synonyms that names the model."""
    given = [key for key in keys if getattr(f, key) is not None]
    if len(given) > 1:
        c.add(given[1], " and ".join(f"`{key}`" for key in given) + f" all name the {what}", "keep one")
    if not given:
        c.add(keys[0], f"the {what} is missing", f"add {keys[0]}: /abs/model/dir, @JOB or a hub id")
        return None
    c.origin[what] = given[0]
    ref: ModelRef = getattr(f, given[0])
    return ref


def _resolve_tuner(tuner: Tuner, params: TrainParams, c: _Ctx) -> tuple[Tuner, TrainParams]:
    """LoRA keys need a LoRA tuner; quantisation turns LoRA into QLoRA (bnb, 4 bit by default)."""
    quantised = any(getattr(params, key) is not None for key in _QUANT)
    if tuner == "full":
        given = (c.key(target) for target in (*_LORA_ONLY, *_QUANT) if getattr(params, target) is not None)
        for key in dict.fromkeys(given):  # use_8bit sets two targets; report it once
            c.add(
                key,
                f"`{key}` applies to LoRA, but this job trains all weights",
                "use task_type: lora, or add tuner: lora (tuner: qlora for a quantised base model)",
            )
        return tuner, params
    if tuner == "lora" and not quantised:
        return tuner, params
    method = params.quant_method or "bnb"
    bits = params.quant_bits or (None if method == "fp8" else 4)
    if params.bnb_4bit_quant_type is not None and bits != 4:
        c.add(
            c.key("bnb_4bit_quant_type"),
            f"bnb_4bit_quant_type needs 4-bit quantisation, not {bits}",
            "remove use_8bit or quant_bits, or bnb_4bit_quant_type",
        )
    return "qlora", params.model_copy(update={"quant_method": method, "quant_bits": bits})


def _check_batch(params: TrainParams, c: _Ctx) -> None:
    """Two of global batch, per-GPU batch and accumulation fix the third once the GPU count is known."""
    sizes = (params.global_batch_size, params.per_device_train_batch_size, params.gradient_accumulation_steps)
    if None not in sizes:
        c.add(
            c.key("global_batch_size"),
            f"`{c.key('global_batch_size')}`, `{c.key('per_device_train_batch_size')}` and "
            f"`{c.key('gradient_accumulation_steps')}` are all given",
            "give two of them; the daemon derives the third from the number of GPUs",
        )


def _finish_training(
    f: ManagementJobFile | TrainerJobFile,
    c: _Ctx,
    core: dict[str, Any],
    values: dict[str, Any],
    gpu_ids: tuple[int | str, ...] | None = None,
) -> JobSpec | None:
    """Shared by both training formats: swift: block, hyper-parameters, tuner, datasets."""
    lifted, extras = _swift_block(f.swift, _SWIFT_COMMAND[core["task"]], _TRAIN_LIFTABLE, c)
    _merge_lifted(values, lifted, TrainParams.model_fields, c)
    if not core["datasets"]:
        c.add(
            "dataset" if isinstance(f, ManagementJobFile) else "datasets",
            "a training job needs at least one dataset",
            _DATASET_HINT,
        )
    params = _validate(TrainParams, values, c)
    if params is not None:
        _check_batch(params, c)
        core["tuner"], core["train"] = _resolve_tuner(core["tuner"], params, c)
    return _assemble(f, c, core, lifted, extras, gpu_ids)


def _build_management(f: ManagementJobFile, c: _Ctx) -> JobSpec | None:
    task, default_tuner = _MGMT_TASKS[f.task_type]
    tuner = f.tuner or default_tuner
    if f.task_type == "lora" and tuner == "full":
        c.add(
            "tuner",
            "task_type: lora trains LoRA adapters, not all weights",
            "remove tuner, or use task_type: sft",
        )
        tuner = default_tuner
    values = _train_values(f, _MGMT_ALIASES, c)
    if f.use_8bit:
        _use_8bit(values, c)
    core: dict[str, Any] = {
        "dialect": "management",
        "task": task,
        "tuner": tuner,
        "model": _one_of(
            f,
            _MGMT_MODEL_KEYS.get(f.task_type, ("model_name", "base_model", "policy_model", "model")),
            "model",
            c,
        ),
        "rlhf_type": _management_rl(f, task, values, c),
        "reward_model": f.reward_model,
        "datasets": f.dataset or (),
        "val_datasets": f.val_dataset or (),
    }
    _management_notes(f, task, c)
    return _finish_training(f, c, core, values)


def _use_8bit(values: dict[str, Any], c: _Ctx) -> None:
    """`use_8bit: true` is bitsandbytes 8-bit loading, i.e. QLoRA with quant_bits 8."""
    for target, value in (("quant_method", "bnb"), ("quant_bits", 8)):
        if values.setdefault(target, value) != value:
            c.add("use_8bit", f"use_8bit: true contradicts {c.key(target)}: {values[target]}", "keep one")
        c.origin.setdefault(target, "use_8bit")


def _management_rl(f: ManagementJobFile, task: Task, values: dict[str, Any], c: _Ctx) -> RlhfType | None:
    """The rl keys of the management API in swift's terms; they are errors for other tasks."""
    if task != "rlhf":
        for key in _RL_ONLY:
            if getattr(f, key) is not None:
                c.add(key, f"`{key}` applies to task_type: rl", "remove it, or use task_type: rl")
        return None
    if f.reward_model is not None and f.algorithm not in ("ppo", "grpo"):
        c.add("reward_model", "reward_model is used only by algorithm ppo or grpo", "set algorithm: ppo")
    if f.algorithm == "ppo" and f.reward_model is None:
        c.add("algorithm", "algorithm: ppo needs a reward_model", "reward_model: /abs/dir, @JOB or a hub id")
    for key in ("rollout_batch_size", "update_epochs"):
        target = _RL_TARGETS.get((key, f.algorithm or ""))
        if getattr(f, key) is None:
            continue
        if target is None:
            c.add(key, f"`{key}` applies to algorithm ppo or grpo", "set algorithm: ppo or algorithm: grpo")
        elif target in values:
            c.add(key, f"`{key}` and `{c.key(target)}` both set {target}", "keep one")
        else:
            values[target] = getattr(f, key)
            c.origin[target] = key
    return f.algorithm


def _management_notes(f: ManagementJobFile, task: Task, c: _Ctx) -> None:
    if task == "rlhf" and f.algorithm is None:
        c.notes.append(
            "algorithm not given: swift rlhf trains dpo, its default and the rule for preference data"
        )
    if f.kl_target is not None:
        c.notes.append(
            f"kl_target {f.kl_target:g} not applied: ms-swift 4.6 has no adaptive KL target "
            "(ppo uses a fixed kl_coef, default 0.05; set swift: {kl_coef: ...} to change it)"
        )
    if f.tokenizer is not None:
        c.notes.append(
            f"tokenizer {f.tokenizer!r} not used: ms-swift 4.6 has no tokenizer argument and "
            "loads the tokenizer from the model directory"
        )


def _build_trainer(f: TrainerJobFile, c: _Ctx) -> JobSpec | None:
    values = _train_values(f, _TRAINER_ALIASES, c)
    if f.batch_size is not None and "per_device_eval_batch_size" not in values:
        values["per_device_eval_batch_size"] = f.batch_size
        c.origin["per_device_eval_batch_size"] = "batch_size"
    if f.gpu_id is not None and f.gpu_ids is not None:
        c.add("gpu_id", "`gpu_id` and `gpu_ids` both choose GPUs", "keep one")
    if f.output_dir is not None:
        c.notes.append(f"output_dir {f.output_dir!r} not used: the daemon gives every run its own directory")
    core: dict[str, Any] = {
        "dialect": "trainer",
        "task": "sft",
        "tuner": "lora",
        "model": _one_of(f, ("model_path", "model"), "model", c),
        "datasets": f.datasets or (),
        "val_datasets": f.val_dataset or (),
    }
    return _finish_training(f, c, core, values, f.gpu_id)


def _build_export(f: ExportJobFile, c: _Ctx) -> JobSpec | None:
    if f.adapters is None and f.model is None:
        c.add(
            "task_type", "an export job needs adapters: or model:", 'adapters: "@JOB" merges that job\'s LoRA'
        )
    lifted, extras = _swift_block(f.swift, "export", _EXPORT_LIFTABLE, c)
    values = _given(f, (*_ExportFields.model_fields, "merge_lora"), c)
    _merge_lifted(values, lifted, ExportParams.model_fields, c)
    values.setdefault("merge_lora", f.adapters is not None)
    params = _validate(ExportParams, values, c)
    if params is not None:
        _check_export(f, params, bool(extras), c)
    core = {
        "dialect": "export",
        "task": "export",
        "model": f.model,
        "adapters": f.adapters,
        "datasets": f.dataset or (),
        "export": params,
    }
    return _assemble(f, c, core, lifted, extras)


def _check_export(f: ExportJobFile, params: ExportParams, has_extras: bool, c: _Ctx) -> None:
    method, bits = params.quant_method, params.quant_bits
    if method is not None and method != "fp8" and bits is None:
        c.add(c.key("quant_method"), f"quant_method: {method} needs quant_bits", "e.g. quant_bits: 4")
    if bits is not None and method is None:
        c.add(c.key("quant_bits"), "quant_bits needs a quant_method", "e.g. quant_method: awq")
    if method in ("awq", "gptq", "gptq_v2") and not f.dataset:
        c.add(c.key("quant_method"), f"{method} needs calibration data", "add dataset: NAME")
    if params.merge_lora and f.adapters is None:
        c.add(c.key("merge_lora"), "merge_lora needs adapters to merge", 'add adapters: "@JOB"')
    if not params.merge_lora and method is None and not has_extras:
        c.add(
            "task_type",
            "this export job has nothing to do",
            "merge adapters (adapters:), quantise (quant_method:), or e.g. swift: {to_ollama: true}",
        )


def _build_deploy(f: DeployJobFile, c: _Ctx) -> JobSpec | None:
    if f.model is None and f.adapters is None:
        c.add("task_type", "a deploy job needs model: or adapters:", 'model: "@JOB" serves that job\'s model')
    lifted, extras = _swift_block(f.swift, "deploy", _DEPLOY_LIFTABLE, c)
    values = _given(f, _DeployFields.model_fields, c)
    _merge_lifted(values, lifted, DeployParams.model_fields, c)
    core = {
        "dialect": "deploy",
        "task": "deploy",
        "model": f.model,
        "adapters": f.adapters,
        "deploy": _validate(DeployParams, values, c),
    }
    return _assemble(f, c, core, lifted, extras)


def _default_name(c: _Ctx) -> str:
    stem = PurePosixPath(c.filename.replace("\\", "/")).name
    name = stem.lower()
    for ext in (".yaml", ".yml", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if not _NAME_RE.fullmatch(name):
        c.add(
            "name",
            f"the file name {show(stem)} does not make a job name",
            f"add name: ({_NAME_HINT} characters)",
        )
    return name


def _common_fields(
    f: _CommonKeys, c: _Ctx, core: Mapping[str, Any], gpu_ids: tuple[int | str, ...] | None
) -> dict[str, Any]:
    """Keys every format shares; `@JOB` references are added to `after`."""
    name = f.name if f.name is not None else _default_name(c)
    refs = [core.get(key) for key in ("model", "adapters", "reward_model")]
    implied = [ref.ref for ref in refs if isinstance(ref, ModelRef) and ref.kind == "job"]
    after = tuple(dict.fromkeys([*(f.after or ()), *implied]))
    if name in after:
        c.add("after", f"job {name} cannot wait for itself", "remove the reference to its own name")
    ids = gpu_ids if gpu_ids is not None else f.gpu_ids or ()
    gpus = len(ids) if f.gpus is None and ids else f.gpus
    if ids and gpus != len(ids):
        c.add(
            "gpus", f"gpus: {gpus}, but {len(ids)} GPU(s) are listed by id", "give gpus or gpu_ids, not both"
        )
    return {
        "name": name,
        "project": f.project or "default",
        "priority": f.priority or 0,
        "after": after,
        "gpus": gpus,
        "gpu_ids": ids,
        "min_free_memory_mib": f.min_free_memory_mib,
        "timeout_s": f.timeout,
        "retries": f.retries or 0,
    }


def _assemble(
    f: _CommonKeys,
    c: _Ctx,
    core: dict[str, Any],
    lifted: _Lifted,
    extras: dict[str, SwiftValue],
    gpu_ids: tuple[int | str, ...] | None = None,
) -> JobSpec | None:
    """The spec, once every part is valid; then its swift arguments are checked as a whole."""
    values = _given(f, _NAMING, c)
    _merge_lifted(values, lifted, _NAMING, c)
    naming = _validate(_Naming, values, c)
    common = _common_fields(f, c, core, gpu_ids)
    if naming is None or c.report.problems:
        return None
    spec = JobSpec(**core, **naming.model_dump(), **common, swift_args=extras, notes=tuple(c.notes))
    _check_swift_names(spec, c)
    return spec


def _implied_names(spec: JobSpec) -> set[str]:
    """The swift arguments the command builder will pass for this spec."""
    params = spec.train or spec.export or spec.deploy
    names = {key for key, value in params if value is not None} if params is not None else set()
    names -= TrainParams.NOT_SWIFT
    names.update(
        key for key in ("model", "adapters", "reward_model", "rlhf_type", *_NAMING) if getattr(spec, key)
    )
    names.update(
        key for key, refs in (("dataset", spec.datasets), ("val_dataset", spec.val_datasets)) if refs
    )
    names.update(["tuner_type"] if spec.tuner else [])
    return names


def _check_swift_names(spec: JobSpec, c: _Ctx) -> None:
    """Every argument the job implies must exist in the installed ms-swift (another version may differ)."""
    command = spec.swift_command
    for name in sorted(_implied_names(spec) - c.swift_args.names(command)):
        c.add(
            c.key(name),
            f"ms-swift {c.swift_args.version} has no `--{name}` for `swift {command}`",
            "remove the key, or run the daemon with an ms-swift that has it",
        )


def _build(parsed: _FileKeys, c: _Ctx) -> JobSpec | ControlRequest | None:
    match parsed:
        case CancelFile():
            return ControlRequest(action="cancel", job=parsed.cancel)
        case RetryFile():
            return ControlRequest(action="retry", job=parsed.retry)
        case ManagementJobFile():
            return _build_management(parsed, c)
        case TrainerJobFile():
            return _build_trainer(parsed, c)
        case ExportJobFile():
            return _build_export(parsed, c)
        case DeployJobFile():
            return _build_deploy(parsed, c)
    return None


def parse_job_file(
    data: bytes, filename: str, *, max_bytes: int, swift_args: SwiftArgs
) -> JobSpec | ControlRequest:
    """Parse a dropped job file (YAML, or JSON, which is YAML) into a JobSpec or a ControlRequest.

    `filename` gives the default job name and labels the error text. Raises JobFileError listing
    every problem found, each with its key, line and a hint; nothing else escapes.
    """
    doc, lines = load_document(data, filename, max_bytes)
    c = _Ctx(filename=filename, swift_args=swift_args, report=Report(lines))
    dialect, why = _detect(doc, c.report)
    if dialect is None:
        raise c.report.error(filename)
    clean = _check_keys(doc, dialect, why, c.report)
    parsed = _validate(_FILE_MODELS[dialect], clean, c)
    result = _build(parsed, c) if parsed is not None and not c.report.problems else None
    if result is None or c.report.problems:
        raise c.report.error(filename)
    return result
