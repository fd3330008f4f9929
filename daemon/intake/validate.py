"""Validate one dropped file, the same way for `llmtraind check` and for inbox intake.

This reads the file (blocking: callers on the event loop run it in a thread), hashes it while
streaming, and hands the bytes to the pure parsers in `jobs` and `datasets`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from daemon.core.config import LimitsConfig
from daemon.core.datasets import DatasetValidator, LineError
from daemon.core.drops import FileVerdict, Kind, dataset_name, file_kind
from daemon.core.jobs import ControlRequest, JobFileError, dataset_name_problem, parse_job_file
from daemon.core.swift_args import BUNDLED_VERSION, SwiftArgs, bundled, introspect_installed

__all__ = ["CHUNK", "Progress", "check_file", "local_swift_args"]

CHUNK = 1024 * 1024


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
) -> FileVerdict:
    """Validate `path`; a dataset's swift-ready lines go to `converted` when one is given.

    `name` is the name the file was dropped under when `path` is the claimed copy's. `same_as` is
    the file's lstat from when it was claimed: a different file found at the path now (it was
    swapped in between) is refused rather than read.
    """
    shown = Path(name) if name is not None else path
    verdict = _check(path, shown, limits, swift_args, converted, progress, same_as)
    return verdict if shown is path else dataclasses.replace(verdict, path=path)


def _check(
    path: Path,
    shown: Path,
    limits: LimitsConfig,
    swift_args: SwiftArgs,
    converted: BinaryIO | None,
    progress: Progress | None,
    same_as: os.stat_result | None,
) -> FileVerdict:
    kind = file_kind(shown.name)
    if kind == "unknown":
        return _refuse(
            shown, kind, "unknown file type: datasets end in .jsonl or .txt, jobs in .yaml or .yml"
        )
    if kind == "dataset" and (problem := dataset_name_problem(dataset_name(shown.name))) is not None:
        return _refuse(shown, kind, problem)
    try:
        fd, st = _open_regular(path)
    except (OSError, ValueError) as e:
        return _refuse(shown, kind, f"cannot read it: {e}")
    limit = limits.max_dataset_bytes if kind == "dataset" else limits.max_yaml_bytes
    with os.fdopen(fd, "rb") as f:
        if same_as is not None and (st.st_dev, st.st_ino) != (same_as.st_dev, same_as.st_ino):
            return _refuse(shown, kind, "the file was replaced while it was being picked up; drop it again")
        if st.st_size > limit:
            return _refuse(
                shown, kind, f"{st.st_size} bytes is over the limit of {limit} ([limits] in the config)"
            )
        if kind == "dataset":
            return _check_dataset(shown, f, converted, progress, st.st_size)
        return _check_job(shown, f.read(limit + 1), limits, swift_args)


def _check_dataset(
    path: Path, f: BinaryIO, converted: BinaryIO | None, progress: Progress | None, size: int
) -> FileVerdict:
    digest = hashlib.sha256()
    validator = DatasetValidator(path.name)
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
    sha = digest.hexdigest()
    if not report.ok:
        text = [f"{path.name}: rejected: {report.error_count} problem(s) in {report.rows} valid row(s)"]
        text += [_describe(e) for e in report.errors]
        if report.error_count > len(report.errors):
            text.append(f"... and {report.error_count - len(report.errors)} more")
        return FileVerdict(path, "dataset", False, text[0], "\n".join(text) + "\n", sha, dataset=report)
    summary = (
        f"dataset {path.stem}: {report.format}, {report.rows} rows, feeds {', '.join(report.task_types)}"
    )
    return FileVerdict(path, "dataset", True, summary, sha256=sha, dataset=report)


def _describe(e: LineError) -> str:
    where = ", ".join(p for p in (f"line {e.line}" if e.line else "", e.field or "") if p)
    message = e.message if not where or e.message.startswith(where) else f"{where}: {e.message}"
    return f"- {message}\n  hint: {e.hint}"


def _check_job(path: Path, data: bytes, limits: LimitsConfig, swift_args: SwiftArgs) -> FileVerdict:
    sha = hashlib.sha256(data).hexdigest()
    try:
        parsed = parse_job_file(data, path.name, max_bytes=limits.max_yaml_bytes, swift_args=swift_args)
    except JobFileError as e:
        text = str(e)
        return FileVerdict(path, "job", False, text.splitlines()[0], text + "\n", sha)
    if isinstance(parsed, ControlRequest):
        return FileVerdict(path, "control", True, f"{parsed.action} {parsed.job}", sha256=sha, job=parsed)
    summary = f"job {parsed.name}: {parsed.task} ({parsed.tuner or 'default tuner'}) on {parsed.model}"
    return FileVerdict(path, "job", True, summary, sha256=sha, job=parsed)
