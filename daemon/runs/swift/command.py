"""A canonical `JobSpec` plus the inputs the daemon resolved -> the argv and environment of one run.

Pure: the caller resolves everything that needs the disk or the event log (dataset files, `@JOB`
outputs, GPU UUIDs, a free port) into `RunInputs`; this module only decides the command line, so a
job's exact command can be shown, recorded and tested before anything runs.

Decisions (from `reference/swift-cpu.md` and `reference/swift-cli.md`, measured on ms-swift 4.6):

* `<python> -m swift.cli.<sft|pt|rlhf|export|deploy>`: the trainer runs in-process, with no `swift`
  launcher that would be orphaned on SIGTERM, under exactly the configured interpreter. Training
  on more than one GPU runs `<python> -m torch.distributed.run --nproc_per_node N --master_port P
  -m swift.cli.<cmd>` instead, which is what the launcher would do. Never a shell.
* Every path is absolute (swift stores `--model` as given in args.json, and a relative one becomes
  a hub id when `swift export` later reads it from another folder); `--add_version false`, so the
  run writes straight into the daemon's own `output_dir`; `--tuner_type` and, for rlhf,
  `--rlhf_type` are always written out (`swift pt` would otherwise train LoRA, and dpo is only
  swift's default).
* `--logging_steps 1` unless the job sets it: swift's default of 5 leaves short runs with almost no
  progress, a line per optimizer step costs about 300 bytes, and `MetricsSampler` decides what is
  kept as events.
* `--report_to none` unless the job's `swift:` block sets it: TensorBoard files and PNG plots are
  not read by the daemon.
* Offline (`[swift] offline = true`): `--check_model false` (it asks ModelScope about the model)
  and `--use_hf true` with `HF_HUB_OFFLINE=1` (a missing path then fails in seconds instead of
  retrying ModelScope, which has no offline switch, for 45 s), plus `HF_DATASETS_OFFLINE=1` and
  `TRANSFORMERS_OFFLINE=1`. A hub model or dataset is refused before anything starts.
* `global_batch_size` is not a swift argument. With `per_device_train_batch_size` (default 1) it
  gives `gradient_accumulation_steps = ceil(global / (per_device * n_gpus))`. If the job gives
  `gradient_accumulation_steps` itself, that value is kept as given and the per-device batch is
  derived instead, `ceil(global / (accumulation * n_gpus))`, which is the job-file rule ("give two
  of the three, the daemon derives the third"). Rounding up means the effective batch is never
  smaller than asked.
* The job's `swift:` arguments come last and replace any flag of the same name, so argv never
  holds a flag twice.
* `swift export` writes into `<output_dir>/model` (`EXPORT_DIR`), a directory it creates: it
  refuses an existing output directory, and with `--exist_ok true` its LoRA merge silently skips
  one that exists (rc 0, nothing merged), while the runner may already have made the run
  directory for its log. A retry needs a fresh run directory, as every run does.
* `swift deploy` binds 127.0.0.1 unless the job names a host (swift's own default is every
  interface).
* Secrets (`spec.secrets`) are references, resolved by the runner when the run starts: one that
  swift also reads from the environment goes there (`ENV_ARGS`); any other is the placeholder
  `${LLMTRAIND_SECRET_<NAME>}` in argv, which the run's supervisor replaces. The command shown and
  recorded holds the reference, never the value.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daemon.core.jobs import DatasetRef, JobSpec, ModelRef, TrainParams
from daemon.core.jobs.secrets import ARG_VAR_PREFIX, ENV_ARGS

__all__ = ["EXPORT_DIR", "CommandError", "RunInputs", "SwiftCommand", "build_command", "format_value"]

EXPORT_DIR = "model"
"""Where in its run directory an export job writes the merged or quantised model."""

DatasetFile = tuple[Path, int | None]
"""A dataset file as swift reads it (absolute), and the rows to sample from it (`#N`), or None."""

_TRAINING = frozenset({"sft", "pt", "rlhf"})
_DEPLOY_HOST = "127.0.0.1"
_QLORA_DEFAULTS = (("quant_method", "bnb"), ("quant_bits", 4))
_NEGATIVE_RE = re.compile(r"-[0-9]+|-[0-9]*\.[0-9]+")
"""What argparse takes for a negative number rather than an option (`_negative_number_matcher`)."""
_ALWAYS_UNSET = (
    "RAY_SWIFT_ARGS",  # swift replaces the whole argv with it when set
    "NNODES",
    "NODE_RANK",
    "MASTER_ADDR",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
)
"""Variables a daemon started from a distributed job's shell could pass on, and that would make
swift treat a single run as one rank of something larger."""


class CommandError(ValueError):
    """The job cannot be turned into a command with these inputs; the message says what to change."""


@dataclass(frozen=True)
class RunInputs:
    """What the daemon resolved for one run of a job; every path absolute."""

    output_dir: Path
    """The run's own, fresh directory: swift writes args.json, logging.jsonl and checkpoints here."""
    python: str
    """Interpreter with ms-swift installed (`[swift] python`, or the daemon's own)."""
    master_port: int
    """A port free for this run: torchrun and DeepSpeed bind it, and two runs must not share one."""
    model_dir: Path | None = None
    """The directory `spec.model` resolved to; required for `@JOB`, overrides a path otherwise."""
    adapters_dir: Path | None = None
    """The checkpoint directory `spec.adapters` resolved to; required for `@JOB`."""
    reward_model_dir: Path | None = None
    """The directory `spec.reward_model` resolved to; required for `@JOB`."""
    datasets: tuple[DatasetFile, ...] = ()
    """The converted files of the job's local datasets, in the job's order (hub datasets excluded)."""
    val_datasets: tuple[DatasetFile, ...] = ()
    """The same for the job's validation datasets."""
    gpu_uuids: tuple[str, ...] = ()
    """The GPUs leased to the run; empty runs on the CPU."""
    offline: bool = True
    """`[swift] offline`: no hub lookups at all."""
    cache_dir: Path | None = None
    """Where swift's dataset cache and matplotlib's font cache go instead of $HOME/.cache."""
    rows: int | None = None
    """How many rows the training datasets give swift (after `#N` sampling); None when unknown."""
    resume_from: Path | None = None
    """A checkpoint of an earlier attempt to continue from (`--resume_from_checkpoint`, training
    only). It must hold the optimizer state, as swift's checkpoints do unless `save_only_model`."""


@dataclass(frozen=True)
class SwiftCommand:
    """One process to start: argv (no shell) and the environment changes it needs."""

    argv: tuple[str, ...]
    env: dict[str, str]
    """Variables to add or override in the daemon's environment."""
    unset_env: tuple[str, ...] = ()
    """Variables to remove from the daemon's environment."""
    secrets: Mapping[str, str] = field(default_factory=dict)
    """Variable -> the reference (`env:NAME`, `file:/path`) whose value the runner puts there when
    the run starts; a `${VAR}` in argv stands for that value."""

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """The child's full environment, given the daemon's (`os.environ`)."""
        drop = set(self.unset_env)
        return {k: v for k, v in base.items() if k not in drop} | self.env

    def flag_names(self) -> tuple[str, ...]:
        """The swift argument names in argv, in order, to check against the installed ms-swift."""
        start = self.argv.index(next(arg for arg in self.argv if arg.startswith("swift.cli."))) + 1
        return tuple(arg[2:].partition("=")[0] for arg in self.argv[start:] if arg.startswith("--"))

    def render(self) -> str:
        """The command as one shell line, for people (API, logs); the daemon never runs it so.
        A secret shows as its reference, `<secret env:NAME>`."""
        shown = {f"${{{var}}}": f"<secret {ref}>" for var, ref in self.secrets.items()}
        env = self.env | {
            var: f"<secret {ref}>" for var, ref in self.secrets.items() if not var.startswith(ARG_VAR_PREFIX)
        }
        assignments = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        return " ".join([*assignments, shlex.join(shown.get(arg, arg) for arg in self.argv)])


def build_command(spec: JobSpec, inputs: RunInputs) -> SwiftCommand:
    """The command that runs `spec` with `inputs`; raises CommandError when it cannot run as given."""
    _check_inputs(inputs)
    command = spec.swift_command
    if inputs.resume_from is not None and command not in _TRAINING:
        raise CommandError(f"only training resumes from a checkpoint, not swift {command}")
    flags = _Flags()
    if command in _TRAINING:
        _training_flags(spec, inputs, flags)
    elif command == "export":
        _export_flags(spec, inputs, flags)
    else:
        _deploy_flags(spec, inputs, flags)
    for name, value in spec.swift_args.items():
        flags.replace(name, value)
    secrets = _secrets(spec, flags)
    gpus = len(inputs.gpu_uuids)
    distributed = command in _TRAINING and gpus > 1
    launcher = (
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(gpus),
            "--master_port",
            str(inputs.master_port),
        ]
        if distributed
        else []
    )
    argv = (inputs.python, *launcher, "-m", f"swift.cli.{command}", *flags.argv())
    return SwiftCommand(
        argv=argv, env=_environment(inputs, distributed), unset_env=_unset(distributed), secrets=secrets
    )


def _secrets(spec: JobSpec, flags: _Flags) -> dict[str, str]:
    """Where each secret goes: its environment variable, or a placeholder flag."""
    secrets: dict[str, str] = {}
    for name, ref in spec.secrets.items():
        var = ENV_ARGS.get(name)
        if var is None:
            var = ARG_VAR_PREFIX + name.upper()
            flags.replace(name, f"${{{var}}}")
        secrets[var] = ref.text()
    return secrets


def format_value(value: object) -> str:
    """One command-line value as swift's parser reads it: true/false, repr floats, plain text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # exact: '%g' would round 1.2345678e-05
    return str(value)


# ---------------------------------------------------------------------------------------------


class _Flags:
    """An ordered `--name values...` list in which each name appears once."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[str, ...]] = {}

    def set(self, name: str, value: object) -> None:
        """Set `--name`; None leaves swift's default, a list or tuple gives several values."""
        if value is None:
            return
        items = value if isinstance(value, list | tuple) else (value,)
        self._values[name] = tuple(format_value(item) for item in items)

    def default(self, name: str, value: object) -> None:
        if name not in self._values:
            self.set(name, value)

    def replace(self, name: str, value: object) -> None:
        """Set `--name` and move it to the end: later flags are the ones a reader looks for."""
        self._values.pop(name, None)
        self.set(name, value)

    def argv(self) -> list[str]:
        out: list[str] = []
        for name, values in self._values.items():
            out.extend(_flag(name, values))
        return out


def _flag(name: str, values: tuple[str, ...]) -> list[str]:
    """argparse reads a separate value that starts with '-' as the next option (unless it looks
    like `-1` or `-0.5`; `-1e-05` does not); as `--name=value` it is always the value."""
    if not any(v.startswith("-") and not _NEGATIVE_RE.fullmatch(v) for v in values):
        return [f"--{name}", *values]
    if len(values) == 1:
        return [f"--{name}={values[0]}"]
    raise CommandError(f"--{name}: the values {list(values)} cannot start with '-' when there are several")


def _check_inputs(inputs: RunInputs) -> None:
    if not inputs.python or "\x00" in inputs.python:
        raise CommandError("no interpreter: set [swift] python to the python that has ms-swift installed")
    if not 0 < inputs.master_port < 65536:
        raise CommandError(f"master_port {inputs.master_port} is not a TCP port")
    paths: list[tuple[str, Path | None]] = [
        ("output_dir", inputs.output_dir),
        ("model_dir", inputs.model_dir),
        ("adapters_dir", inputs.adapters_dir),
        ("reward_model_dir", inputs.reward_model_dir),
        ("cache_dir", inputs.cache_dir),
        ("resume_from", inputs.resume_from),
    ]
    paths += [("dataset", path) for path, _ in (*inputs.datasets, *inputs.val_datasets)]
    for what, path in paths:
        if path is not None and not path.is_absolute():
            raise CommandError(f"{what} {str(path)!r} is not absolute; swift would read it as a hub id")
        if path is not None and "\x00" in str(path):
            raise CommandError(f"{what} {str(path)!r} contains a NUL character")
    for path, sample in (*inputs.datasets, *inputs.val_datasets):
        if sample is not None and sample < 1:
            raise CommandError(f"dataset {path}: sample #{sample} must be 1 or more")


def _source(ref: ModelRef | None, resolved: Path | None, what: str, offline: bool) -> str | None:
    """The `--model`/`--adapters`/`--reward_model` value for a reference, resolved or not."""
    if resolved is not None:
        return str(resolved)
    if ref is None:
        return None
    if ref.kind == "job":
        raise CommandError(
            f"{what} @{ref.ref} is another job's output and was not resolved to a directory "
            f"(does job {ref.ref} have one?)"
        )
    if ref.kind == "hub" and offline:
        raise CommandError(
            f"{what} {ref.ref} is a hub id and [swift] offline = true; download it and name the directory"
        )
    return ref.ref


def _dataset_values(refs: tuple[DatasetRef, ...], files: tuple[DatasetFile, ...], offline: bool) -> list[str]:
    """`--dataset` values in the job's order: converted local files, and hub ids where allowed."""
    local = [ref for ref in refs if not ref.hub]
    if len(local) != len(files):
        raise CommandError(
            f"the job names {len(local)} local dataset(s) but {len(files)} file(s) were resolved for them"
        )
    pending = iter(files)
    values: list[str] = []
    for ref in refs:
        if ref.hub and offline:
            raise CommandError(
                f"dataset {ref.name} is a hub id and [swift] offline = true; download it and drop "
                "the file into the inbox"
            )
        if ref.hub:
            values.append(ref.name if ref.sample is None else f"{ref.name}#{ref.sample}")
        else:
            path, sample = next(pending)
            values.append(str(path) if sample is None else f"{path}#{sample}")
    return values


def _sources(spec: JobSpec, inputs: RunInputs, flags: _Flags) -> None:
    flags.set("model", _source(spec.model, inputs.model_dir, "model", inputs.offline))
    flags.set("adapters", _source(spec.adapters, inputs.adapters_dir, "adapters", inputs.offline))
    flags.set("model_type", spec.model_type)
    flags.set("template", spec.template)


def _datasets(spec: JobSpec, inputs: RunInputs, flags: _Flags) -> None:
    if spec.datasets:
        flags.set("dataset", _dataset_values(spec.datasets, inputs.datasets, inputs.offline))
    if spec.val_datasets:
        flags.set("val_dataset", _dataset_values(spec.val_datasets, inputs.val_datasets, inputs.offline))


def _training_flags(spec: JobSpec, inputs: RunInputs, flags: _Flags) -> None:
    if spec.model is None and inputs.model_dir is None:
        raise CommandError("a training job needs a model")
    _sources(spec, inputs, flags)
    params = spec.train or TrainParams()
    tuner = spec.tuner or "full"
    flags.set("tuner_type", "full" if tuner == "full" else "lora")
    if spec.task == "rlhf":
        rlhf_type = spec.effective_rlhf_type
        flags.set("rlhf_type", rlhf_type)
        reward = _source(spec.reward_model, inputs.reward_model_dir, "reward_model", inputs.offline)
        if rlhf_type == "ppo" and reward is None:
            raise CommandError("rlhf_type ppo needs a reward_model")
        flags.set("reward_model", reward)
    elif spec.reward_model is not None or inputs.reward_model_dir is not None:
        raise CommandError(f"a reward_model is used only by rlhf jobs, not by {spec.task}")
    _datasets(spec, inputs, flags)
    flags.set("output_dir", inputs.output_dir)
    flags.set("add_version", False)
    values = _train_values(params, max(1, len(inputs.gpu_uuids)))
    if tuner == "qlora":
        for name, default in _QLORA_DEFAULTS:
            values[name] = values.get(name) or default
    if spec.task == "rlhf" and spec.effective_rlhf_type == "ppo":
        _fit_ppo_batch(values, spec.swift_args, inputs)
    for name in TrainParams.model_fields:
        if name in values:
            flags.set(name, values[name])
    flags.set("resume_from_checkpoint", inputs.resume_from)
    flags.default("logging_steps", 1)
    flags.set("report_to", "none")
    _offline_flags(inputs, flags, check_model=True)


def _fit_ppo_batch(values: dict[str, object], swift_args: Mapping[str, object], inputs: RunInputs) -> None:
    """PPO (trl) draws whole batches of prompts and drops the last partial one, and its loop
    waits forever for a batch a dataset too small never gives. swift's accumulation default
    (16 / batch / processes) alone asks for 16 prompts per step, more than a small dataset holds:
    when the job leaves accumulation to swift, take as many as the data gives; when the job set
    it, refuse rather than start a run that never ends."""
    if inputs.rows is None:
        return
    processes = max(1, len(inputs.gpu_uuids))
    per_device = _positive(values.get("per_device_train_batch_size"), 1)
    mini_batches = _positive(swift_args.get("num_mini_batches"), 1)
    given = values.get("gradient_accumulation_steps")
    accumulation = _positive(given, math.ceil(16 / per_device / processes))
    step = per_device * mini_batches * processes
    if step * accumulation <= inputs.rows:
        return
    what = (
        f"ppo draws {step * accumulation} prompts per step (per_device_train_batch_size {per_device}"
        f" x gradient_accumulation_steps {accumulation} x num_mini_batches {mini_batches}"
        f" x {processes} process{'es' if processes > 1 else ''}) and its datasets give {inputs.rows}"
    )
    if given is None and step <= inputs.rows:
        values["gradient_accumulation_steps"] = inputs.rows // step
        return
    raise CommandError(
        f"{what}; it would wait forever for a full batch: add rows, or lower "
        "gradient_accumulation_steps or per_device_train_batch_size"
    )


def _positive(value: object, default: int) -> int:
    return value if isinstance(value, int) and value > 0 else default


def _train_values(params: TrainParams, gpus: int) -> dict[str, object]:
    """TrainParams as swift arguments, with global_batch_size turned into batch and accumulation."""
    values: dict[str, object] = {
        name: value for name, value in params if value is not None and name not in TrainParams.NOT_SWIFT
    }
    total = params.global_batch_size
    if total is None:
        return values
    accumulation = params.gradient_accumulation_steps
    if accumulation is None:
        per_device = params.per_device_train_batch_size or 1
        values["gradient_accumulation_steps"] = math.ceil(total / (per_device * gpus))
    elif params.per_device_train_batch_size is None:
        values["per_device_train_batch_size"] = math.ceil(total / (accumulation * gpus))
    # With all three given (job files refuse that), the two explicit values are kept.
    return values


def _export_flags(spec: JobSpec, inputs: RunInputs, flags: _Flags) -> None:
    _sources(spec, inputs, flags)
    _datasets(spec, inputs, flags)
    flags.set("output_dir", inputs.output_dir / EXPORT_DIR)
    params = spec.export
    if params is not None:
        flags.set("merge_lora", True if params.merge_lora else None)
        for name in ("quant_method", "quant_bits", "max_length", "torch_dtype"):
            flags.set(name, getattr(params, name))
    _offline_flags(inputs, flags, check_model=False)


def _deploy_flags(spec: JobSpec, inputs: RunInputs, flags: _Flags) -> None:
    _sources(spec, inputs, flags)
    params = spec.deploy
    flags.set("host", params.host if params is not None and params.host else _DEPLOY_HOST)
    if params is not None:
        for name in ("port", "served_model_name", "infer_backend", "torch_dtype", "max_new_tokens"):
            flags.set(name, getattr(params, name))
    _offline_flags(inputs, flags, check_model=False)


def _offline_flags(inputs: RunInputs, flags: _Flags, *, check_model: bool) -> None:
    """`check_model` exists for training only; export and deploy have no such argument."""
    if not inputs.offline:
        return
    if check_model:
        flags.set("check_model", False)
    flags.set("use_hf", True)


def _environment(inputs: RunInputs, distributed: bool) -> dict[str, str]:
    env = {
        "PYTHONUNBUFFERED": "1",
        # `python -m` puts the working directory first on sys.path; a file there must never
        # shadow a module swift imports.
        "PYTHONSAFEPATH": "1",
        "MASTER_PORT": str(inputs.master_port),
        "CUDA_VISIBLE_DEVICES": ",".join(inputs.gpu_uuids),
    }
    if inputs.gpu_uuids:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if distributed:
        env["NPROC_PER_NODE"] = str(len(inputs.gpu_uuids))
    if inputs.offline:
        env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if inputs.cache_dir is not None:
        env["MODELSCOPE_CACHE"] = str(inputs.cache_dir / "modelscope")
        env["MPLCONFIGDIR"] = str(inputs.cache_dir / "matplotlib")
    return env


def _unset(distributed: bool) -> tuple[str, ...]:
    """NPROC_PER_NODE, when inherited, would make swift size its setup for several processes."""
    return _ALWAYS_UNSET if distributed else (*_ALWAYS_UNSET, "NPROC_PER_NODE")
