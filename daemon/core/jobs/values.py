"""Where a job's models and datasets come from: `ModelRef` and `DatasetRef`, and what a file may
write for them (`/models/qwen`, `@JOB`, `sft_demo.jsonl#100`, a hub id).

A reference is checked when the file is read, so a path that escapes the inbox or a dataset file
that is not a dataset is refused with the file, not when the job starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from daemon.core.jobs.fields import _STRING, _fail, _listify, _one_or_many
from daemon.core.jobs.problems import show

__all__ = ["DatasetRef", "ModelRef", "dataset_name_problem"]


_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DATASET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HUB_MODEL_RE = re.compile(rf"(?:hf::|ms::)?{_HUB_PART}(?:/{_HUB_PART})?")
_HUB_DATASET_RE = re.compile(rf"(?:hf::|ms::)?{_HUB_PART}(?:/{_HUB_PART})?(?::[A-Za-z0-9._/-]{{1,128}})?")
_DATASET_EXTS = (".jsonl", ".txt")
_OTHER_DATA_EXTS = (".json", ".csv", ".tsv", ".parquet", ".arrow", ".gz", ".zip")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_DATASET_HINT = (
    "name a dataset by the name it was dropped under: sft_demo, sft_demo.jsonl or datasets/sft_demo.jsonl"
)
_MODEL_HINT = "a model is an absolute directory such as /models/qwen, @JOB for a job's output, or a hub id"


def _job_ref(value: object) -> str:
    """A job named by id or name, with or without the `@` used in model references."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        _fail("a job is named by its name or id")
    ref = value.removeprefix("@")
    if not _REF_RE.fullmatch(ref):
        _fail(f"{show(value)} is not a job name or id", "job names are letters, digits, '.', '_' and '-'")
    return ref


def _check_name_path(text: str, what: str) -> None:
    """Files are named relative to the inbox: no absolute paths, no `..`, no backslashes."""
    if _CONTROL_RE.search(text) or "\\" in text:
        _fail(f"{what} {show(text)} contains a backslash or a control character")
    if text.startswith(("/", "~")):
        _fail(f"{what} {show(text)} is an absolute path", _DATASET_HINT if what == "dataset" else "")
    if any(part in ("", ".", "..") for part in text.split("/")):
        _fail(f"{what} {show(text)} contains an empty, '.' or '..' path segment", "")


def _split_sample(value: str) -> tuple[str, int | None]:
    base, sep, tail = value.rpartition("#")
    if not sep:
        return value, None
    if not re.fullmatch(r"[0-9]{1,9}", tail) or int(tail) == 0:
        _fail(f"{show(value)}: the part after '#' must be the number of rows to sample (1 or more)")
    return base, int(tail)


def _dataset_ref(value: object) -> DatasetRef:
    """`sft_demo`, `sft_demo.jsonl`, `datasets/sft_demo.jsonl`, `org/name` (hub), each with `#N`."""
    if not isinstance(value, str) or not value:
        _fail("a dataset is named by a non-empty string", _DATASET_HINT)
    base, sample = _split_sample(value)
    _check_name_path(base, "dataset")
    if base.startswith(("hf::", "ms::")) or ("/" in base and not base.startswith("datasets/")):
        return _hub_dataset(base, sample)
    name = base.removeprefix("datasets/")
    for ext in _DATASET_EXTS:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        if name.lower().endswith(_OTHER_DATA_EXTS):
            _fail(f"{show(value)}: only .jsonl and .txt files are datasets", _DATASET_HINT)
    if not _DATASET_RE.fullmatch(name):
        _fail(f"{show(value)} is not a dataset name", _DATASET_HINT)
    return DatasetRef(name=name, sample=sample)


def _hub_dataset(base: str, sample: int | None) -> DatasetRef:
    if not _HUB_DATASET_RE.fullmatch(base) or base.lower().endswith(_DATASET_EXTS + _OTHER_DATA_EXTS):
        _fail(
            f"{show(base)} names a file in another folder",
            "drop the file into the inbox and use its dataset name, or give a hub id such as "
            "AI-ModelScope/alpaca-gpt4-data-zh",
        )
    return DatasetRef(name=base, sample=sample, hub=True)


def _model_ref(value: object) -> ModelRef:
    if not isinstance(value, str) or not value:
        _fail("a model is named by a non-empty string", _MODEL_HINT)
    if value.startswith("@"):
        return ModelRef(kind="job", ref=_job_ref(value))
    if _CONTROL_RE.search(value) or "\\" in value:
        _fail(f"{show(value)} contains a backslash or a control character", _MODEL_HINT)
    if value.startswith("/"):
        path = value.rstrip("/")
        if not path or any(part in ("", ".", "..") for part in path.split("/")[1:]):
            _fail(f"{show(value)} is not a clean absolute directory (no '..', '.' or '//')", _MODEL_HINT)
        return ModelRef(kind="path", ref=path)
    if _HUB_MODEL_RE.fullmatch(value) and ".." not in value:
        return ModelRef(kind="hub", ref=value)
    _fail(f"{show(value)} is not an absolute directory, @JOB or a hub id", _MODEL_HINT)


_JobRef = Annotated[str, BeforeValidator(_job_ref), WithJsonSchema(_STRING)]
_JobRefs = Annotated[tuple[_JobRef, ...], BeforeValidator(_listify), _one_or_many(_STRING)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class ModelRef(_Frozen):
    """Where a model or an adapter comes from; only `job` references create a dependency."""

    kind: Literal["path", "job", "hub"]
    """`path`: an absolute directory; `job`: that job's output; `hub`: a hub id, kept as given."""
    ref: str
    """The directory, the job's id or name (without `@`), or the hub id."""

    def __str__(self) -> str:
        return f"@{self.ref}" if self.kind == "job" else self.ref


class DatasetRef(_Frozen):
    """A dataset by the name it was dropped under (or a hub id), with swift's `#N` row sampling."""

    name: str
    sample: int | None = Field(default=None, gt=0)
    hub: bool = False
    """A hub dataset id; the daemon runs offline and reports it as unavailable."""


_Dataset = Annotated[DatasetRef, BeforeValidator(_dataset_ref), WithJsonSchema(_STRING)]
_Datasets = Annotated[
    tuple[_Dataset, ...], BeforeValidator(_listify), Field(min_length=1), _one_or_many(_STRING)
]
_ModelSource = Annotated[ModelRef, BeforeValidator(_model_ref), WithJsonSchema(_STRING)]


def dataset_name_problem(name: str) -> str | None:
    """Why `name` (a dropped file's name without .jsonl/.txt) cannot name a dataset, or None."""
    if _DATASET_RE.fullmatch(name):
        return None
    return (
        f"{show(name)} cannot name a dataset: use letters, digits, '.', '_' and '-', starting with a "
        "letter or digit, at most 128 (rename the file)"
    )
