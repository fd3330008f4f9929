"""Filing a recorded drop away: publish what its event points at, keep the original, tidy the claim.

Order per batch: the claims' folder and new swift-ready copies are made durable before the events are
recorded (`publish`); once they are, an accepted file's original is kept under its sha256 and a
rejected one is moved to rejected/ beside an .error.txt saying why (`tidy`), and only then is the
claim removed. So an event never points at data that is not durable, and a file never leaves the
inbox before its event is recorded. Every step is safe to redo after a crash.

`tidy` files each drop on its own: one that cannot be filed away is handed back with its error and
keeps its claim, so one bad drop (or a folder someone deleted) never holds up the rest of its batch.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.core.events import (
    CancelRequested,
    DatasetAccepted,
    DuplicateDropped,
    Event,
    FileRejected,
    JobSubmitted,
    PauseRequested,
    ResumeRequested,
    RetryRequested,
)
from daemon.core.jobs import ControlRequest
from daemon.core.layout import InboxLayout, StateLayout
from daemon.intake.claim import bounded_name
from daemon.intake.examine import Read
from daemon.intake.faults import Faults
from daemon.intake.submit import fsync_dir

__all__ = ["REJECTED_NAME_MAX", "Filing", "RejectNames", "Unfiled"]

REJECTED_NAME_MAX = 200
"""Bytes of a rejected file's name under rejected/, before a `-N` that keeps it free: its note's
temporary name (`.NAME.error.txt.tmp`) then stays within NAME_MAX (255)."""
_KEPT_MAX = 255 - len(".") - len(".error.txt.tmp")
"""The longest name under rejected/ whose note can still be written."""


class RejectNames:
    """Free names under rejected/: a new rejection never overwrites an older one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: set[str] = set()
        self.held: set[str] = set()
        """Names given to drops that are recorded but not filed away yet: taken though not on disk."""

    def refresh(self) -> None:
        with contextlib.suppress(OSError):
            self.taken = set(os.listdir(self.folder)) | self.held

    def __call__(self, filename: str) -> str:
        filename = bounded_name(filename, REJECTED_NAME_MAX)
        stem, dot, ext = filename.rpartition(".")
        if not stem:
            stem, dot, ext = filename, "", ""
        for n in itertools.count(1):
            name = filename if n == 1 else f"{stem}-{n}{dot}{ext}"
            if name not in self.taken and f"{name}.error.txt" not in self.taken:
                self.taken.update((name, f"{name}.error.txt"))
                return name
        raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class Unfiled:
    """A recorded drop that could not be filed away; its claim stays for another try."""

    read: Read
    event: Event
    error: OSError


class Filing:
    """Moves claimed files and their copies where the log says they belong; runs in the I/O thread."""

    def __init__(self, inbox: InboxLayout, blobs: StateLayout, rejects: RejectNames, fault: Faults) -> None:
        self.inbox = inbox
        self.blobs = blobs
        self._rejects = rejects
        self._fault = fault

    def publish(self, batch: Sequence[Read]) -> None:
        """Make what the events will point at durable first: the claims, and new swift-ready copies."""
        fsync_dir(self.inbox.processing)
        published = False
        for read in batch:
            if read.scratch is not None and read.examined.verdict is not None:
                sha = read.examined.verdict.sha256
                if sha is not None and self._publish_converted(read.scratch, sha):
                    published = True
        if published:
            fsync_dir(self.blobs.converted)
        self._fault("published")

    def _publish_converted(self, scratch: Path, sha: str) -> bool:
        target = self.blobs.converted_dataset(sha)
        if target.exists() or not scratch.exists():
            return False
        os.rename(scratch, target)
        return True

    def tidy(self, batch: Sequence[Read], events: Sequence[Event]) -> list[Unfiled]:
        """Act on what the log holds (after a redo that can differ from what was just decided); the
        drops that could not be filed away are returned and keep their claims."""
        failed: dict[int, OSError] = {}
        touched: dict[Path, list[int]] = {}
        """Folder -> the drops whose filing its fsync makes durable."""
        for i, (read, event) in enumerate(zip(batch, events, strict=True)):
            try:
                folders = self._file(read, event)
            except OSError as e:
                failed[i] = e
                continue
            for folder in folders:
                touched.setdefault(folder, []).append(i)
        for folder, drops in touched.items():
            try:
                fsync_dir(folder)
            except OSError as e:
                for i in drops:
                    failed.setdefault(i, e)
        self._fault("stored")
        for i, (read, event) in enumerate(zip(batch, events, strict=True)):
            if i not in failed and not isinstance(event, FileRejected):
                try:
                    read.claim.path.unlink(missing_ok=True)
                except OSError as e:
                    failed[i] = e
        self._fault("done")
        return [Unfiled(batch[i], events[i], e) for i, e in sorted(failed.items())]

    def _file(self, read: Read, event: Event) -> list[Path]:
        """File one drop away; the folders whose fsync makes that durable."""
        claim = read.claim
        folders: list[Path] = []
        match event:
            case DatasetAccepted():
                if read.scratch is not None and self._publish_converted(read.scratch, event.sha256):
                    folders.append(self.blobs.converted)
                self._keep_original(claim.path, event.sha256)
                folders.append(self.blobs.originals)
            case JobSubmitted() | CancelRequested() | RetryRequested() | PauseRequested() | ResumeRequested():
                sha = read.examined.verdict.sha256 if read.examined.verdict else None
                if sha is not None:
                    self._keep_original(claim.path, sha)
                    folders.append(self.blobs.originals)
            case FileRejected():
                self._keep_rejected(read, event)
                folders.append(self.inbox.rejected)
            case DuplicateDropped():
                pass
        if read.scratch is not None:
            with contextlib.suppress(FileNotFoundError):
                read.scratch.unlink()
        return folders

    def _keep_original(self, claimed: Path, sha: str) -> None:
        target = self.blobs.original(sha)
        if target.exists() or not claimed.exists():
            return
        try:
            os.link(claimed, target)
            return
        except FileExistsError:
            return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
        # The inbox is on another file system (or refuses links): copy, make it durable, then place it.
        scratch = self.blobs.scratch / f"{sha}.copy"
        with open(claimed, "rb") as src, open(scratch, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        os.rename(scratch, target)

    def _keep_rejected(self, read: Read, event: FileRejected) -> None:
        """Move a rejected file to rejected/ beside its reason. The folder is made again when someone
        deleted it; a name recorded by an older daemon is bounded here too, so no note's name can be
        too long to write."""
        folder = self.inbox.rejected
        kept = bounded_name(event.kept_as, _KEPT_MAX)
        note = folder / f"{kept}.error.txt"
        names = (kept, note.name)
        self._rejects.held.update(names)
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{kept}.error.txt.tmp"
        tmp.write_text(_note(read, event, time.strftime("%Y-%m-%d %H:%M:%S %z")), encoding="utf-8")
        os.rename(tmp, note)
        if os.path.lexists(read.claim.path):
            os.rename(read.claim.path, folder / kept)
        self._rejects.taken.update(names)
        self._rejects.held.difference_update(names)


def _note(read: Read, event: FileRejected, when: str) -> str:
    """The .error.txt beside a rejected file. A well-formed control request that was refused (no
    such job, a job already ended) has nothing to fix: the note says what was asked and why it
    was not done."""
    verdict = read.examined.verdict
    request = verdict.job if verdict is not None and verdict.ok else None
    if isinstance(request, ControlRequest):
        hints = event.problems.partition("\n")[2]
        return (
            f"llmtraind refused the request in {event.filename} ({when}): "
            f"{request.action} job {request.job!r}.\n\n"
            f"Why: {event.summary}\n{hints}\n"
            "Nothing was changed. This copy can be deleted.\n"
        )
    problems = verdict.problems if verdict is not None else ""
    return (
        f"llmtraind rejected {event.filename} ({when}).\n\n"
        f"{problems or event.problems}\n"
        "Fix the file and drop it again; this copy can be deleted.\n"
    )
