"""Swift's real exit status when its supervisor dies first.

The supervisor (`daemon.runs.supervise`) writes `exit.json`; killed with SIGKILL, it writes
nothing, and only swift's parent can learn how swift ends. So the daemon makes itself a child
subreaper (PR_SET_CHILD_SUBREAPER): the supervisors it starts become its children once their
detaching parents exit, and a swift whose supervisor dies becomes its child too instead of init's.
The runner then does the supervisor's work for that swift: stops it on cancel and timeout, waits
for it, kills what is left of its group and writes `exit.json` from its exit status.

Every wait here names one process through its pidfd (waitid P_PIDFD), never "any child": asyncio's
child watcher (ThreadedChildWatcher in Python 3.11, one waitpid per pid it started) and
`subprocess` in threads wait for their own pids, and a wait for any child would steal their exit
statuses.

When the daemon was down as the supervisor died, swift became init's child and its exit status is
lost to everyone: the next daemon kills what is left of it, as PR_SET_PDEATHSIG did before there
was a subreaper, and records the run's end as unknown.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.runs.supervise import proc_start_ticks

__all__ = ["Orphan", "become_subreaper", "find_orphan", "kill_group", "reaped", "remaining_s"]

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process a child subreaper; False where the system does not allow it."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def reaped(pidfd: int) -> int | None:
    """Reap the exited process behind `pidfd` if it is our child: its exit status as `Popen`
    gives it (negative: killed by that signal); None if it is not ours or has not exited."""
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat.rpartition(b")")[2].split()[1])


@dataclass
class Orphan:
    """A swift that outlived its supervisor, held open by a pidfd so that its pid cannot name
    another process while the daemon deals with it."""

    pid: int
    pidfd: int
    ours: bool
    """Our child: the daemon can wait for it and learn its exit status."""
    started: float | None
    """When the supervisor started it (wall clock)."""
    timeout_at: float | None
    """When the job's timeout stops it (wall clock), counted from its start as the supervisor did."""
    timers: list[Any] = field(default_factory=list)
    """Pending stops and kills the runner scheduled for it."""
    stopped: str | None = None
    """"cancel", "shutdown" or "timeout" once the daemon stopped it, as the supervisor would."""


def find_orphan(supervisor: dict[str, Any] | None, timeout_s: float | None) -> Orphan | None:
    """The run's swift if it still exists (a zombie counts) as the process `supervisor.json`
    recorded. A supervisor.json from before child_start_ticks was recorded names a swift that died
    with its supervisor. Blocking (reads /proc)."""
    if supervisor is None or supervisor.get("child_start_ticks") is None:
        return None
    pid = int(supervisor["child_pid"])
    ticks = supervisor["child_start_ticks"]
    if proc_start_ticks(pid) != ticks:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if proc_start_ticks(pid) != ticks:  # gone and the pid reused between the check and the open
        os.close(pidfd)
        return None
    started = supervisor.get("started")
    started = float(started) if isinstance(started, (int, float)) else None
    timeout_at = None if started is None or timeout_s is None else started + timeout_s
    return Orphan(pid, pidfd, _parent(pid) == os.getpid(), started, timeout_at)


def remaining_s(orphan: Orphan) -> float | None:
    """Seconds left before the job's timeout stops the orphan; None without a timeout."""
    return None if orphan.timeout_at is None else max(0.0, orphan.timeout_at - time.time())
