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
  Arguments that load code are refused unless the operator allows code, and paths that swift
  opens must lie under folders the operator named (`trust`).
"""

from __future__ import annotations

from daemon.core.jobs.formats import (
    CancelFile,
    DeployJobFile,
    ExportJobFile,
    ManagementJobFile,
    RetryFile,
    TrainerJobFile,
    job_file_schema,
)
from daemon.core.jobs.params import DeployParams, ExportParams, TrainParams
from daemon.core.jobs.parse import parse_job_file
from daemon.core.jobs.problems import JobFileError, JobProblem
from daemon.core.jobs.resolved import Resolution
from daemon.core.jobs.spec import (
    DEFAULT_RLHF_TYPE,
    ControlRequest,
    Dialect,
    JobSpec,
    RlhfType,
    SwiftValue,
    Task,
    Tuner,
    dataset_names,
    references,
)
from daemon.core.jobs.trust import CodePolicy
from daemon.core.jobs.values import DatasetRef, ModelRef, dataset_name_problem

__all__ = [
    "CancelFile",
    "CodePolicy",
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
    "Resolution",
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
