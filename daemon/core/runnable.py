"""What a job needs from this box beyond a valid file: Python packages for the options it uses,
a GPU for what a CPU cannot do, the GPUs it names, and data it can reach. Checked at intake and by
`llmtraind check`, so a job that cannot run here is refused with what to change instead of being
accepted to fail after it was scheduled.

Pure: the caller says which GPUs this box has and which packages are importable.

Measured on this project's CPU box (ms-swift 4.6.0, torch 2.13 CPU, the tiny Qwen2): bfloat16
fails at start-up (`torch_dtype: bfloat16`, `bf16: true`, or a model whose config.json says
bfloat16 and a job that names no dtype: "Your setup doesn't support bf16/gpu"); float16 trains
(`torch_dtype: float16` 17 s, `fp16: true` 41 s for two steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from daemon.core.jobs import JobProblem, JobSpec

__all__ = [
    "Package",
    "cpu_only",
    "device_problems",
    "hub_dataset_problems",
    "needed_packages",
    "reward_model_problem",
]

_QUANT_PACKAGES: Mapping[str, tuple[str, str]] = {
    "bnb": ("bitsandbytes", "bitsandbytes"),
    "awq": ("awq", "autoawq"),
    "gptq": ("gptqmodel", "gptqmodel"),
    "gptq_v2": ("gptqmodel", "gptqmodel"),
    "aqlm": ("aqlm", "aqlm"),
    "hqq": ("hqq", "hqq"),
    "eetq": ("eetq", "eetq"),
}
"""quant_method -> (module, pip name)."""
_BACKENDS: Mapping[str, tuple[str, str]] = {
    "vllm": ("vllm", "vllm"),
    "sglang": ("sglang", "sglang"),
    "lmdeploy": ("lmdeploy", "lmdeploy"),
}
_REPORTERS: Mapping[str, tuple[str, str]] = {
    "wandb": ("wandb", "wandb"),
    "swanlab": ("swanlab", "swanlab"),
    "tensorboard": ("tensorboard", "tensorboard"),
}
_MODEL_PACKAGES: Mapping[str, str] = {"qwen_vl_utils": "qwen-vl-utils"}
"""A module a model type's loader imports -> its pip name, where the two differ."""
_FLASH = frozenset({"flash_attn", "flash_attention_2", "flash_attention_3"})
_BF16 = frozenset({"bfloat16", "bf16"})


@dataclass(frozen=True)
class Package:
    """A Python package a job's options need in the interpreter that runs swift."""

    module: str
    """What `import` names (importlib.util.find_spec)."""
    pip: str
    """What `pip install` names."""
    why: str
    """The job's option that needs it."""
    key: str
    """Where the job sets that option."""


def _texts(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [str(item).lower() for item in items if isinstance(item, str | int | float)]


def _quant_package(spec: JobSpec) -> Package | None:
    params = spec.train if spec.task != "export" else spec.export
    method = params.quant_method if params is not None else None
    if method is None or method not in _QUANT_PACKAGES or (spec.task != "export" and spec.tuner != "qlora"):
        return None
    bits = params.quant_bits if params is not None else None
    if method == "bnb" and spec.task != "export":
        return Package(
            "bitsandbytes", "bitsandbytes", f"{bits or 4}-bit loading (use_8bit, quant_bits)", "quant_method"
        )
    return Package(*_QUANT_PACKAGES[method], f"quant_method {method}", "quant_method")


def _backends(spec: JobSpec) -> list[str]:
    backends = _texts(spec.swift_args.get("infer_backend"))
    if spec.deploy is not None and spec.deploy.infer_backend is not None:
        backends.append(spec.deploy.infer_backend)
    if spec.swift_args.get("use_vllm") is True:
        backends.append("vllm")
    return backends


def needed_packages(spec: JobSpec, model_packages: Sequence[str] = ()) -> list[Package]:
    """Packages the job's options need, each once, in the order the options are checked.
    `model_packages` are the modules the loader of the job's model_type imports (the registry's)."""
    args = spec.swift_args
    wanted = [_quant_package(spec)]
    wanted += [
        Package(m, _MODEL_PACKAGES.get(m, m), f"model_type {spec.model_type}", "model_type")
        for m in model_packages
    ]
    wanted += [
        Package("flash_attn", "flash-attn", f"attn_impl {v}", "swift.attn_impl")
        for v in _texts(args.get("attn_impl"))
        if v in _FLASH
    ]
    if args.get("deepspeed"):
        wanted.append(Package("deepspeed", "deepspeed", "deepspeed", "swift.deepspeed"))
    wanted += [
        Package(*_BACKENDS[b], f"infer_backend {b}", "infer_backend")
        for b in _backends(spec)
        if b in _BACKENDS
    ]
    wanted += [
        Package(*_REPORTERS[r], f"report_to {r}", "swift.report_to")
        for r in _texts(args.get("report_to"))
        if r in _REPORTERS
    ]
    if args.get("predict_with_generate") is True:  # swift's ROUGE and BLEU (swift/metrics/nlg.py)
        why = "predict_with_generate (ROUGE-L and BLEU)"
        wanted += [Package(m, m, why, "swift.predict_with_generate") for m in ("jieba", "nltk", "rouge")]
    if args.get("use_liger_kernel") is True:
        wanted.append(Package("liger_kernel", "liger-kernel", "use_liger_kernel", "swift.use_liger_kernel"))
    found: dict[str, Package] = {}
    for package in wanted:
        if package is not None:
            found.setdefault(package.module, package)
    return list(found.values())


def cpu_only(spec: JobSpec, gpus: Sequence[str]) -> bool:
    """Whether the job runs on the CPU here: it asks for no GPU, or the box has none."""
    return spec.gpus == 0 or not gpus


def _dtype_problem(spec: JobSpec, config_dtype: str | None) -> JobProblem | None:
    dtype = spec.train.torch_dtype if spec.train is not None else None
    hint = "set torch_dtype: float32 (float16 also trains on a CPU), or run it on a box with a GPU"
    if isinstance(dtype, str) and dtype.lower() in _BF16:
        return JobProblem(
            field="torch_dtype",
            message=f"torch_dtype {dtype} needs a GPU, and this job would run on the CPU",
            hint=hint,
        )
    if spec.swift_args.get("bf16") is True:
        return JobProblem(
            field="swift.bf16",
            message="bf16 needs a GPU, and this job would run on the CPU",
            hint="remove bf16",
        )
    if dtype is None and config_dtype is not None and config_dtype.lower() in _BF16:
        return JobProblem(
            field="torch_dtype",
            message=f"the model's config.json says {config_dtype}, which needs a GPU, and this job would "
            "run on the CPU",
            hint=hint,
        )
    return None


def device_problems(
    spec: JobSpec, gpus: Sequence[str] | None, config_dtype: str | None = None
) -> list[JobProblem]:
    """What the job asks of GPUs that this box (`gpus`: its GPUs' indices and UUIDs; None: not
    known) cannot give. `config_dtype` is the model folder's config.json dtype, if any."""
    if gpus is None:
        return []
    problems = []
    missing = [str(g) for g in spec.gpu_ids if str(g) not in gpus]
    if missing:
        have = ", ".join(g for g in gpus if not g.startswith("GPU-")) or "none"
        problems.append(
            JobProblem(
                field="gpu_ids",
                message=f"GPU {', '.join(missing)} is not on this box (its GPUs: {have})",
                hint="name GPUs this box has, or leave gpu_ids/gpu_id out and give gpus: N (gpus: 0 for the CPU)",
            )
        )
    if spec.task in ("sft", "pretrain", "rlhf") and cpu_only(spec, gpus):
        problem = _dtype_problem(spec, config_dtype)
        if problem is not None:
            problems.append(problem)
        if spec.tuner == "qlora" and spec.train is not None and spec.train.quant_method == "bnb":
            bits = spec.train.quant_bits or 4
            problems.append(
                JobProblem(
                    field="quant_method",
                    message=f"{bits}-bit loading (bitsandbytes; use_8bit, quant_bits or bnb_4bit_quant_type) "
                    "needs a GPU, and this job would run on the CPU",
                    hint="remove use_8bit / quant_bits / bnb_4bit_quant_type to train plain LoRA, or run it "
                    "on a box with a GPU",
                )
            )
    return problems


def hub_dataset_problems(spec: JobSpec, offline: bool) -> list[JobProblem]:
    """A hub dataset cannot be read by a daemon that runs offline."""
    if not offline:
        return []
    return [
        JobProblem(
            field="datasets",
            message=f"dataset {ref.name} is a hub id and [swift] offline = true",
            hint="download it, drop the file into the inbox and name it by its dataset name "
            "(the file name without .jsonl), or set [swift] offline = false",
        )
        for ref in (*spec.datasets, *spec.val_datasets)
        if ref.hub
    ]


def reward_model_problem(spec: JobSpec, config: Mapping[str, object] | None) -> JobProblem | None:
    """PPO scores with the reward model's classification head, and ms-swift loads one only for a
    folder whose config.json names a `...ForSequenceClassification` architecture or `num_labels: 1`;
    a plain language model fails at the first step (`... has no attribute 'score'`, measured)."""
    if spec.effective_rlhf_type != "ppo" or spec.reward_model is None or config is None:
        return None
    raw = config.get("architectures")
    arches = [a for a in raw if isinstance(a, str)] if isinstance(raw, list) else []
    if any("sequenceclassification" in a.lower() for a in arches) or config.get("num_labels") == 1:
        return None
    shown = ", ".join(arches) or "no architectures"
    return JobProblem(
        field="reward_model",
        message=f"reward_model {spec.reward_model}: its config.json says {shown}, a model without a "
        "score head; ms-swift's ppo needs a reward model (an architecture ...ForSequenceClassification, "
        "or num_labels: 1)",
        hint="name a reward model, such as the output of an rlhf job with algorithm: rm, or train with "
        "an algorithm that needs none (dpo)",
    )
