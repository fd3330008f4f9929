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

A file that was written in place (not renamed in) must not be read half-written: the kernel is asked
whether anyone still has it open for writing (a read lease is refused while a writer exists). Where
leases are unavailable (another owner's file, NFS), the file must instead sit unchanged for
`settle_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import shutil
import signal
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from watchfiles import Change, awatch

from daemon.core.config import Config
from daemon.core.drops import FileVerdict, dataset_name, file_kind
from daemon.core.events import (
    CancelRequested,
    DatasetAccepted,
    DatasetValidating,
    DuplicateDropped,
    Event,
    FileRejected,
    JobSubmitted,
    NewEvent,
    Recorded,
    RetryRequested,
)
from daemon.core.layout import InboxLayout, StateLayout
from daemon.core.state import State
from daemon.core.streams import INTAKE_STREAM
from daemon.core.swift_args import SwiftArgs
from daemon.intake.decide import Examined, decide
from daemon.intake.submit import fsync_dir
from daemon.intake.validate import check_file
from daemon.log.errors import StoreError
from daemon.log.store import EventStore

__all__ = ["FAULT_ENV", "IGNORED_SUFFIXES", "STEPS", "Inbox", "ignored_name"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

IGNORED_SUFFIXES = (".part", ".tmp")
STEPS = ("claimed", "examined", "published", "recorded", "stored", "done")
FAULT_ENV = "LLMTRAIND_TEST_FAULT"
"""Test hook: the daemon SIGKILLs itself when intake reaches this step (one of STEPS)."""
BATCH_MAX = 256
PROGRESS_EVERY_S = 1.0
BUSY_RESCAN_S = 0.25
NAME_IN_CLAIM_MAX = 200
"""Bytes of the original name kept in the claim's name (NAME_MAX is 255 with the drop id)."""
RETRY_S = (1.0, 60.0)
"""A step that failed on our side (the state's disk is full, an I/O error, a bug) is tried again
after 1 s, then twice as long each time up to 60 s: intake resumes by itself once the cause is
gone, and a claim is never given up (every step is safe to redo)."""


def ignored_name(name: str) -> bool:
    """Names a writer uses while a file is incomplete, and our own folders."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def display_name(name: str) -> str:
    """A name as text: bytes that are not UTF-8 shown as \\xNN, so events and files can hold it."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


class _Abandoned(Exception):
    """The daemon is stopping: leave the claim for the next start."""


@dataclass(frozen=True, slots=True)
class Claim:
    drop: str
    name: str
    """The name it was dropped under (surrogate-escaped when not UTF-8)."""
    path: Path
    redo: bool
    """Found in .processing/ at start-up: its first pass may already be recorded."""


@dataclass(slots=True)
class _Read:
    claim: Claim
    examined: Examined
    scratch: Path | None = None
    """The dataset's swift-ready copy, complete and fsynced, not yet published."""


def _writer_state(path: Path) -> str:
    """'free' when no process has the file open for writing, 'busy' when one has, else 'unknown'."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return "unknown"
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return "busy" if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else "unknown"
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return "free"
    finally:
        os.close(fd)


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


class _RejectNames:
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


class Inbox:
    """Runs intake for one daemon: `start` spawns its tasks, `stop` ends them (claims stay claimed)."""

    def __init__(
        self, cfg: Config, store: EventStore, state: Callable[[], State], swift_args: SwiftArgs
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.state = state
        self.swift_args = swift_args
        self.inbox = InboxLayout(cfg.paths.inbox)
        self.blobs = StateLayout(cfg.paths.state)
        self._rejects = _RejectNames(self.inbox.rejected)
        self._claims: asyncio.Queue[Claim] = asyncio.Queue()
        self._read: asyncio.Queue[_Read] = asyncio.Queue()
        self._kick = asyncio.Event()
        self._watch_stop = asyncio.Event()
        self._pool = ThreadPoolExecutor(cfg.intake.workers, thread_name_prefix="intake")
        self._io = ThreadPoolExecutor(1, thread_name_prefix="inbox-io")
        self._tasks: list[asyncio.Task[None]] = []
        self._progress: dict[str, asyncio.Task[None]] = {}
        self._unsettled: dict[str, tuple[tuple[int, int], float]] = {}
        self._busy = False
        self._stopping = False
        self._failures: dict[str, tuple[int, str]] = {}
        """What is failing on our side ("read <drop id>", "record", "file away") -> how many times in
        a row, and the last error."""
        self._retries: set[asyncio.TimerHandle] = set()
        self._ids = itertools.count(1)
        self._crash_at = os.environ.get(FAULT_ENV, "")

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
        self._tasks = [
            asyncio.create_task(self._scan_loop(), name="inbox-scan"),
            asyncio.create_task(self._watch_loop(), name="inbox-watch"),
            asyncio.create_task(self._commit_loop(), name="inbox-commit"),
            *(
                asyncio.create_task(self._read_loop(), name=f"inbox-read-{i}")
                for i in range(self.cfg.intake.workers)
            ),
        ]

    async def stop(self) -> None:
        """Stop taking files. Reads in flight are abandoned; their claims are redone at the next start."""
        self._stopping = True
        self._watch_stop.set()
        for handle in self._retries:
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
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
        claims = []
        for entry in sorted(os.listdir(self.inbox.processing)):
            drop, sep, name = entry.partition("_")
            if not sep or not name:
                drop, name = self._new_drop(), entry
            claims.append(Claim(drop, name, self.inbox.processing / entry, redo=True))
        return claims

    def _new_drop(self) -> str:
        return f"{time.time_ns():x}-{os.getpid()}-{next(self._ids)}"

    def _fault(self, step: str) -> None:
        if step == self._crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    # -- finding and claiming ----------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        """Watch events only wake the scanner; when the watcher dies (it does on a name that is not
        UTF-8), the rescans carry on and it is restarted."""
        step = self.cfg.intake.watch_step_ms
        while not self._stopping:
            try:
                async for _ in awatch(
                    self.inbox.root,
                    recursive=False,
                    step=step,
                    debounce=max(200, step * 4),
                    stop_event=self._watch_stop,
                    watch_filter=lambda change, _path: change != Change.deleted,
                    rust_timeout=1000,
                ):
                    self._kick.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("the inbox watcher stopped (%s); restarting it, rescans continue", e)
                self._kick.set()
                await asyncio.sleep(0.5)

    async def _scan_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._kick.clear()
            try:
                claims = await loop.run_in_executor(self._io, self._scan)
            except OSError as e:
                log.error("cannot list the inbox %s: %s", self.inbox.root, e)
                claims = []
            for claim in claims:
                self._claims.put_nowait(claim)
            wait = BUSY_RESCAN_S if self._busy or self._unsettled else self.cfg.intake.rescan_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), wait)

    def _scan(self) -> list[Claim]:
        self._rejects.refresh()
        now = time.monotonic()
        busy = False
        seen: set[str] = set()
        claims: list[Claim] = []
        found: list[tuple[int, str, os.stat_result]] = []
        with os.scandir(self.inbox.root) as entries:
            for entry in entries:
                name = entry.name
                if ignored_name(name) or name == self.inbox.rejected.name:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime_ns, name, st))
        # Oldest first, so files dropped together are submitted in the order they were written.
        for _, name, st in sorted(found, key=lambda f: (f[0], f[1])):
            seen.add(name)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                ready = self._settled(name, st, now)
                if ready is None:
                    busy = True
                    continue
                if not ready:
                    continue
            claim = self._claim(name)
            if claim is not None:
                claims.append(claim)
        self._busy = busy
        for gone in set(self._unsettled) - seen:
            del self._unsettled[gone]
        return claims

    def _settled(self, name: str, st: os.stat_result, now: float) -> bool | None:
        """True: take it now; None: a writer has it open; False: wait for it to settle."""
        state = _writer_state(self.inbox.root / name)
        if state == "free":
            self._unsettled.pop(name, None)
            return True
        if state == "busy":
            return None
        key = (st.st_size, st.st_mtime_ns)
        seen = self._unsettled.get(name)
        if seen is None or seen[0] != key:
            self._unsettled[name] = (key, now)
            return self.cfg.intake.settle_s == 0
        if now - seen[1] >= self.cfg.intake.settle_s:
            del self._unsettled[name]
            return True
        return False

    def _claim(self, name: str) -> Claim | None:
        drop = self._new_drop()
        kept = os.fsdecode(os.fsencode(name)[:NAME_IN_CLAIM_MAX])
        target = self.inbox.processing / f"{drop}_{kept}"
        try:
            os.rename(self.inbox.root / name, target)
        except FileNotFoundError:
            return None
        self._fault("claimed")
        return Claim(drop, name, target, redo=False)

    # -- reading -----------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            claim = await self._claims.get()
            try:
                read = await loop.run_in_executor(self._pool, self._examine, claim, loop)
            except _Abandoned:
                return
            except Exception as e:
                delay = self._failed(f"read {claim.drop}", f"cannot read {display_name(claim.name)}: {e}")
                log.exception("reading %s failed; it stays claimed, next try in %.0f s", claim.path, delay)
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

    def _examine(self, claim: Claim, loop: asyncio.AbstractEventLoop) -> _Read | None:
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
            return _Read(claim, Examined(claim.drop, filename, kind, refused=refused))
        if kind != "dataset":
            verdict = check_file(claim.path, self.cfg.limits, self.swift_args, same_as=st, name=filename)
            return self._examined(claim, filename, st, verdict, None)
        scratch = self.blobs.scratch / f"{claim.drop}.jsonl"
        with open(scratch, "wb") as out:
            verdict = check_file(
                claim.path,
                self.cfg.limits,
                self.swift_args,
                out,
                progress=self._progress_hook(claim, dataset_name(filename), loop),
                same_as=st,
                name=filename,
            )
            if verdict.ok:
                out.flush()
                os.fsync(out.fileno())
        if not verdict.ok:
            scratch.unlink()
        return self._examined(claim, filename, st, verdict, scratch if verdict.ok else None)

    def _examined(
        self, claim: Claim, filename: str, st: os.stat_result, verdict: FileVerdict, scratch: Path | None
    ) -> _Read:
        if st.st_nlink > 1 and not self._own_blob(st, verdict.sha256):
            # Only a redo gets here with two names: the second may be its own kept original.
            why = _hard_link(st)
            if scratch is not None:
                scratch.unlink()
            return _Read(claim, Examined(claim.drop, filename, verdict.kind, refused=why))
        self._fault("examined")
        return _Read(claim, Examined(claim.drop, filename, verdict.kind, verdict=verdict), scratch)

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
            if self._stopping:
                raise _Abandoned
            now = time.monotonic()
            if now - started >= PROGRESS_EVERY_S and now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                event = DatasetValidating(
                    drop=claim.drop, name=name, bytes_total=total, bytes_done=done, rows_done=rows
                )
                loop.call_soon_threadsafe(self._record_progress, event)

        return progress

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
            await self._until_done(
                "file away", len(batch), loop.run_in_executor, self._io, self._tidy, batch, events
            )
            for read, recorded in zip(batch, results, strict=True):
                _log_outcome(read.examined.filename, recorded[0])

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

    async def _record(self, batch: Sequence[_Read]) -> list[list[Recorded]]:
        parts = decide(self.state(), [r.examined for r in batch], self._rejects)
        await asyncio.get_running_loop().run_in_executor(self._io, self._publish, batch)
        return await self.store.append_batch(parts)

    def _publish(self, batch: Sequence[_Read]) -> None:
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

    def _tidy(self, batch: Sequence[_Read], events: Sequence[Event]) -> None:
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

    def _keep_rejected(self, read: _Read, event: FileRejected) -> None:
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
        case CancelRequested() | RetryRequested():
            log.info("%s: %s for job %d", filename, event.type, event.job_id)
