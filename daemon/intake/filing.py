"""Filing a recorded drop away: publish what its event points at, keep the original, tidy the claim.

Order per batch: the claims' folder and new swift-ready copies are made durable before the events are
recorded (`publish`); once they are, an accepted file's original is kept under its sha256 and a
rejected one is moved to rejected/ beside an .error.txt saying why (`tidy`), and only then is the
claim removed. So an event never points at data that is not durable, and a file never leaves the
inbox before its event is recorded. Every step is safe to redo after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from daemon.core.events import (
    CancelRequested,
    DatasetAccepted,
    DuplicateDropped,
    Event,
    FileRejected,
    JobSubmitted,
    RetryRequested,
)
from daemon.core.layout import InboxLayout, StateLayout
from daemon.intake.examine import Read
from daemon.intake.faults import Faults
from daemon.intake.submit import fsync_dir

__all__ = ["Filing", "RejectNames"]


class RejectNames:
    """Free names under rejected/: a new rejection never overwrites an older one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: set[str] = set()

    def refresh(self) -> None:
        with contextlib.suppress(OSError):
            self.taken = set(os.listdir(self.folder))

    def __call__(self, filename: str) -> str:
        stem, dot, ext = filename.rpartition(".")
        if not stem:
            stem, dot, ext = filename, "", ""
        for n in itertools.count(1):
            name = filename if n == 1 else f"{stem}-{n}{dot}{ext}"
            if name not in self.taken and f"{name}.error.txt" not in self.taken:
                self.taken.update((name, f"{name}.error.txt"))
                return name
        raise AssertionError("unreachable")


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

    def tidy(self, batch: Sequence[Read], events: Sequence[Event]) -> None:
        """Act on what the log holds (after a redo that can differ from what was just decided)."""
        touched: set[Path] = set()
        for read, event in zip(batch, events, strict=True):
            claim = read.claim
            match event:
                case DatasetAccepted():
                    if read.scratch is not None and self._publish_converted(read.scratch, event.sha256):
                        touched.add(self.blobs.converted)
                    self._keep_original(claim.path, event.sha256)
                    touched.add(self.blobs.originals)
                case JobSubmitted() | CancelRequested() | RetryRequested():
                    sha = read.examined.verdict.sha256 if read.examined.verdict else None
                    if sha is not None:
                        self._keep_original(claim.path, sha)
                        touched.add(self.blobs.originals)
                case FileRejected():
                    self._keep_rejected(read, event)
                    touched.add(self.inbox.rejected)
                case DuplicateDropped():
                    pass
            if read.scratch is not None:
                with contextlib.suppress(FileNotFoundError):
                    read.scratch.unlink()
        for folder in touched:
            fsync_dir(folder)
        self._fault("stored")
        for read, event in zip(batch, events, strict=True):
            if not isinstance(event, FileRejected):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(read.claim.path)
        self._fault("done")

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
        folder = self.inbox.rejected
        problems = read.examined.verdict.problems if read.examined.verdict else ""
        text = (
            f"llmtraind rejected {event.filename} "
            f"({time.strftime('%Y-%m-%d %H:%M:%S %z')}).\n\n"
            f"{problems or event.problems}\n"
            "Fix the file and drop it again; this copy can be deleted.\n"
        )
        note = folder / f"{event.kept_as}.error.txt"
        tmp = folder / f".{event.kept_as}.error.txt.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.rename(tmp, note)
        if os.path.lexists(read.claim.path):
            os.rename(read.claim.path, folder / event.kept_as)
        self._rejects.taken.update((event.kept_as, note.name))
