"""The append-only SQLite event log.

One writer thread owns the only write connection, and each append is one call into it that runs the
whole transaction (BEGIN IMMEDIATE .. COMMIT). A task awaiting an append can be cancelled, but the
thread cannot be interrupted mid-transaction: the append then commits or rolls back as a whole and its
outcome is merely unknown to the cancelled caller, which is what idempotency keys are for. Readers use
separate connections (aiosqlite on the loop, plain sqlite3 for bulk replay in a thread), which WAL lets
run beside the writer without blocking it.

Opened for a caller that starts from a snapshot (`snapshot_schema`), the store checks only the events
after it (daemon.log.sqlite.check_tail) and leaves the history to `check_history`, which the daemon
runs once it serves; damage found there stops every further write, as damage found at open refuses
the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import aiosqlite

from daemon.core.events import NewEvent, Recorded
from daemon.core.layout import StateLayout
from daemon.core.streams import Append
from daemon.log.errors import ConcurrencyConflict, LogDamaged, StoreError, StoreUnavailable
from daemon.log.identity import Found, check_before_open, settle
from daemon.log.sqlite import (
    SELECT_AFTER,
    SELECT_KEYS,
    SELECT_STREAM,
    check_log,
    check_tail,
    connect,
    encode_snapshot,
    latest_snapshot_seq,
    prepare,
    row_to_recorded,
)

__all__ = ["EventStore", "private_dirs"]

log = logging.getLogger(__name__)

SNAPSHOTS_KEPT = 2
"""The newest to start from and the one before it, for a look at an earlier seq (`/v1/state?at=`)."""
FULL_CHECK_MAX_BYTES = 256 * 1024 * 1024
DAMAGE_NOTE = "log-damaged"
"""In the state folder once `check_history` found damage: the next start checks the whole log before
it serves (and so refuses it), instead of appending to it again until its own background check ends,
as a restart loop under systemd would. A start whose whole check passes removes it."""

T = TypeVar("T")
Listener = Callable[[list[Recorded]], None]


def private_dirs(folder: Path) -> None:
    """Create `folder` and its missing parents owner-only (0700), whatever the umask: the state
    folder holds the log, whose jobs, commands and errors are for the daemon's user and those the
    API lets in, not for every account on the machine."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        path.chmod(0o700)


def _file_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _private_files(path: Path) -> None:
    """The log and its -wal and -shm are the owner's only (0600). SQLite gives a -wal or -shm it
    creates the log's own mode, so once the log is 0600 they follow."""
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if name.stat().st_mode & 0o077:
                os.chmod(name, 0o600)


class EventStore:
    """The log. `open` checks it; `append` is durable when it returns."""

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._conn: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._listeners: list[Listener] = []
        self.last_seq = 0
        self.healthy = True
        self.last_error = ""
        self.log_id = ""
        self.appended_bytes = 0
        """The event data (JSON) committed by this store since it was opened, for the snapshot policy."""
        self.history_unchecked = False
        """Whether open left the events before the start-up snapshot to `check_history`."""
        self._full_check = True
        self._damage = ""
        self._opened: tuple[tuple[int, int], tuple[int, int]] | None = None
        """(st_dev, st_ino) of the log file and of its folder as opened."""

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        busy_timeout_ms: int = 5000,
        *,
        full_check: bool | None = None,
        new_log: bool = False,
        snapshot_schema: int | None = None,
    ) -> EventStore:
        """Open (creating if needed) and check the log; `full_check=None` picks by size
        (FULL_CHECK_MAX_BYTES). The log must be its folder's (daemon.log.identity); `new_log`
        accepts a new one beside an earlier history's runs and blobs. With a snapshot of
        `snapshot_schema` in the log only the events after it are checked (`history_unchecked`)."""
        store = cls(path, busy_timeout_ms)
        try:
            await store._run(store._open_sync, full_check, new_log, snapshot_schema)
        except BaseException:
            store._writer.shutdown(wait=False)
            raise
        store._reader = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        await store._reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        return store

    def _open_sync(self, full_check: bool | None, new_log: bool, snapshot_schema: int | None) -> None:
        private_dirs(self.path.parent)
        found = Found.at(self.path)
        layout = StateLayout(self.path.parent)
        check_before_open(self.path, layout, found, new_log=new_log)
        if full_check is None:
            full_check = not self.path.exists() or self.path.stat().st_size <= FULL_CHECK_MAX_BYTES
        try:
            conn = connect(self.path, self.busy_timeout_ms)
        except sqlite3.DatabaseError as e:
            raise LogDamaged(f"{self.path}: {e}") from None
        self._full_check = full_check
        try:
            prepare(conn)
            note = self.path.parent / DAMAGE_NOTE
            snapshot = None if snapshot_schema is None else latest_snapshot_seq(conn, snapshot_schema)
            if snapshot is None or note.exists():
                check_log(conn, full=full_check)
                note.unlink(missing_ok=True)
            else:
                check_tail(conn, snapshot)
                self.history_unchecked = True
        except sqlite3.DatabaseError as e:
            conn.close()
            raise LogDamaged(f"{self.path}: {e}") from None
        except LogDamaged as e:
            conn.close()
            raise LogDamaged(f"{self.path}: {e}") from None
        try:
            self.log_id = settle(conn, self.path, layout, found, new_log=new_log)
        except BaseException:
            conn.close()
            raise
        _private_files(self.path)
        self._opened = (_file_id(self.path), _file_id(self.path.parent))
        self._conn = conn
        self.last_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._writer.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def check_history(self) -> str:
        """The full check open left out (SQLite's integrity_check or quick_check as open would have
        chosen, gap-free seqs, versions, known types), on a read-only connection of its own beside
        the writer. Damage is loud: logged, shown by /healthz, and every later write refused.
        Returns the damage, or "". Cancelling it interrupts SQLite."""
        try:
            conn = connect(self.path, self.busy_timeout_ms, readonly=True)
        except sqlite3.Error as e:
            damage = f"cannot open the event log to check it: {e}"
        else:
            work = asyncio.ensure_future(asyncio.to_thread(self._check_history_sync, conn))
            try:
                damage = await asyncio.shield(work)
            except asyncio.CancelledError:
                conn.interrupt()
                with contextlib.suppress(BaseException):
                    await work
                raise
            finally:
                if work.done():
                    conn.close()
        self.history_unchecked = False
        if damage:
            self._damage = (
                f"the event log is damaged: {damage}; nothing more is recorded and nothing was "
                "repaired or truncated: stop the daemon, then restore the log from a backup or move it aside"
            )
            self.healthy, self.last_error = False, self._damage
            log.error("%s", self._damage)
            try:
                (self.path.parent / DAMAGE_NOTE).write_text(damage + "\n")
            except OSError as e:
                log.error("cannot leave %s for the next start: %s", DAMAGE_NOTE, e)
        return damage

    def _check_history_sync(self, conn: sqlite3.Connection) -> str:
        try:
            check_log(conn, full=self._full_check)
        except LogDamaged as e:
            return str(e)
        except sqlite3.DatabaseError as e:
            return f"cannot read the event log: {e}"
        return ""

    # -- writing -----------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Called on the loop, in seq order, with each committed batch, even if its appender was cancelled."""
        self._listeners.append(listener)

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int | None = None
    ) -> list[Recorded]:
        """Append `events` to `stream` atomically and durably.

        `expected_version` (the stream's current version, 0 for a new stream) turns on optimistic
        concurrency. If the batch's idempotency keys are already in the log, the originally recorded
        events are returned and nothing is written.
        """
        if not events:
            return []
        return (await self.append_batch([Append(stream, events, expected_version)]))[0]

    async def append_batch(self, parts: Sequence[Append]) -> list[list[Recorded]]:
        """Several streams' appends in one transaction (one fsync): all commit or none does.

        Each part behaves as its own `append`; a part whose keys are already recorded returns the
        original events and writes nothing, while the others are written.
        """
        parts = [p for p in parts if p.events]
        if not parts:
            return []
        loop = asyncio.get_running_loop()
        job = self._writer.submit(self._append_sync, parts)
        # Wired to the thread's future, not the awaiting task: a cancelled appender must not hide a commit.
        job.add_done_callback(lambda done: loop.call_soon_threadsafe(self._committed, done))
        results, _, _ = await asyncio.wrap_future(job)
        return results

    def _committed(self, fut: Future[tuple[list[list[Recorded]], list[Recorded], int]]) -> None:
        if fut.cancelled():
            return
        err = fut.exception()
        if err is not None:
            if isinstance(err, StoreUnavailable):
                self.healthy, self.last_error = False, str(err)
            return
        _, fresh, size = fut.result()
        self.healthy, self.last_error = True, ""
        self.appended_bytes += size
        if fresh:
            self.last_seq = fresh[-1].seq
            for listener in self._listeners:
                listener(fresh)

    def _append_sync(self, parts: list[Append]) -> tuple[list[list[Recorded]], list[Recorded], int]:
        conn = self._require_conn()
        where = ", ".join(sorted({p.stream for p in parts}))
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"cannot take the event log's write lock: {e}") from None
        try:
            results: list[list[Recorded]] = []
            fresh: list[Recorded] = []
            size = 0
            for part in parts:
                recorded, written = self._append_in_txn(
                    conn, part.stream, list(part.events), part.expected_version
                )
                results.append(recorded)
                if written:
                    fresh.extend(recorded)
                    size += written
            conn.execute("COMMIT" if fresh else "ROLLBACK")
            return results, fresh, size
        except sqlite3.IntegrityError as e:
            conn.execute("ROLLBACK")
            raise StoreError(f"append to {where!r} refused: {e}") from None
        except sqlite3.OperationalError as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreUnavailable(f"append to {where!r} failed, nothing was written: {e}") from None
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _append_in_txn(
        self, conn: sqlite3.Connection, stream: str, events: list[NewEvent], expected: int | None
    ) -> tuple[list[Recorded], int]:
        """The batch's events and the bytes of data written (0 where its keys were recorded before)."""
        keys = [e.idem_key for e in events if e.idem_key is not None]
        if keys:
            rows = conn.execute(SELECT_KEYS, (json.dumps(keys),)).fetchall()
            if rows:
                if len(rows) != len(keys):
                    raise StoreError(f"idempotency keys {keys} match only {len(rows)} recorded events")
                return [row_to_recorded(r) for r in rows], 0
        current = conn.execute(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream = ?", (stream,)
        ).fetchone()[0]
        if expected is not None and current != expected:
            raise ConcurrencyConflict(stream, expected, current)
        now = time.time()
        base = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        rows = [
            (
                stream,
                current + i,
                n.event.type,
                n.event.schema_version,
                n.idem_key,
                now,
                n.event.model_dump_json(),
            )
            for i, n in enumerate(events, start=1)
        ]
        conn.executemany(
            "INSERT INTO events (stream, version, type, schema, idem_key, ts, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        # One writer inside BEGIN IMMEDIATE and no deletes: the batch took the next len(events) seqs.
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        if last != base + len(events):
            raise StoreError(f"seq allocation out of step: expected {base + len(events)}, got {last}")
        out = [Recorded(base + i, stream, current + i, now, n.event) for i, n in enumerate(events, start=1)]
        return out, sum(len(row[6]) for row in rows)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the event store is closed")
        if self._damage:
            raise StoreUnavailable(self._damage)
        self._check_in_place()
        return self._conn

    def _check_in_place(self) -> None:
        """Refuse to write once the log file or the state folder was deleted or replaced: the
        connection would go on writing into a file nobody will ever read again."""
        assert self._opened is not None
        for (dev, ino), path, what in (
            (self._opened[1], self.path.parent, "the state folder"),
            (self._opened[0], self.path, "the event log"),
        ):
            try:
                now = _file_id(path)
            except FileNotFoundError:
                raise StoreUnavailable(
                    f"{what} {path} was deleted under the daemon: nothing more is recorded until a restart"
                ) from None
            except OSError as e:
                raise StoreUnavailable(f"{what} {path} cannot be checked: {e}") from None
            if now != (dev, ino):
                raise StoreUnavailable(
                    f"{what} {path} was replaced under the daemon: nothing more is recorded until a restart"
                )

    async def probe_writable(self) -> bool:
        """Take and release the write lock; the health monitor uses it to notice a lock held elsewhere."""

        def probe() -> None:
            conn = self._require_conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError as e:
                raise StoreUnavailable(f"event log is not writable: {e}") from None

        try:
            await self._run(probe)
        except StoreUnavailable as e:
            self.healthy, self.last_error = False, str(e)
            return False
        self.healthy, self.last_error = True, ""
        return True

    # -- snapshots ---------------------------------------------------------------------------------

    async def save_snapshot(self, seq: int, schema: int, state_json: str) -> None:
        """Compressed (daemon.log.sqlite.encode_snapshot); the pages of the snapshots it prunes go
        back to the file system on a log that has auto_vacuum = INCREMENTAL (daemon.log.sqlite.prepare)."""

        def save() -> None:
            conn = self._require_conn()
            blob = encode_snapshot(state_json)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots (seq, schema, ts, state) VALUES (?, ?, ?, ?)",
                    (seq, schema, time.time(), blob),
                )
                conn.execute(
                    "DELETE FROM snapshots WHERE seq NOT IN "
                    "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
                    (SNAPSHOTS_KEPT,),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            # executescript steps the pragma to its end; one execute() step frees one page.
            conn.executescript("PRAGMA incremental_vacuum")

        await self._run(save)

    # -- reading -----------------------------------------------------------------------------------

    async def read(self, after: int = 0, limit: int = 500) -> list[Recorded]:
        """A page of the log for the API: short, so no reader holds a snapshot open for long."""
        if self._reader is None:
            raise StoreError("the event store is closed")
        async with self._reader.execute(SELECT_AFTER, (after, limit)) as cur:
            rows = await cur.fetchall()
        return [row_to_recorded(tuple(r)) for r in rows]

    async def read_stream(self, stream: str, after: int = 0, limit: int = -1) -> list[Recorded]:
        """The stream's events after seq `after`, at most `limit` (-1: all): a page of a long one
        reads and decodes only that page."""
        if self._reader is None:
            raise StoreError("the event store is closed")
        async with self._reader.execute(SELECT_STREAM, (stream, after, limit)) as cur:
            rows = await cur.fetchall()
        return [row_to_recorded(tuple(r)) for r in rows]
