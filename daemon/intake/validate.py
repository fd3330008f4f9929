"""Validate one dropped file, the same way for `llmtraind check` and for inbox intake.

This reads the file (blocking: callers on the event loop run it in a thread), hashes it while
streaming, and hands the bytes to the pure parsers in `jobs` and `datasets`. A job's local model
folders are read here too: swift loads every model trusting its remote code, so a folder whose
config asks for some (`auto_map`) is code the job brings, refused unless `[swift] allow_code`.

A job is then checked against this box, so that one that cannot run here is refused now rather
than failing once scheduled: its model names become folders (`models`), hub datasets need a hub,
the packages its options need must be importable, and the GPUs it names or its dtype needs must
be here (`core.runnable`). What it sets and the daemon does not apply is kept as its warnings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from daemon.core.config import LimitsConfig, SwiftConfig
from daemon.core.datasets import DatasetValidator, LineError, MediaResolver
from daemon.core.drops import FileVerdict, Kind, dataset_name, file_kind, is_bundle
from daemon.core.jobs import (
    CodePolicy,
    ControlRequest,
    JobFileError,
    JobProblem,
    JobSpec,
    ModelRef,
    dataset_name_problem,
    parse_job_file,
)
from daemon.core.jobs.trust import MODEL_FOLDER_ARGS, code_refusal
from daemon.core.layout import StateLayout
from daemon.core.models import RegistryError
from daemon.core.pausing import own_plugins
from daemon.core.runnable import device_problems, hub_dataset_problems, needed_packages, reward_model_problem
from daemon.core.swift_args import BUNDLED_VERSION, SwiftArgs, bundled, introspect_installed
from daemon.intake.hardware import missing_packages
from daemon.intake.media import BundleProblem, MediaStore, describe, open_bundle
from daemon.intake.models import registry, settle_models

__all__ = ["CHUNK", "Box", "Progress", "check_file", "local_swift_args", "remote_code"]

CHUNK = 1024 * 1024
_REMOTE_CODE_FILES = (
    "config.json",
    "tokenizer_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)
"""The files transformers reads `auto_map` from: classes named there are imported from the folder."""
_MAX_CONFIG_BYTES = 64 * 1024 * 1024


def local_swift_args() -> SwiftArgs:
    """The bundled list when the installed ms-swift is the bundled version (or absent), else ask it."""
    try:
        installed = importlib.metadata.version("ms-swift")
    except importlib.metadata.PackageNotFoundError:
        return bundled()
    return bundled() if installed == BUNDLED_VERSION else introspect_installed()


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """Open without following links or blocking on FIFOs, and insist on a plain file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValueError("not a regular file (a folder, FIFO or device); drop plain files only")
    return fd, st


def _refuse(path: Path, kind: Kind, why: str) -> FileVerdict:
    return FileVerdict(path, kind, False, why, problems=f"{path.name}: rejected: {why}\n")


@dataclass(frozen=True)
class Box:
    """What this box has that a job may need: the operator's `[models]`, and the GPUs the daemon
    manages (indices and UUIDs; None: not known, so GPU checks are skipped)."""

    models: Mapping[str, Path] = field(default_factory=dict)
    gpus: Sequence[str] | None = None


Progress = Callable[[int, int, int], None]
"""Called after each chunk of a dataset with (bytes done, bytes in all, rows done); it may raise to
abandon the reading (the daemon does when it stops)."""


def check_file(
    path: Path,
    limits: LimitsConfig,
    swift_args: SwiftArgs,
    converted: BinaryIO | None = None,
    *,
    progress: Progress | None = None,
    same_as: os.stat_result | None = None,
    name: str | None = None,
    swift: SwiftConfig | None = None,
    box: Box | None = None,
    blobs: StateLayout | None = None,
) -> FileVerdict:
    """Validate `path`; a dataset's swift-ready lines go to `converted` when one is given.

    `name` is the name the file was dropped under when `path` is the claimed copy's. `same_as` is
    the file's lstat from when it was claimed: a different file found at the path now (it was
    swapped in between) is refused rather than read. `swift` carries the operator's say on code and
    paths; without it, the defaults (no code, no paths outside the run). `box` is what this box
    has; without it, model names are not looked up and GPUs are not checked. `blobs` is the state
    folder a dataset's media are stored under once it is accepted; without it, they are checked in a
    temporary folder and removed.
    """
    shown = Path(name) if name is not None else path
    cfg = swift or SwiftConfig()
    policy = CodePolicy(
        cfg.allow_code,
        tuple(str(p) for p in cfg.allowed_paths),
        cfg.secret_env,
        tuple(str(p) for p in cfg.secret_files),
        cfg.allow_public_deploy,
    )
    here = _Here(cfg, box, blobs)
    verdict = _check(path, shown, limits, swift_args, converted, progress, same_as, policy, here)
    return verdict if shown is path else dataclasses.replace(verdict, path=path)


def _check(
    path: Path,
    shown: Path,
    limits: LimitsConfig,
    swift_args: SwiftArgs,
    converted: BinaryIO | None,
    progress: Progress | None,
    same_as: os.stat_result | None,
    policy: CodePolicy,
    here: _Here,
) -> FileVerdict:
    kind = file_kind(shown.name)
    if kind == "unknown":
        why = "unknown file type: datasets end in .jsonl or .txt, jobs in .yaml or .yml"
        if shown.suffix.lower() == ".json":
            why += f"; a job written in JSON is YAML too: rename it to {shown.stem}.yaml"
        return _refuse(shown, kind, why)
    if kind == "dataset" and (problem := dataset_name_problem(dataset_name(shown.name))) is not None:
        return _refuse(shown, kind, problem)
    try:
        fd, st = _open_regular(path)
    except (OSError, ValueError) as e:
        return _refuse(shown, kind, f"cannot read it: {e}")
    limit = limits.max_dataset_bytes if kind == "dataset" else limits.max_yaml_bytes
    if is_bundle(shown.name):
        limit = limits.max_bundle_bytes
    with os.fdopen(fd, "rb") as f:
        if same_as is not None and (st.st_dev, st.st_ino) != (same_as.st_dev, same_as.st_ino):
            return _refuse(shown, kind, "the file was replaced while it was being picked up; drop it again")
        if st.st_size > limit:
            return _refuse(
                shown, kind, f"{st.st_size} bytes is over the limit of {limit} ([limits] in the config)"
            )
        if kind == "dataset":
            return _with_media(shown, f, converted, progress, st.st_size, limits, here)
        return _check_job(shown, f.read(limit + 1), limits, swift_args, policy, here)


def _with_media(
    path: Path,
    f: BinaryIO,
    converted: BinaryIO | None,
    progress: Progress | None,
    size: int,
    limits: LimitsConfig,
    here: _Here,
) -> FileVerdict:
    """A dataset with the media its rows name stored aside, and published only if it is accepted."""
    store = MediaStore(here.blobs, limits, offline=here.swift.offline)
    try:
        if is_bundle(path.name):
            verdict = _check_bundle(path, f, converted, progress, limits, store)
        else:
            verdict = _check_dataset(path, f, converted, progress, size, media=store.inline)
        if verdict.ok:
            store.publish()
        return verdict
    finally:
        store.discard()


def _check_bundle(
    path: Path,
    f: BinaryIO,
    converted: BinaryIO | None,
    progress: Progress | None,
    limits: LimitsConfig,
    store: MediaStore,
) -> FileVerdict:
    digest = hashlib.sha256()
    while chunk := f.read(CHUNK):
        digest.update(chunk)
    sha = digest.hexdigest()
    f.seek(0)
    try:
        bundle = open_bundle(f, path.name, limits, store)
    except BundleProblem as e:
        message, hint = describe(e)
        first = f"{path.name}: rejected: {message}"
        return FileVerdict(path, "dataset", False, first, f"{first}\n- {message}\n  hint: {hint}\n", sha)
    with open(bundle.jsonl, "rb") as rows:
        size = os.fstat(rows.fileno()).st_size
        return _check_dataset(
            path,
            rows,
            converted,
            progress,
            size,
            media=bundle.resolver(store),
            rows_name=bundle.jsonl_name,
            sha=sha,
        )


def _check_dataset(
    path: Path,
    f: BinaryIO,
    converted: BinaryIO | None,
    progress: Progress | None,
    size: int,
    *,
    media: MediaResolver | None = None,
    rows_name: str | None = None,
    sha: str | None = None,
) -> FileVerdict:
    """`rows_name` and `sha` are a bundle's: the .jsonl inside it, and the archive's own hash."""
    digest = hashlib.sha256()
    validator = DatasetValidator(rows_name or path.name, media=media)
    while chunk := f.read(CHUNK):
        digest.update(chunk)
        lines = validator.feed(chunk)
        if converted is not None:
            converted.writelines(lines)
        if progress is not None:
            progress(validator.bytes_done, size, validator.rows_done)
    last = validator.flush()
    if converted is not None:
        converted.writelines(last)
    report = validator.finish()
    sha = sha or digest.hexdigest()
    if not report.ok:
        text = [f"{path.name}: rejected: {report.error_count} problem(s) in {report.rows} valid row(s)"]
        text += [_describe(e) for e in report.errors]
        if report.error_count > len(report.errors):
            text.append(f"... and {report.error_count - len(report.errors)} more")
        return FileVerdict(path, "dataset", False, text[0], "\n".join(text) + "\n", sha, dataset=report)
    summary = (
        f"dataset {dataset_name(path.name)}: {report.format}, {report.rows} rows, "
        f"feeds {', '.join(report.task_types)}"
    )
    if (m := report.stats.media) is not None:
        summary += f"; media: {m.images} images, {m.videos} videos, {m.audios} audios in {m.files} files"
    return FileVerdict(path, "dataset", True, summary, sha256=sha, dataset=report)


def _describe(e: LineError) -> str:
    where = ", ".join(p for p in (f"line {e.line}" if e.line else "", e.field or "") if p)
    message = e.message if not where or e.message.startswith(where) else f"{where}: {e.message}"
    return f"- {message}\n  hint: {e.hint}"


def _model_folders(spec: JobSpec) -> list[tuple[str, str]]:
    """(key, folder) for each local model or adapter folder the job names."""
    found = [
        (key, ref.ref)
        for key, ref in (
            ("model", spec.model),
            ("adapters", spec.adapters),
            ("reward_model", spec.reward_model),
        )
        if ref is not None and ref.kind == "path"
    ]
    for name in sorted(MODEL_FOLDER_ARGS & spec.swift_args.keys()):
        value = spec.swift_args[name]
        items = value if isinstance(value, list) else [value]
        found += [(f"swift.{name}", v) for v in items if isinstance(v, str) and v.startswith("/")]
    return found


def _read_json(path: Path) -> object:
    """A folder's JSON file, or None when it is absent, unreadable or not JSON (swift then fails
    on its own terms); a file too large to check is treated as asking for code."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_CONFIG_BYTES + 1)
    except OSError:
        return None
    if len(data) > _MAX_CONFIG_BYTES:
        return {"auto_map": "too large to check"}
    try:
        return json.loads(data)
    except ValueError:
        return None


def remote_code(folder: Path) -> str | None:
    """What in a model folder would make swift run Python code from it, or None."""
    for name in _REMOTE_CODE_FILES:
        body = _read_json(folder / name)
        if isinstance(body, dict) and body.get("auto_map"):
            return f"asks for remote code (auto_map in {name})"
    args = _read_json(folder / "args.json")
    if isinstance(args, dict):
        for key in ("external_plugins", "custom_register_path"):
            value = args.get(key)
            if value and not (key == "external_plugins" and own_plugins(value)):
                return f"loads Python code ({key} in its args.json)"
    return None


def _remote_code_problems(spec: JobSpec) -> list[JobProblem]:
    problems = []
    for key, folder in _model_folders(spec):
        why = remote_code(Path(folder))
        if why is not None:
            message = code_refusal(f"{key} {folder!r}", why)
            problems.append(JobProblem(field=key, message=message))
    return problems


def _rejected(path: Path, error: JobFileError, sha: str) -> FileVerdict:
    text = str(error)
    return FileVerdict(path, "job", False, text.splitlines()[0], text + "\n", sha)


@dataclass(frozen=True)
class _Here:
    swift: SwiftConfig
    box: Box | None
    blobs: StateLayout | None = None


def _folder_config(ref: ModelRef | None) -> dict[str, object] | None:
    """A local model folder's config.json, or None (not a folder here, or no readable config)."""
    if ref is None or ref.kind != "path":
        return None
    body = _read_json(Path(ref.ref) / "config.json")
    return body if isinstance(body, dict) else None


def _config_dtype(spec: JobSpec) -> str | None:
    """The dtype a local model folder's config.json gives, which swift uses when the job names none."""
    body = _folder_config(spec.model)
    dtype = body.get("torch_dtype") or body.get("dtype") if body is not None else None
    return dtype if isinstance(dtype, str) else None


def _model_packages(spec: JobSpec) -> tuple[str, ...]:
    """What the loader of the job's (settled) model_type imports; nothing when the registry is unreadable."""
    if spec.model_type is None:
        return ()
    try:
        return registry().packages.get(spec.model_type, ())
    except RegistryError:
        return ()


def _package_problems(spec: JobSpec, python: str) -> list[JobProblem]:
    shown = python or sys.executable
    problems = []
    for package in missing_packages(needed_packages(spec, _model_packages(spec)), python):
        problems.append(
            JobProblem(
                field=package.key,
                message=f"{package.why} needs the Python package {package.pip}, which {shown} cannot import",
                hint=f"install it ({shown} -m pip install {package.pip}), or leave out what needs it",
            )
        )
    return problems


def _on_this_box(spec: JobSpec, policy: CodePolicy, here: _Here) -> tuple[JobSpec, list[JobProblem]]:
    """The spec as it runs here, or what keeps it from running here."""
    problems: list[JobProblem] = []
    box = here.box
    if box is not None:
        spec, problems = settle_models(spec, box.models, offline=here.swift.offline)
        problems += hub_dataset_problems(spec, here.swift.offline)
    if not policy.allow_code:
        problems += _remote_code_problems(spec)
    if box is not None:
        problems += _package_problems(spec, here.swift.python)
        problems += device_problems(spec, box.gpus, _config_dtype(spec))
        reward = reward_model_problem(spec, _folder_config(spec.reward_model))
        problems += [reward] if reward is not None else []
    return spec, problems


def _check_job(
    path: Path, data: bytes, limits: LimitsConfig, swift_args: SwiftArgs, policy: CodePolicy, here: _Here
) -> FileVerdict:
    sha = hashlib.sha256(data).hexdigest()
    try:
        parsed = parse_job_file(
            data, path.name, max_bytes=limits.max_yaml_bytes, swift_args=swift_args, policy=policy
        )
    except JobFileError as e:
        return _rejected(path, e, sha)
    if isinstance(parsed, ControlRequest):
        return FileVerdict(path, "control", True, f"{parsed.action} {parsed.job}", sha256=sha, job=parsed)
    spec, problems = _on_this_box(parsed, policy, here)
    if problems:
        return _rejected(path, JobFileError(path.name, problems), sha)
    summary = f"job {spec.name}: {spec.task} ({spec.tuner or 'default tuner'}) on {spec.model}"
    return FileVerdict(path, "job", True, summary, sha256=sha, job=spec)
