"""The inbox folder: watch, rescan, claim, read, record, tidy.

The protocol is Maildir's, with the folder as the truth (reliability.md §3): watch events only wake
the scanner, which lists the folder itself at start-up, after every batch of events and every
`rescan_s`. A file is claimed by renaming it into `.processing/<drop id>_<name>`, which makes the drop
id durable; everything after that is redone from `.processing/` after a crash, and the log's
idempotency key `drop:<drop id>` turns a redo into "already recorded".

Order per file: claim → read and validate (a worker thread; a dataset's swift-ready copy is written
to scratch and fsynced) → publish the copy under its sha256 → record the event → keep the original
under its sha256 (or move a rejected file to rejected/ with its reason) → remove the claim. So an
event is never recorded for data that is not durable, and a file never leaves the inbox before its
event is.

The steps live beside this module (watch, claim, examine, filing); this one runs the loops that
join them, so that reading stays parallel while recording is batched: one transaction and one
fsync for every file read since the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from daemon.core.config import Config
from daemon.core.events import (
    CancelRequested,
    DatasetAccepted,
    DatasetValidating,
    DuplicateDropped,
    FileRejected,
    JobSubmitted,
    NewEvent,
    PauseRequested,
    Recorded,
    ResumeRequested,
    RetryRequested,
)
from daemon.core.layout import InboxLayout, StateLayout
from daemon.core.state import State
from daemon.core.streams import INTAKE_STREAM
from daemon.core.swift_args import SwiftArgs
from daemon.intake.claim import Claim, Claimer, display_name
from daemon.intake.decide import JobIndex, decide
from daemon.intake.examine import Abandoned, Read, Reader
from daemon.intake.faults import Faults
from daemon.intake.filing import Filing, RejectNames, Unfiled
from daemon.intake.watch import Finder
from daemon.log.errors import StoreError
from daemon.log.store import EventStore

__all__ = ["Inbox"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

BATCH_MAX = 256
RETRY_S = (1.0, 60.0)
"""A step that failed on our side (the state's disk is full, an I/O error, a bug) is tried again
after 1 s, then twice as long each time up to 60 s: intake resumes by itself once the cause is
gone, and a claim is never given up (every step is safe to redo)."""


class Inbox:
    """Runs intake for one daemon: `start` spawns its tasks, `stop` ends them (claims stay claimed)."""

    def __init__(
        self, cfg: Config, store: EventStore, state: Callable[[], State], swift_args: SwiftArgs
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.state = state
        self.inbox = InboxLayout(cfg.paths.inbox)
        self.blobs = StateLayout(cfg.paths.state)
        fault = Faults()
        self._rejects = RejectNames(self.inbox.rejected)
        self._jobs = JobIndex()
        self._claimer = Claimer(self.inbox, fault)
        self._finder = Finder(self.inbox, lambda: self.cfg)
        self._reader = Reader(
            lambda: self.cfg, swift_args, self.blobs, fault, lambda: self._stopping, self._record_progress
        )
        self._filing = Filing(self.inbox, self.blobs, self._rejects, fault)
        self._fault = fault
        self._claims: asyncio.Queue[Claim] = asyncio.Queue()
        self._read: asyncio.Queue[Read] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(cfg.intake.workers, thread_name_prefix="intake")
        self._io = ThreadPoolExecutor(1, thread_name_prefix="inbox-io")
        self._tasks: list[asyncio.Task[None]] = []
        self._progress: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._failures: dict[str, tuple[int, str]] = {}
        """What is failing on our side ("read <drop id>", "record", "file away <drop id>") -> how many
        times in a row, and the last error."""
        self._retries: set[asyncio.TimerHandle] = set()
        self._aside: set[asyncio.Task[None]] = set()
        """Drops recorded but not filed away yet, each trying again on its own."""

    def reconfigure(self, cfg: Config) -> None:
        """A reload: new [limits] and [intake] timings apply to the next file; the folders and the
        number of readers stay as they were started (changing those takes a restart)."""
        self.cfg = cfg

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        redo = await loop.run_in_executor(self._io, self._prepare)
        for claim in redo:
            self._claims.put_nowait(claim)
        if redo:
            log.info("redoing %d claimed file(s) left by the previous run", len(redo))
        self._finder.open_watch()
        self._tasks = [
            asyncio.create_task(self._scan_loop(), name="inbox-scan"),
            asyncio.create_task(self._finder.watch(), name="inbox-watch"),
            asyncio.create_task(self._commit_loop(), name="inbox-commit"),
            *(
                asyncio.create_task(self._read_loop(), name=f"inbox-read-{i}")
                for i in range(self.cfg.intake.workers)
            ),
        ]

    async def stop(self) -> None:
        """Stop taking files. Reads in flight are abandoned; their claims are redone at the next start."""
        self._stopping = True
        self._finder.stop()
        for handle in self._retries:
            handle.cancel()
        tasks = [*self._tasks, *self._aside]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=False, cancel_futures=True)

    def _prepare(self) -> list[Claim]:
        for folder in (self.inbox.root, self.inbox.processing, self.inbox.staging, self.inbox.rejected):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.blobs.originals, self.blobs.converted, self.blobs.scratch):
            folder.mkdir(parents=True, exist_ok=True)
        for leftover in os.listdir(self.blobs.scratch):
            with contextlib.suppress(OSError):
                (self.blobs.scratch / leftover).unlink()
        self._rejects.refresh()
        return self._claimer.left_over()

    # -- finding and claiming ----------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._finder.kick.clear()
            try:
                claims = await loop.run_in_executor(self._io, self._scan)
            except OSError as e:
                log.error("cannot list the inbox %s: %s", self.inbox.root, e)
                claims = []
            for claim in claims:
                self._claims.put_nowait(claim)
            wait = self._finder.rescan_in()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finder.kick.wait(), wait)

    def _scan(self) -> list[Claim]:
        self._rejects.refresh()
        return self._finder.scan(self._claimer.claim)

    # -- reading -----------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            claim = await self._claims.get()
            try:
                read = await loop.run_in_executor(self._pool, self._reader.examine, claim, loop)
            except Abandoned:
                return
            except Exception as e:
                delay = self._failed(f"read {claim.drop}", f"cannot read {display_name(claim.name)}: {e}")
                # The file system refusing (state folder gone, disk full) is the operator's to fix and
                # /healthz says so: one line per try. Anything else is a defect: its traceback.
                report = log.error if isinstance(e, OSError) else log.exception
                report("reading %s failed; it stays claimed, next try in %.0f s: %s", claim.path, delay, e)
                self._retry_later(delay, claim)
                continue
            self._failures.pop(f"read {claim.drop}", None)
            if read is not None:
                self._read.put_nowait(read)

    def _retry_later(self, delay: float, claim: Claim) -> None:
        def again() -> None:
            self._retries.discard(handle)
            self._claims.put_nowait(claim)

        handle = asyncio.get_running_loop().call_later(delay, again)
        self._retries.add(handle)

    def _record_progress(self, event: DatasetValidating) -> None:
        before = self._progress.get(event.drop)

        async def record() -> None:
            if before is not None:
                with contextlib.suppress(Exception):
                    await before
            try:
                await self.store.append(INTAKE_STREAM, [NewEvent(event)])
            except StoreError as e:
                log.warning("could not record validation progress of %s: %s", event.name, e)

        self._progress[event.drop] = asyncio.create_task(record())

    # -- recording and tidying ---------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._read.get()]
            while len(batch) < BATCH_MAX and not self._read.empty():
                batch.append(self._read.get_nowait())
            for read in batch:
                pending = self._progress.pop(read.claim.drop, None)
                if pending is not None:
                    with contextlib.suppress(Exception):
                        await pending
            results = await self._until_done("record", len(batch), self._record, batch)
            self._fault("recorded")
            events = [r[0].event for r in results]
            unfiled = await loop.run_in_executor(self._io, self._filing.tidy, batch, events)
            for read, recorded in zip(batch, results, strict=True):
                _log_outcome(read.examined.filename, recorded[0])
            for item in unfiled:
                self._set_aside(item)

    def _set_aside(self, item: Unfiled) -> None:
        """A drop that could not be filed away tries again on its own, backing off, while the next
        batches go on; its claim stays in .processing/, so a restart redoes it too."""
        what = f"file away {item.read.claim.drop}"
        delay = self._unfiled(what, item)
        task = asyncio.create_task(self._file_later(what, item, delay), name=what)
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)

    def _unfiled(self, what: str, item: Unfiled) -> float:
        name = item.read.examined.filename
        delay = self._failed(what, f"cannot file away dropped files: {item.error} ({name})")
        log.error("cannot file away 1 dropped file(s), next try in %.0f s: %s (%s)", delay, item.error, name)
        return delay

    async def _file_later(self, what: str, item: Unfiled, delay: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(delay)
            again = await loop.run_in_executor(self._io, self._filing.tidy, [item.read], [item.event])
            if not again:
                self._failures.pop(what, None)
                log.info("%s filed away after all", item.read.examined.filename)
                return
            item = again[0]
            delay = self._unfiled(what, item)

    @property
    def trouble(self) -> str:
        """What keeps intake from finishing its work right now ("" when nothing does)."""
        return next((error for _, error in self._failures.values()), "")

    def _failed(self, what: str, error: str) -> float:
        """Count a failure of `what`; the seconds to wait before trying it again."""
        failures = self._failures.get(what, (0, ""))[0] + 1
        self._failures[what] = (failures, error)
        return retry_delay(failures)

    async def _until_done(self, what: str, files: int, step: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Await `step(*args)` until it succeeds (it is safe to redo). A busy or unwritable event log
        is the store's to report, and is retried every second; any other failure backs off."""
        while True:
            try:
                result = await step(*args)
            except StoreError as e:
                log.error("cannot %s %d dropped file(s), next try in 1 s: %s", what, files, e)
                await asyncio.sleep(1.0)
                continue
            except OSError as e:
                delay = self._failed(what, f"cannot {what} dropped files: {e}")
                log.error("cannot %s %d dropped file(s), next try in %.0f s: %s", what, files, delay, e)
                await asyncio.sleep(delay)
                continue
            self._failures.pop(what, None)
            return result

    async def _record(self, batch: Sequence[Read]) -> list[list[Recorded]]:
        parts = decide(self.state(), [r.examined for r in batch], self._rejects, self._jobs)
        await asyncio.get_running_loop().run_in_executor(self._io, self._filing.publish, batch)
        return await self.store.append_batch(parts)


def retry_delay(failures: int) -> float:
    """Seconds before the next try after `failures` failures in a row (RETRY_S)."""
    first, most = RETRY_S
    return float(min(most, first * 2 ** min(failures - 1, 16)))


def _log_outcome(filename: str, rec: Recorded) -> None:
    event = rec.event
    match event:
        case DatasetAccepted():
            log.info("dataset %s accepted: %s, %d rows (%s)", event.name, event.format, event.rows, filename)
        case JobSubmitted():
            log.info("job %s submitted as id %d (%s)", event.name, event.id, filename)
        case DuplicateDropped():
            log.info("%s is a duplicate of %s", filename, event.dataset or f"job {event.job_id}")
        case FileRejected():
            log.warning("%s rejected: %s (kept as rejected/%s)", filename, event.summary, event.kept_as)
        case CancelRequested() | RetryRequested() | PauseRequested() | ResumeRequested():
            log.info("%s: %s for job %d", filename, event.type, event.job_id)
