"""Finding dropped files: the folder is the truth, watch events only wake the scanner.

The scanner lists the folder itself at start-up, after every batch of watch events and every
`rescan_s` (reliability.md §3), so a missed or dropped event costs at most one rescan period.

The watch is the kernel's inotify, read here as raw bytes: only that something happened matters,
never which name, so no name can stop it (watchfiles gave up on every name that is not UTF-8). The
inbox's own folders are made again by the scan that finds them missing.

A file that was written in place (not renamed in) must not be read half-written: the kernel is asked
whether anyone still has it open for writing (a read lease is refused while a writer exists). Where
leases are unavailable (another owner's file, NFS), the file must instead sit unchanged for
`settle_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import stat
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from daemon.core.config import Config
from daemon.core.layout import InboxLayout
from daemon.intake.claim import Claim

__all__ = ["BUSY_RESCAN_S", "IGNORED_SUFFIXES", "Finder", "ignored_name"]

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".part", ".tmp")
BUSY_RESCAN_S = 0.25
REWATCH_S = 1.0
"""How often a lost watch (the inbox deleted or moved away) is tried again."""

_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x1000000
_WATCHED = _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE_SELF | _IN_MOVE_SELF
"""A name arriving or a write ending; names leaving (our own claims among them) wake nobody."""
_LOST = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED
_EVENT = struct.Struct("iIII")
"""struct inotify_event without its name: wd, mask, cookie, len (of the name that follows)."""
_libc = ctypes.CDLL(None, use_errno=True)


def ignored_name(name: str) -> bool:
    """Names a writer uses while a file is incomplete, and our own folders."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


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


class _Inotify:
    """One inotify watch on one folder."""

    def __init__(self, folder: Path) -> None:
        fd = int(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise _os_error(folder)
        self.fd = fd
        if int(_libc.inotify_add_watch(fd, os.fsencode(folder), _WATCHED | _IN_ONLYDIR)) < 0:
            error = _os_error(folder)
            os.close(fd)
            raise error

    def drain(self) -> tuple[bool, bool]:
        """Read every queued event: (any came, the watch is still there)."""
        came, alive = False, True
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return came, alive
            offset = 0
            while offset < len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                came = True
                alive = alive and not mask & _LOST

    def close(self) -> None:
        os.close(self.fd)


def _os_error(path: Path) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), str(path))


class Finder:
    """Watches and lists the inbox, and remembers which files are still settling between scans.

    `config` is read at each use, so a reload's [intake] timings apply from the next scan.
    """

    def __init__(self, inbox: InboxLayout, config: Callable[[], Config]) -> None:
        self.inbox = inbox
        self.config = config
        self.kick = asyncio.Event()
        """Set by the watcher: the scanner should list the folder now."""
        self._wake = asyncio.Event()
        """Set by inotify's file descriptor turning readable, and by `stop`."""
        self._stopping = False
        self._unsettled: dict[str, tuple[tuple[int, int], float]] = {}
        self._busy = False
        self._opened: _Inotify | None = None

    def open_watch(self) -> None:
        """Set up the watch before the first listing, so that a file dropped between the two is not
        left to the next rescan; the daemon says it serves only after this. A watch that cannot be
        set up here is tried again, and said, by `watch`."""
        with contextlib.suppress(OSError):
            self._opened = _Inotify(self.inbox.root)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    def rescan_in(self) -> float:
        """Seconds until the next scan when no watch event comes first."""
        return BUSY_RESCAN_S if self._busy or self._unsettled else self.config().intake.rescan_s

    async def watch(self) -> None:
        """Wake the scanner once a burst of events has been quiet for `watch_step_ms` (or has lasted
        four times that, 200 ms at least). A lost watch wakes it too, and is set up again."""
        loop = asyncio.get_running_loop()
        failing = ""
        while not self._stopping:
            notify, self._opened = self._opened, None
            try:
                notify = notify or _Inotify(self.inbox.root)
            except OSError as e:
                if str(e) != failing:
                    log.warning("cannot watch the inbox (%s); rescans continue, trying again", e)
                failing = str(e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), REWATCH_S)
                continue
            if failing:
                log.info("watching the inbox %s again", self.inbox.root)
                failing = ""
            loop.add_reader(notify.fd, self._wake.set)
            try:
                await self._relay(notify)
            finally:
                loop.remove_reader(notify.fd)
                notify.close()
            self.kick.set()

    async def _relay(self, notify: _Inotify) -> None:
        """Turn events into kicks until the watch is lost or the finder stops."""
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            came, alive = notify.drain()
            if not alive:
                return
            if not came:
                continue
            step = self.config().intake.watch_step_ms / 1000
            until = time.monotonic() + max(0.2, step * 4)
            while time.monotonic() < until and not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), step)
                except TimeoutError:
                    break
                self._wake.clear()
                if not notify.drain()[1]:
                    return
            self.kick.set()

    def scan(self, claim: Callable[[str], Claim | None]) -> list[Claim]:
        """List the inbox and `claim` each file that is complete, oldest first."""
        now = time.monotonic()
        busy = False
        seen: set[str] = set()
        claims: list[Claim] = []
        found: list[tuple[int, str, os.stat_result]] = []
        own = {f.name: f for f in (self.inbox.processing, self.inbox.staging, self.inbox.rejected)}
        with self._list() as entries:
            for entry in entries:
                name = entry.name
                own.pop(name, None)
                if ignored_name(name) or name == self.inbox.rejected.name:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime_ns, name, st))
        for folder in own.values():
            log.warning("the inbox folder %s was missing; it is made again", folder)
            folder.mkdir(exist_ok=True)
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
            claimed = claim(name)
            if claimed is not None:
                claims.append(claimed)
        self._busy = busy
        for gone in set(self._unsettled) - seen:
            del self._unsettled[gone]
        return claims

    def _list(self) -> contextlib.AbstractContextManager[Iterator[os.DirEntry[str]]]:
        try:
            return os.scandir(self.inbox.root)
        except FileNotFoundError:
            log.warning("the inbox %s was missing; it is made again", self.inbox.root)
            self.inbox.root.mkdir(parents=True, exist_ok=True)
            return os.scandir(self.inbox.root)

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
            return self.config().intake.settle_s == 0
        if now - seen[1] >= self.config().intake.settle_s:
            del self._unsettled[name]
            return True
        return False
