"""Reading a claimed file, in a worker thread, into what `decide` needs to know about it.

A claimed entry is looked at through lstat only: links, folders and special files are refused
without being opened. A dataset is validated while its swift-ready copy is written to scratch and
fsynced, so the copy is durable before any event can point at it; a long validation reports its
progress as DatasetValidating events, and gives up as soon as the daemon is stopping (the claim is
redone at the next start).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.core.config import Config
from daemon.core.disk import dataset_shortage
from daemon.core.drops import FileVerdict, dataset_name, file_kind
from daemon.core.events import DatasetValidating
from daemon.core.layout import StateLayout
from daemon.core.swift_args import SwiftArgs
from daemon.intake.claim import Claim, display_name
from daemon.intake.decide import Examined
from daemon.intake.faults import Faults
from daemon.intake.hardware import visible_gpus
from daemon.intake.validate import Box, check_file

__all__ = ["PROGRESS_EVERY_S", "Abandoned", "Read", "Reader"]

PROGRESS_EVERY_S = 1.0


class Abandoned(Exception):
    """The daemon is stopping: leave the claim for the next start."""


@dataclass(slots=True)
class Read:
    claim: Claim
    examined: Examined
    scratch: Path | None = None
    """The dataset's swift-ready copy, complete and fsynced, not yet published."""


def _hard_link(st: os.stat_result) -> str:
    return f"it is a hard link ({st.st_nlink} names for one file); drop a copy instead"


def _refusal(st: os.stat_result, path: Path, redo: bool) -> str | None:
    """Why a claimed entry is not read at all; checked on the entry itself, never through a link."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"it is a symbolic link (to {display_name(target)}); drop the file itself, not a link"
    if stat.S_ISDIR(mode):
        return "it is a folder; drop files, one at a time, not folders"
    if not stat.S_ISREG(mode):
        what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        return f"it is {what}, not a regular file"
    if st.st_nlink > 1 and not redo:
        return _hard_link(st)
    return None


class Reader:
    """Examines claims; `config` is read per file, so a reload's [limits] apply to the next one.

    `stopping` tells a long validation to give up; `report` is called on the loop with its progress.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        swift_args: SwiftArgs,
        blobs: StateLayout,
        fault: Faults,
        stopping: Callable[[], bool],
        report: Callable[[DatasetValidating], None],
    ) -> None:
        self.config = config
        self.swift_args = swift_args
        self.blobs = blobs
        self._fault = fault
        self._stopping = stopping
        self._report = report

    def _disk_short(self, size: int) -> str | None:
        """A dataset that would leave less free than runs need is refused (and kept) before any
        copy of it is written."""
        try:
            free = shutil.disk_usage(self.blobs.root).free
        except OSError:
            return None
        return dataset_shortage(free, size, self.config().runs.min_free_disk_gib, str(self.blobs.root))

    def examine(self, claim: Claim, loop: asyncio.AbstractEventLoop) -> Read | None:
        filename = display_name(claim.name)
        kind = file_kind(filename)
        try:
            st = os.lstat(claim.path)
        except FileNotFoundError:
            return None
        refused = None
        if filename != claim.name:
            refused = f"its name is not valid UTF-8 ({os.fsencode(claim.name)!r}); rename it"
        refused = refused or _refusal(st, claim.path, claim.redo)
        if refused is not None:
            return Read(claim, Examined(claim.drop, filename, kind, refused=refused))
        if kind != "dataset":
            cfg = self.config()
            box = Box(cfg.models, visible_gpus(cfg.gpus.devices))
            verdict = check_file(
                claim.path, cfg.limits, self.swift_args, same_as=st, name=filename, swift=cfg.swift, box=box
            )
            return self._examined(claim, filename, st, verdict, None)
        short = self._disk_short(st.st_size)
        if short is not None:
            return Read(claim, Examined(claim.drop, filename, kind, refused=short))
        scratch = self.blobs.scratch / f"{claim.drop}.jsonl"
        with open(scratch, "wb") as out:
            verdict = check_file(
                claim.path,
                self.config().limits,
                self.swift_args,
                out,
                progress=self._progress_hook(claim, dataset_name(filename), loop),
                same_as=st,
                name=filename,
                swift=self.config().swift,
                blobs=self.blobs,
            )
            if verdict.ok:
                out.flush()
                os.fsync(out.fileno())
        if not verdict.ok:
            scratch.unlink()
        return self._examined(claim, filename, st, verdict, scratch if verdict.ok else None)

    def _examined(
        self, claim: Claim, filename: str, st: os.stat_result, verdict: FileVerdict, scratch: Path | None
    ) -> Read:
        if st.st_nlink > 1 and not self._own_blob(st, verdict.sha256):
            # Only a redo gets here with two names: the second may be its own kept original.
            why = _hard_link(st)
            if scratch is not None:
                scratch.unlink()
            return Read(claim, Examined(claim.drop, filename, verdict.kind, refused=why))
        self._fault("examined")
        return Read(claim, Examined(claim.drop, filename, verdict.kind, verdict=verdict), scratch)

    def _own_blob(self, st: os.stat_result, sha: str | None) -> bool:
        if sha is None:
            return False
        try:
            return os.path.samestat(st, os.lstat(self.blobs.original(sha)))
        except OSError:
            return False

    def _progress_hook(
        self, claim: Claim, name: str, loop: asyncio.AbstractEventLoop
    ) -> Callable[[int, int, int], None]:
        started = time.monotonic()
        last = [started]

        def progress(done: int, total: int, rows: int) -> None:
            if self._stopping():
                raise Abandoned
            now = time.monotonic()
            if now - started >= PROGRESS_EVERY_S and now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                event = DatasetValidating(
                    drop=claim.drop, name=name, bytes_total=total, bytes_done=done, rows_done=rows
                )
                loop.call_soon_threadsafe(self._report, event)

        return progress
