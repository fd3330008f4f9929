"""`llmtraind backup DEST`: a consistent copy of the event log while the daemon runs.

Copying the log file with `cp` while the daemon appends can give a torn copy, and the -wal file
holds the latest events anyway; SQLite's online backup API reads one snapshot (a read transaction,
which in WAL mode never blocks the daemon's writer) and writes it page by page. The state folder's
log-id goes with it, because `serve` accepts a restored log only beside the id its runs and blobs
were named by.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.core.config_file import resolve_config_path
from daemon.log.errors import LogDamaged

if TYPE_CHECKING:
    from daemon.core.config import Config

# daemon.log.sqlite and daemon.log.identity load the event catalogue, daemon.core.config pydantic:
# imported where they are used, since every command builds this one's parser.

__all__ = ["Backup", "BackupError", "add_parser", "backup"]

LOG_NAME = "llmtraind.sqlite3"
"""The copy keeps the log's own name, so that restoring it is putting the file back."""


class BackupError(Exception):
    """The backup was not made; DEST is left as it was (absent, or what was there before)."""


@dataclass(frozen=True, slots=True)
class Backup:
    log: Path
    log_id_file: Path | None
    log_id: str | None
    events: int
    snapshots: int
    last_job: int | None
    bytes: int

    def lines(self) -> list[str]:
        last_job = "none" if self.last_job is None else str(self.last_job)
        out = [
            f"wrote {self.log}: {self.events} events (seq 1..{self.events}), {self.snapshots} snapshots, "
            f"last job {last_job}, {self.bytes} bytes, integrity ok",
        ]
        if self.log_id_file is not None:
            out.append(f"wrote {self.log_id_file}: log id {self.log_id}")
        else:
            out.append("no log-id written: this log has no id yet (a daemon start gives it one)")
        return out


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source: Path, target: Path) -> None:
    """One backup step over every page: the source's read transaction spans the whole copy, so the
    copy is one moment of the log however much the daemon appends meanwhile. The copy is turned
    into a rollback-journal file so it is complete in itself, with no -wal beside it."""
    from daemon.log.sqlite import open_readonly

    src = open_readonly(source)
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def _verify(target: Path) -> tuple[int, int, int | None, str | None]:
    """Events, snapshots, the last job id and the log id of the copy, after SQLite's integrity check
    and the log's own invariants (gap-free seq, stream versions 1..n)."""
    from daemon.log.sqlite import check_log, read_log_id

    conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True, isolation_level=None)
    try:
        check_log(conn, full=True)
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        snapshots = conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]
        last_job = conn.execute(
            "SELECT max(CAST(substr(stream, 5) AS INTEGER)) FROM events WHERE stream LIKE 'job:%'"
        ).fetchone()[0]
        return int(events), int(snapshots), last_job, read_log_id(conn)
    finally:
        conn.close()


def backup(cfg: Config, dest: Path) -> Backup:
    """Copy the event log and the log-id into the new folder `dest` (0700; missing parents are made),
    durably.

    Refuses an existing `dest` rather than mixing a new log with an older log-id, and removes what
    it created when the copy fails, so a folder named like a backup always holds a whole one.
    """
    from daemon.core.layout import StateLayout
    from daemon.log.identity import read_state_id

    source = cfg.db_path
    if not source.is_file():
        raise BackupError(f"there is no event log at {source}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.mkdir(mode=0o700)
    except FileExistsError:
        raise BackupError(
            f"{dest} exists; a backup goes into a new folder and never overwrites one"
        ) from None
    except OSError as e:
        raise BackupError(f"cannot create {dest}: {e}") from None
    try:
        target = dest / LOG_NAME
        _copy(source, target)
        events, snapshots, last_job, log_id = _verify(target)
        log_id = log_id or read_state_id(StateLayout(cfg.paths.state))
        id_file = None
        if log_id:
            id_file = dest / StateLayout(dest).log_id_file.name
            _write_private(id_file, f"{log_id}\n")
        target.chmod(0o600)
        _fsync(target)
        _fsync(dest)
        _fsync(dest.parent)
    except (OSError, sqlite3.Error, LogDamaged) as e:
        with contextlib.suppress(OSError):
            shutil.rmtree(dest)
        raise BackupError(f"backup of {source} failed, nothing kept in {dest}: {e}") from None
    return Backup(target, id_file, log_id, events, snapshots, last_job, target.stat().st_size)


def _command(args: argparse.Namespace) -> int:
    """What was written on stdout, or why not on stderr with status 1."""
    from daemon.core.config import load_config

    cfg = load_config(resolve_config_path(args.config))
    try:
        made = backup(cfg, Path(args.dest).absolute())
    except BackupError as e:
        print(f"llmtraind: backup: {e}", file=sys.stderr)
        return 1
    print("\n".join(made.lines()))
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """`llmtraind backup [--config FILE] DEST`, registered by the command line's parser."""
    p = sub.add_parser(
        "backup", parents=[common], help="copy the event log and its log-id into a new folder (online)"
    )
    p.add_argument("dest", metavar="DEST", help="a folder to create; an existing one is refused")
    p.set_defaults(fn=_command)
