"""Each task's settings in ms-swift 4.x argument names.

The `_*Fields` sets are the keys a file may write at its top level (shared by the formats that
take them); the frozen `*Params` are what the spec keeps, None leaving swift's default.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field

from daemon.core.jobs.fields import (
    _Count,
    _Fraction,
    _int_like,
    _Modules,
    _Names,
    _PositiveFloat,
    _PositiveInt,
    _QuantBits,
    _Text,
    _Word,
)
from daemon.core.jobs.values import _Frozen

__all__ = ["DeployParams", "ExportParams", "TrainParams"]


TorchDtype = Literal["bfloat16", "float16", "float32"]


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
    max_pixels: _PositiveInt | None = Field(
        None, description="VLM: resize each picture to at most this many pixels (--max_pixels)."
    )
    freeze_vit: bool | None = Field(None, description="VLM: keep the vision tower frozen (--freeze_vit).")
    freeze_aligner: bool | None = Field(
        None, description="VLM: keep the vision-to-language projector frozen (--freeze_aligner)."
    )


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
