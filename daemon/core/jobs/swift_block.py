"""The `swift:` block of extra arguments, checked against the installed ms-swift's argument list.

A name the spec models itself is lifted to its typed place, so it is checked like the top-level
key; names the daemon owns or that name models and datasets are refused with the key to use. Last,
every argument the finished spec implies must exist in the installed ms-swift, which may be another
version than the one the job was written for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from daemon.core.jobs.context import _Ctx
from daemon.core.jobs.formats import _suggest
from daemon.core.jobs.params import DeployParams, ExportParams, TrainParams
from daemon.core.jobs.problems import show
from daemon.core.jobs.secrets import is_secret_name, secret_ref
from daemon.core.jobs.spec import JobSpec, SwiftScalar, SwiftValue
from daemon.core.jobs.trust import path_refusal, refusals

_DAEMON_OWNED = {
    "output_dir": "the daemon gives every run its own output directory",
    "add_version": "the daemon gives every run its own output directory",
    "logging_dir": "logs are written under the run's own directory",
    "exist_ok": "the daemon gives every export its own output directory",
    "ignore_args_error": "unknown swift arguments must stay errors",
    "check_model": "set from [swift] offline in llmtraind.toml",
    "use_hf": "set from [swift] offline in llmtraind.toml",
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
        plain = key.replace("-", "_")
        if is_secret_name(plain) and plain not in _DAEMON_OWNED:
            _swift_secret(key, value, command, c)
            continue
        refused = [] if plain in liftable else refusals(f"swift.{key}", plain, value, c.policy)
        for problem in refused:
            c.add(f"swift.{key}", problem)
        if refused:
            continue
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


def _swift_secret(key: str, value: object, command: str, c: _Ctx) -> None:
    """A secret argument is kept by reference (`c.secrets`), never as a value."""
    where = f"swift.{key}"
    ref, problem = secret_ref(key, value, c.policy.secret_env, c.policy.secret_files)
    if problem is not None:
        c.add(where, *problem)
        return
    name = _swift_name(key, command, c)
    if name is None or ref is None:
        return
    if name in c.secrets:
        c.add(where, f"`{name}` is given twice", "keep one spelling")
    else:
        c.secrets[name] = ref


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


def _check_system_file(spec: JobSpec, c: _Ctx) -> None:
    """swift reads a `system` ending in .txt from that file."""
    system = spec.train.system if spec.train is not None else None
    if system is not None and system.endswith(".txt"):
        where = c.key("system")
        if (problem := path_refusal(where, system, c.policy.allowed_paths)) is not None:
            c.add(where, problem)


def _check_swift_names(spec: JobSpec, c: _Ctx) -> None:
    """Every argument the job implies must exist in the installed ms-swift (another version may differ)."""
    command = spec.swift_command
    for name in sorted(_implied_names(spec) - c.swift_args.names(command)):
        c.add(
            c.key(name),
            f"ms-swift {c.swift_args.version} has no `--{name}` for `swift {command}`",
            "remove the key, or run the daemon with an ms-swift that has it",
        )
