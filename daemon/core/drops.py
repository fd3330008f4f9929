"""What a dropped file is, and what reading it concluded: the verdict intake decides on.

`llmtraind check`, the inbox and the intake decision all speak of a file in these terms, so the
verdict is a value here; reading and hashing the file stays in intake's adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daemon.core.datasets import DatasetReport
from daemon.core.jobs import ControlRequest, JobSpec

__all__ = [
    "BUNDLE_SUFFIXES",
    "DATASET_SUFFIXES",
    "JOB_SUFFIXES",
    "FileVerdict",
    "Kind",
    "dataset_name",
    "file_kind",
    "is_bundle",
]

BUNDLE_SUFFIXES = (".tar.gz", ".zip", ".tar")
"""A multimodal dataset: one .jsonl at the archive's top and the media its rows name."""
DATASET_SUFFIXES = (".jsonl", ".txt", *BUNDLE_SUFFIXES)
JOB_SUFFIXES = (".yaml", ".yml")
Kind = Literal["dataset", "job", "control", "unknown"]


@dataclass(frozen=True)
class FileVerdict:
    path: Path
    kind: Kind
    ok: bool
    summary: str
    """One line for a person: what the file is, or why it was refused."""
    problems: str = ""
    """The full explanation (what, where, how to fix) written beside a rejected file."""
    sha256: str | None = None
    job: JobSpec | ControlRequest | None = None
    dataset: DatasetReport | None = None


def file_kind(name: str) -> Kind:
    lower = name.lower()
    if lower.endswith(DATASET_SUFFIXES):
        return "dataset"
    return "job" if lower.endswith(JOB_SUFFIXES) else "unknown"


def is_bundle(name: str) -> bool:
    return name.lower().endswith(BUNDLE_SUFFIXES)


def dataset_name(filename: str) -> str:
    """The dataset a file is dropped as: its name without the .jsonl / .txt / bundle suffix."""
    lower = filename.lower()
    for suffix in BUNDLE_SUFFIXES:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename.rsplit(".", 1)[0]
