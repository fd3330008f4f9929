"""The parts every format shares (name, project, dependencies, GPUs, model naming) and the final
`JobSpec`, made only once every part is valid so that a rejection lists all problems at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel

from daemon.core.jobs.context import _Ctx, _validate
from daemon.core.jobs.fields import _NAME_HINT, _NAME_RE, _Word
from daemon.core.jobs.formats import KeepBest, _CommonKeys, _suggest
from daemon.core.jobs.problems import show
from daemon.core.jobs.spec import JobSpec, SwiftValue
from daemon.core.jobs.swift_block import (
    _NAMING,
    _check_swift_names,
    _check_system_file,
    _Lifted,
    _merge_lifted,
)
from daemon.core.jobs.values import ModelRef, _Frozen


class _Naming(_Frozen):
    model_type: _Word | None = None
    template: _Word | None = None


def _given(f: BaseModel, names: Iterable[str], c: _Ctx) -> dict[str, Any]:
    """The values the file sets for these keys, remembering the key of each."""
    values = {name: getattr(f, name) for name in names if getattr(f, name, None) is not None}
    c.origin.update({name: name for name in values})
    return values


def _keep_best(value: str | KeepBest | None) -> tuple[str, str] | None:
    """`keep_best: METRIC` keeps the lowest value of a loss and the highest of anything else."""
    if value is None:
        return None
    metric, mode = (value, None) if isinstance(value, str) else (value.metric, value.mode)
    return metric, mode or ("min" if "loss" in metric else "max")


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
        "preemptible": bool(f.preemptible),
        "keep_checkpoints": f.keep_checkpoints,
        "keep_best": _keep_best(f.keep_best),
        "nodes": f.nodes or 1,
        "slurm": _slurm_options(f.slurm or {}, c),
    }


SLURM_OPTIONS = frozenset(
    {
        "partition",
        "qos",
        "account",
        "time",
        "constraint",
        "reservation",
        "exclude",
        "nodelist",
        "mem",
        "mem_per_gpu",
        "cpus_per_task",
        "cpus_per_gpu",
        "comment",
        "mail_type",
        "mail_user",
        "begin",
        "nice",
        "licenses",
        "wckey",
    }
)
"""The job-level sbatch options a `slurm:` block may set; the daemon owns the rest (--nodes,
--ntasks-per-node, --job-name, --output, --chdir), since its watching depends on them."""


def _slurm_options(block: Mapping[str, Any], c: _Ctx) -> dict[str, str]:
    options: dict[str, str] = {}
    for raw, value in block.items():
        name = str(raw).replace("-", "_")
        if name not in SLURM_OPTIONS:
            hint = _suggest(name, SLURM_OPTIONS) or "one of: " + ", ".join(sorted(SLURM_OPTIONS))
            c.add(f"slurm.{raw}", f"unknown Slurm option {show(str(raw))}", hint)
        elif isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
            c.add(f"slurm.{raw}", f"slurm.{raw} must be a text or a number", 'e.g. time: "2:00:00"')
        elif any(ch in str(value) for ch in "\n\r\0"):
            c.add(f"slurm.{raw}", f"slurm.{raw} must be one line", "")
        else:
            options[name] = str(value)
    return options


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
    spec = JobSpec(
        **core,
        **naming.model_dump(),
        **common,
        swift_args=extras,
        secrets=dict(c.secrets),
        notes=tuple(c.notes),
    )
    _check_swift_names(spec, c)
    _check_system_file(spec, c)
    return spec
