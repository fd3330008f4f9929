"""Which event log a state folder belongs to.

A log that went missing, was truncated or emptied, or was swapped for another one would otherwise
start an empty history beside the old runs and blobs: job 1 again, writing into job 1's old folder
and reporting its checkpoints. So the log carries an id made when it is created, the state folder
keeps a copy (state/log-id), and the daemon refuses to start where the two tell different stories
and there is something of the old history to collide with, until the operator says otherwise
(`llmtraind serve --new-log`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from daemon.core.layout import StateLayout
from daemon.log.errors import LogMismatch
from daemon.log.sqlite import read_log_id, write_log_id

__all__ = ["Found", "check_before_open", "read_state_id", "settle", "write_state_id"]


@dataclass(frozen=True, slots=True)
class Found:
    """What the log file was before it was opened: whether it existed, and its size."""

    existed: bool
    size: int

    @classmethod
    def at(cls, path: Path) -> Found:
        try:
            return cls(True, path.stat().st_size)
        except FileNotFoundError:
            return cls(False, 0)


def read_state_id(layout: StateLayout) -> str | None:
    try:
        text = layout.log_id_file.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def write_state_id(layout: StateLayout, log_id: str) -> None:
    """Atomically and durably, owner-only: a crash leaves the old id or the new one, never half."""
    target = layout.log_id_file
    tmp = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{log_id}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _old_history(layout: StateLayout) -> list[str]:
    """The folders of the state folder that hold what an earlier history recorded."""
    held = []
    for folder in (layout.runs, layout.originals, layout.converted):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if any(folder.iterdir()):
                held.append(f"{folder.relative_to(layout.root)}/")
    return held


def _problem(path: Path, found: Found, events: int, log_id: str | None, state_id: str | None) -> str:
    """Why this log is not the state folder's, or "" where it is (or may become so)."""
    if events == 0:
        if not found.existed:
            return f"there is no event log at {path}"
        if found.size == 0:
            return f"the event log {path} is empty (0 bytes)"
        return f"the event log {path} holds no events"
    if state_id is not None and log_id != state_id:
        own = "no id (an older or another state folder's log)" if log_id is None else f"id {log_id}"
        return f"the event log {path} has {own}, but this state folder belongs to log {state_id}"
    return ""


def _refuse(problem: str, layout: StateLayout, new_log: bool) -> None:
    held = _old_history(layout)
    if held and not new_log:
        raise LogMismatch(
            f"{problem}, beside {' and '.join(held)} in {layout.root} from an earlier history; "
            "a new history there would reuse its job ids. Restore the log from a backup, or start "
            "afresh deliberately with `llmtraind serve --new-log` (the old runs/ and blobs/ stay "
            "where they are)"
        )


def check_before_open(path: Path, layout: StateLayout, found: Found, *, new_log: bool) -> None:
    """Refuse a missing or empty log before SQLite creates one, so a refusal leaves the folder as
    it found it."""
    if not found.existed or found.size == 0:
        _refuse(_problem(path, found, 0, None, None), layout, new_log)


def settle(conn: sqlite3.Connection, path: Path, layout: StateLayout, found: Found, *, new_log: bool) -> str:
    """The log's id, after checking it against the state folder's and recording it where missing.

    Refuses (LogMismatch) a log that is empty or not the state folder's while runs or blobs of an
    earlier history are there, unless `new_log`; gives an id to a log from before ids that has its
    history (the upgrade), and a new one to a log without history (a log whose events were lost
    must not name run folders as its predecessor did).
    """
    events = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    log_id = read_log_id(conn)
    state_id = read_state_id(layout)
    problem = _problem(path, found, events, log_id, state_id)
    if problem:
        _refuse(problem, layout, new_log)
    if log_id is None or events == 0:
        log_id = uuid.uuid4().hex
        write_log_id(conn, log_id)
    if state_id != log_id:
        write_state_id(layout, log_id)
    return log_id
