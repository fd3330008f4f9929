"""Each format's keys mapped onto the canonical spec: the management API's task types, the Swift
Trainer API's LLM job body, and the daemon's own export and deploy jobs.

Aliases, defaults and the checks that only make sense in one format live here; what all formats
share is in `assemble`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from daemon.core.jobs.assemble import _assemble, _given
from daemon.core.jobs.context import _Ctx, _validate
from daemon.core.jobs.formats import DeployJobFile, ExportJobFile, ManagementJobFile, TrainerJobFile
from daemon.core.jobs.params import DeployParams, ExportParams, TrainParams, _DeployFields, _ExportFields
from daemon.core.jobs.secrets import secret_ref
from daemon.core.jobs.spec import _SWIFT_COMMAND, JobSpec, RlhfType, Task, Tuner
from daemon.core.jobs.swift_block import (
    _DEPLOY_LIFTABLE,
    _EXPORT_LIFTABLE,
    _TRAIN_LIFTABLE,
    _merge_lifted,
    _swift_block,
)
from daemon.core.jobs.values import _DATASET_HINT, ModelRef

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
    if f.api_key is not None:
        _deploy_api_key(f.api_key, c)
    params = _validate(DeployParams, values, c)
    if params is not None and params.host is not None and not _loopback(params.host):
        _check_public_deploy(params.host, c)
    core = {
        "dialect": "deploy",
        "task": "deploy",
        "model": f.model,
        "adapters": f.adapters,
        "deploy": params,
    }
    return _assemble(f, c, core, lifted, extras)


def _deploy_api_key(value: object, c: _Ctx) -> None:
    ref, problem = secret_ref("api_key", value, c.policy.secret_env, c.policy.secret_files)
    if problem is not None:
        c.add("api_key", *problem)
    elif "api_key" in c.secrets:
        c.add("api_key", "the api_key is given twice: at the top and under swift:", "keep one")
    elif ref is not None:
        c.secrets["api_key"] = ref


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_public_deploy(host: str, c: _Ctx) -> None:
    """A server on another address than loopback answers whoever reaches it: the operator must
    allow that, and clients must present a key, as the daemon's own API demands a token."""
    missing = [
        *(["[swift] allow_public_deploy is false"] if not c.policy.allow_public_deploy else []),
        *(["the job gives no api_key"] if "api_key" not in c.secrets else []),
    ]
    if missing:
        c.add(
            c.key("host"),
            f"host {host!r} is not a loopback address: serving beyond this machine needs an api_key "
            "by reference (api_key: {env: NAME} or {file: /path}) and [swift] allow_public_deploy = "
            f"true in llmtraind.toml; {' and '.join(missing)}",
            "remove host to serve on 127.0.0.1",
        )
