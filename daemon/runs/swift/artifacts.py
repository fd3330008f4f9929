"""What a swift run left in its output directory: checkpoints, adapters, merged models, records.

With `--add_version false` a run writes straight into its output directory
(`reference/swift-cpu.md` §5.4): `checkpoint-N/` (a LoRA adapter, or a full model plus optimizer
state), the `last-checkpoint` symlink, `args.json`, `logging.jsonl`; an export job's model is a
directory of its own (`model/`, see `command.EXPORT_DIR`). The scan may run while swift is still writing,
so entries that vanish or change type midway are skipped, and a checkpoint directory counts as
complete only once it holds `trainer_state.json`, which the trainer writes last.

Blocking file I/O: call `scan_artifacts` from a thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

__all__ = ["Artifact", "ArtifactKind", "final_checkpoint", "final_model", "scan_artifacts"]

ArtifactKind = Literal[
    "checkpoint", "adapter", "merged_model", "args", "logging", "last_checkpoint_marker", "other"
]

_CHECKPOINT_RE = re.compile(r"checkpoint-([0-9]{1,12})")
_LAST_LINK = "last-checkpoint"
_MARKERS = frozenset({_LAST_LINK, "last", "best"})
"""`last-checkpoint` is always made; `last`/`best` come with --create_checkpoint_symlink true."""
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
_COMPLETE_FILE = "trainer_state.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
_GONE = (FileNotFoundError, NotADirectoryError)
_RECORDS: Mapping[str, ArtifactKind] = {"args.json": "args", "logging.jsonl": "logging"}


@dataclass(frozen=True)
class Artifact:
    """One thing in a run's output directory."""

    kind: ArtifactKind
    path: str
    """Relative to the output directory, with '/' separators; '.' is the directory itself."""
    bytes: int
    """Total size of the files it holds (symlinks count as 0)."""
    step: int | None = None
    """The training step a checkpoint (or a marker's target) was saved at."""
    complete: bool = True
    """False for a checkpoint directory the trainer is still writing."""
    target: str | None = None
    """Where a marker symlink points, as stored in the link."""


def scan_artifacts(output_dir: Path) -> list[Artifact]:
    """Everything in `output_dir`, one Artifact per top-level entry, sorted by path.

    A directory that is not a checkpoint but holds a model (config.json plus weights) is a
    `merged_model`. A missing `output_dir` gives an empty list.
    """
    entries = _list(os.fspath(output_dir))
    if entries is None:
        return []
    found = [artifact for entry in entries if (artifact := _classify(entry)) is not None]
    return sorted(found, key=lambda a: a.path)


class _Saved(Protocol):
    """An entry of an output directory as scanned (Artifact) or as recorded (ArtifactRecord)."""

    @property
    def kind(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def step(self) -> int | None: ...
    @property
    def complete(self) -> bool: ...


_SavedT = TypeVar("_SavedT", bound=_Saved)


def final_checkpoint(artifacts: Iterable[_SavedT]) -> _SavedT | None:
    """The complete checkpoint or adapter with the highest step: what `adapters: "@JOB"` names and
    what a new attempt resumes from.

    swift moves `last-checkpoint` only once a save is over (after trainer_state.json, and after the
    trainer has deleted checkpoints beyond save_total_limit), so a checkpoint past the step it
    names may still be mid-save; without that link (symlinks unsupported) trainer_state.json alone
    decides."""
    found = list(artifacts)
    marked = [
        a.step
        for a in found
        if a.kind == "last_checkpoint_marker" and a.step is not None and _name(a.path) == _LAST_LINK
    ]
    limit = max(marked, default=None)
    done = [
        a
        for a in found
        if a.kind in ("checkpoint", "adapter")
        and a.complete
        and a.step is not None
        and (limit is None or a.step <= limit)
    ]
    return max(done, key=lambda a: a.step or 0, default=None)


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def final_model(artifacts: Iterable[Artifact]) -> Artifact | None:
    """What `model: "@JOB"` names: the job's merged model, else its final full-weight checkpoint."""
    found = list(artifacts)
    merged = [a for a in found if a.kind == "merged_model"]
    if merged:
        return min(merged, key=lambda a: a.path)
    final = final_checkpoint(found)
    return final if final is not None and final.kind == "checkpoint" else None


# ---------------------------------------------------------------------------------------------


def _classify(entry: os.DirEntry[str]) -> Artifact | None:
    try:
        if entry.is_symlink():
            return _link(entry)
        if entry.is_dir(follow_symlinks=False):
            return _directory(entry)
        size = entry.stat(follow_symlinks=False).st_size
    except _GONE:
        return None
    return Artifact(kind=_RECORDS.get(entry.name, "other"), path=entry.name, bytes=size)


def _link(entry: os.DirEntry[str]) -> Artifact:
    target = os.readlink(entry.path)
    if entry.name not in _MARKERS:
        return Artifact(kind="other", path=entry.name, bytes=0, target=target)
    match = _CHECKPOINT_RE.fullmatch(os.path.basename(target.rstrip("/")))
    step = int(match[1]) if match is not None else None
    return Artifact(kind="last_checkpoint_marker", path=entry.name, bytes=0, step=step, target=target)


def _directory(entry: os.DirEntry[str]) -> Artifact | None:
    listing = _list(entry.path)
    if listing is None:
        return None
    names = {item.name for item in listing}
    size = _size(listing)
    match = _CHECKPOINT_RE.fullmatch(entry.name)
    if match is None:
        kind: ArtifactKind = "merged_model" if _is_model(names) else "other"
        return Artifact(kind=kind, path=entry.name, bytes=size)
    adapter = any(name in names for name in _ADAPTER_FILES)
    return Artifact(
        kind="adapter" if adapter else "checkpoint",
        path=entry.name,
        bytes=size,
        step=int(match[1]),
        complete=_COMPLETE_FILE in names,
    )


def _is_model(names: set[str]) -> bool:
    return "config.json" in names and any(name.endswith(_WEIGHT_SUFFIXES) for name in names)


def _list(path: str) -> list[os.DirEntry[str]] | None:
    """A directory's entries, or None if it is gone."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except _GONE:
        return None


def _size(entries: list[os.DirEntry[str]]) -> int:
    """Bytes of the regular files in and below `entries`, without following symlinks."""
    total = 0
    pending = list(entries)
    while pending:
        entry = pending.pop()
        try:
            if entry.is_dir(follow_symlinks=False):
                pending.extend(_list(entry.path) or ())
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except _GONE:
            continue
    return total
