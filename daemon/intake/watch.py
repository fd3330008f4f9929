"""Finding dropped files: the folder is the truth, watch events only wake the scanner.

The scanner lists the folder itself at start-up, after every batch of watch events and every
`rescan_s` (reliability.md §3), so a missed or dropped event costs at most one rescan period.

A file that was written in place (not renamed in) must not be read half-written: the kernel is asked
whether anyone still has it open for writing (a read lease is refused while a writer exists). Where
leases are unavailable (another owner's file, NFS), the file must instead sit unchanged for
`settle_s`.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

from daemon.core.config import Config
from daemon.core.layout import InboxLayout
from daemon.intake.claim import Claim

__all__ = ["BUSY_RESCAN_S", "IGNORED_SUFFIXES", "Finder", "ignored_name"]

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".part", ".tmp")
BUSY_RESCAN_S = 0.25


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


class Finder:
    """Watches and lists the inbox, and remembers which files are still settling between scans.

    `config` is read at each use, so a reload's [intake] timings apply from the next scan.
    """

    def __init__(self, inbox: InboxLayout, config: Callable[[], Config]) -> None:
        self.inbox = inbox
        self.config = config
        self.kick = asyncio.Event()
        """Set by the watcher: the scanner should list the folder now."""
        self._watch_stop = asyncio.Event()
        self._stopping = False
        self._unsettled: dict[str, tuple[tuple[int, int], float]] = {}
        self._busy = False

    def stop(self) -> None:
        self._stopping = True
        self._watch_stop.set()

    def rescan_in(self) -> float:
        """Seconds until the next scan when no watch event comes first."""
        return BUSY_RESCAN_S if self._busy or self._unsettled else self.config().intake.rescan_s

    async def watch(self) -> None:
        """Watch events only wake the scanner; when the watcher dies (it does on a name that is not
        UTF-8), the rescans carry on and it is restarted."""
        step = self.config().intake.watch_step_ms
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
                    self.kick.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("the inbox watcher stopped (%s); restarting it, rescans continue", e)
                self.kick.set()
                await asyncio.sleep(0.5)

    def scan(self, claim: Callable[[str], Claim | None]) -> list[Claim]:
        """List the inbox and `claim` each file that is complete, oldest first."""
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
            claimed = claim(name)
            if claimed is not None:
                claims.append(claimed)
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
            return self.config().intake.settle_s == 0
        if now - seen[1] >= self.config().intake.settle_s:
            del self._unsettled[name]
            return True
        return False
