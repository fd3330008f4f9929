"""A dropped file's bytes -> `JobSpec` or `ControlRequest`: load strictly, tell the format, keep the
keys that format knows, build. Every problem found on the way is reported together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.core.jobs.context import _Ctx, _validate
from daemon.core.jobs.dialects import _build_deploy, _build_export, _build_management, _build_trainer
from daemon.core.jobs.document import load_document
from daemon.core.jobs.formats import (
    _FILE_MODELS,
    _LABELS,
    _TASK_DIALECT,
    _TRAINER_MARKERS,
    CancelFile,
    DeployJobFile,
    ExportJobFile,
    ManagementJobFile,
    PauseFile,
    ResumeFile,
    RetryFile,
    TrainerJobFile,
    _FileKeys,
    _suggest,
)
from daemon.core.jobs.problems import Report, show
from daemon.core.jobs.secrets import is_secret_name
from daemon.core.jobs.spec import ControlRequest, JobSpec
from daemon.core.jobs.trust import CodePolicy

if TYPE_CHECKING:
    from daemon.core.swift_args import SwiftArgs

__all__ = ["CONTROL_ACTIONS", "parse_job_file"]

CONTROL_ACTIONS = ("cancel", "retry", "pause", "resume")
"""The keys that make a file a control request rather than a job."""


def _detect(doc: Mapping[str, Any], report: Report) -> tuple[str | None, str]:
    """The file's format, and why (for the message when keys of two formats are mixed)."""
    controls = [key for key in CONTROL_ACTIONS if key in doc]
    if len(controls) > 1:
        report.add(
            controls[-1], "a file is one control request: cancel, retry, pause or resume", "drop two files"
        )
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
        if dialect in CONTROL_ACTIONS:
            report.add(key, f"unknown key `{key}` in {_LABELS[dialect]}", hint or "drop one file per request")
        elif owners:
            report.add(
                key,
                f"`{key}` belongs to {_LABELS[owners[0]]}, but this file is {_LABELS[dialect]} "
                f"because {why}; the formats cannot be mixed",
                hint or "write the file in one format",
            )
        elif is_secret_name(key):
            report.add(
                key,
                f"`{key}` is a secret and its value must not be written in a job file: "
                "the event log and the API show every job's keys",
                f"give it under swift: by reference, `{key}: {{env: NAME}}` (NAME listed in [swift] "
                "secret_env) or `{file: /path}` (under [swift] secret_files)",
            )
        else:
            report.add(key, f"unknown key `{key}`", hint)
    return {key: value for key, value in doc.items() if key in known}


def _build(parsed: _FileKeys, c: _Ctx) -> JobSpec | ControlRequest | None:
    match parsed:
        case CancelFile():
            return ControlRequest(action="cancel", job=parsed.cancel)
        case PauseFile():
            return ControlRequest(action="pause", job=parsed.pause)
        case ResumeFile():
            return ControlRequest(action="resume", job=parsed.resume)
        case RetryFile():
            target = parsed.retry
            return ControlRequest(action="retry", job=target.job, from_scratch=target.start == "scratch")
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
    data: bytes,
    filename: str,
    *,
    max_bytes: int,
    swift_args: SwiftArgs,
    policy: CodePolicy | None = None,
) -> JobSpec | ControlRequest:
    """Parse a dropped job file (YAML, or JSON, which is YAML) into a JobSpec or a ControlRequest.

    `filename` gives the default job name and labels the error text. Raises JobFileError listing
    every problem found, each with its key, line and a hint; nothing else escapes. `policy` is the
    operator's say on code and paths; without one, nothing that loads code is accepted.
    """
    doc, lines = load_document(data, filename, max_bytes)
    c = _Ctx(filename=filename, swift_args=swift_args, report=Report(lines), policy=policy or CodePolicy())
    dialect, why = _detect(doc, c.report)
    if dialect is None:
        raise c.report.error(filename)
    clean = _check_keys(doc, dialect, why, c.report)
    parsed = _validate(_FILE_MODELS[dialect], clean, c)
    result = _build(parsed, c) if parsed is not None and not c.report.problems else None
    if result is None or c.report.problems:
        raise c.report.error(filename)
    return result
