"""The append-only SQLite event log.

One writer thread owns the only write connection, and each append is one call into it that runs the
whole transaction (BEGIN IMMEDIATE .. COMMIT). A task awaiting an append can be cancelled, but the
thread cannot be interrupted mid-transaction: the append then commits or rolls back as a whole and its
outcome is merely unknown to the cancelled caller, which is what idempotency keys are for. Readers use
separate connections (aiosqlite on the loop, plain sqlite3 for bulk replay in a thread), which WAL lets
run beside the writer without blocking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiosqlite

from daemon.core.events import EVENT_TYPES, NewEvent, Recorded, decode_event
from daemon.core.streams import Append

__all__ = [
    "ConcurrencyConflict",
    "EventStore",
    "LogDamaged",
    "Snapshot",
    "StoreError",
    "StoreUnavailable",
    "check_log",
    "dump_jsonl",
    "iter_events",
    "latest_snapshot",
    "open_readonly",
]

log = logging.getLogger(__name__)

DB_SCHEMA = 1
_DDL = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    stream   TEXT    NOT NULL,
    version  INTEGER NOT NULL CHECK (version >= 1),
    type     TEXT    NOT NULL,
    schema   INTEGER NOT NULL,
    idem_key TEXT    UNIQUE,
    ts       REAL    NOT NULL,
    data     TEXT    NOT NULL CHECK (json_valid(data)),
    UNIQUE (stream, version)
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;
CREATE TABLE IF NOT EXISTS snapshots (
    seq    INTEGER PRIMARY KEY,
    schema INTEGER NOT NULL,
    ts     REAL    NOT NULL,
    state  TEXT    NOT NULL
);
"""
_SELECT_AFTER = (
    "SELECT seq, stream, version, type, schema, ts, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
)
_SELECT_STREAM = (
    "SELECT seq, stream, version, type, schema, ts, data FROM events WHERE stream = ? ORDER BY version"
)
_SELECT_KEYS = (
    "SELECT seq, stream, version, type, schema, ts, data FROM events "
    "WHERE idem_key IN (SELECT value FROM json_each(?)) ORDER BY seq"
)
_SELECT_ALL = "SELECT seq, stream, version, type, schema, ts, data, idem_key FROM events ORDER BY seq"
SNAPSHOTS_KEPT = 3
FULL_CHECK_MAX_BYTES = 256 * 1024 * 1024


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class ConcurrencyConflict(StoreError):
    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at version {actual}, the append expected {expected}")
        self.stream, self.expected, self.actual = stream, expected, actual


class StoreUnavailable(StoreError):
    """The log could not be written now (locked by another process, disk full, I/O error); nothing was."""


class LogDamaged(StoreError):
    """The database fails its integrity checks; the daemon must not run on it."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    schema: int
    state_json: str


def _connect(path: Path, busy_timeout_ms: int, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=0)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _row_to_recorded(row: tuple[int, str, int, str, int, float, str]) -> Recorded:
    seq, stream, version, type_, schema, ts, data = row
    return Recorded(seq, stream, version, ts, decode_event(type_, schema, data))


def check_log(conn: sqlite3.Connection, *, full: bool = True) -> None:
    """Refuse a damaged log: SQLite's own check, then our invariants (gap-free seq, versions 1..n)."""
    try:
        pragma = "integrity_check" if full else "quick_check"
        problems = [r[0] for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
        if problems != ["ok"]:
            raise LogDamaged("SQLite integrity check failed: " + "; ".join(problems[:5]))
        count, lo, hi = conn.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone()
    except sqlite3.DatabaseError as e:
        raise LogDamaged(f"cannot read the event log: {e}") from None
    if count and (lo != 1 or hi != count):
        raise LogDamaged(f"event seq is not gap-free: {count} events span seq {lo}..{hi}")
    bad = conn.execute(
        "SELECT stream, count(*), min(version), max(version) FROM events GROUP BY stream "
        "HAVING min(version) != 1 OR max(version) != count(*) LIMIT 5"
    ).fetchall()
    if bad:
        detail = ", ".join(f"{s} has {n} events with versions {a}..{b}" for s, n, a, b in bad)
        raise LogDamaged(f"stream versions are not 1..n: {detail}")
    unknown = [
        r[0] for r in conn.execute("SELECT DISTINCT type FROM events").fetchall() if r[0] not in EVENT_TYPES
    ]
    if unknown:
        raise LogDamaged(f"unknown event types {unknown}: the log was written by a newer llmtraind")


def open_readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise LogDamaged(f"{path}: no event log here")
    try:
        return _connect(path, 5000, readonly=True)
    except sqlite3.DatabaseError as e:
        raise LogDamaged(f"{path}: {e}") from None


def iter_events(
    conn: sqlite3.Connection, after: int = 0, upto: int | None = None, batch: int = 10_000
) -> Iterator[Recorded]:
    """Stream decoded events with seq in (after, upto] in order, a page at a time."""
    last = after
    while True:
        limit = batch if upto is None else min(batch, upto - last)
        if limit <= 0:
            return
        rows = conn.execute(_SELECT_AFTER, (last, limit)).fetchall()
        for row in rows:
            yield _row_to_recorded(row)
        if len(rows) < limit:
            return
        last = rows[-1][0]


def latest_snapshot(conn: sqlite3.Connection, schema: int, at_most: int | None = None) -> Snapshot | None:
    row = conn.execute(
        "SELECT seq, schema, state FROM snapshots WHERE schema = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
        (schema, at_most if at_most is not None else 2**62),
    ).fetchone()
    return Snapshot(*row) if row else None


T = TypeVar("T")
Listener = Callable[[list[Recorded]], None]


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

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, path: Path, busy_timeout_ms: int = 5000, *, full_check: bool | None = None
    ) -> EventStore:
        """Open (creating if needed) and check the log; `full_check=None` picks by size (FULL_CHECK_MAX_BYTES)."""
        store = cls(path, busy_timeout_ms)
        try:
            await store._run(store._open_sync, full_check)
        except BaseException:
            store._writer.shutdown(wait=False)
            raise
        store._reader = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        await store._reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        return store

    def _open_sync(self, full_check: bool | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if full_check is None:
            full_check = not self.path.exists() or self.path.stat().st_size <= FULL_CHECK_MAX_BYTES
        try:
            conn = _connect(self.path, self.busy_timeout_ms)
        except sqlite3.DatabaseError as e:
            raise LogDamaged(f"{self.path}: {e}") from None
        try:
            self._prepare(conn)
            check_log(conn, full=full_check)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise LogDamaged(f"{self.path}: {e}") from None
        except LogDamaged as e:
            conn.close()
            raise LogDamaged(f"{self.path}: {e}") from None
        self._conn = conn
        self.last_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise LogDamaged(f"cannot switch to WAL journal (got {mode!r})")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > DB_SCHEMA:
            raise LogDamaged(f"database schema {version} is newer than this llmtraind ({DB_SCHEMA})")
        conn.executescript(_DDL)
        conn.execute(f"PRAGMA user_version = {DB_SCHEMA}")

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
        results, _ = await asyncio.wrap_future(job)
        return results

    def _committed(self, fut: Future[tuple[list[list[Recorded]], list[Recorded]]]) -> None:
        if fut.cancelled():
            return
        err = fut.exception()
        if err is not None:
            if isinstance(err, StoreUnavailable):
                self.healthy, self.last_error = False, str(err)
            return
        _, fresh = fut.result()
        self.healthy, self.last_error = True, ""
        if fresh:
            self.last_seq = fresh[-1].seq
            for listener in self._listeners:
                listener(fresh)

    def _append_sync(self, parts: list[Append]) -> tuple[list[list[Recorded]], list[Recorded]]:
        conn = self._require_conn()
        where = ", ".join(sorted({p.stream for p in parts}))
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"cannot take the event log's write lock: {e}") from None
        try:
            results: list[list[Recorded]] = []
            fresh: list[Recorded] = []
            for part in parts:
                recorded, new = self._append_in_txn(
                    conn, part.stream, list(part.events), part.expected_version
                )
                results.append(recorded)
                if new:
                    fresh.extend(recorded)
            conn.execute("COMMIT" if fresh else "ROLLBACK")
            return results, fresh
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
    ) -> tuple[list[Recorded], bool]:
        keys = [e.idem_key for e in events if e.idem_key is not None]
        if keys:
            rows = conn.execute(_SELECT_KEYS, (json.dumps(keys),)).fetchall()
            if rows:
                if len(rows) != len(keys):
                    raise StoreError(f"idempotency keys {keys} match only {len(rows)} recorded events")
                return [_row_to_recorded(r) for r in rows], False
        current = conn.execute(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream = ?", (stream,)
        ).fetchone()[0]
        if expected is not None and current != expected:
            raise ConcurrencyConflict(stream, expected, current)
        now = time.time()
        base = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        conn.executemany(
            "INSERT INTO events (stream, version, type, schema, idem_key, ts, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
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
            ],
        )
        # One writer inside BEGIN IMMEDIATE and no deletes: the batch took the next len(events) seqs.
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        if last != base + len(events):
            raise StoreError(f"seq allocation out of step: expected {base + len(events)}, got {last}")
        out = [Recorded(base + i, stream, current + i, now, n.event) for i, n in enumerate(events, start=1)]
        return out, True

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the event store is closed")
        return self._conn

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
        def save() -> None:
            conn = self._require_conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots (seq, schema, ts, state) VALUES (?, ?, ?, ?)",
                    (seq, schema, time.time(), state_json),
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

        await self._run(save)

    # -- reading -----------------------------------------------------------------------------------

    async def read(self, after: int = 0, limit: int = 500) -> list[Recorded]:
        """A page of the log for the API: short, so no reader holds a snapshot open for long."""
        if self._reader is None:
            raise StoreError("the event store is closed")
        async with self._reader.execute(_SELECT_AFTER, (after, limit)) as cur:
            rows = await cur.fetchall()
        return [_row_to_recorded(tuple(r)) for r in rows]

    async def read_stream(self, stream: str) -> list[Recorded]:
        if self._reader is None:
            raise StoreError("the event store is closed")
        async with self._reader.execute(_SELECT_STREAM, (stream,)) as cur:
            rows = await cur.fetchall()
        return [_row_to_recorded(tuple(r)) for r in rows]


def dump_jsonl(conn: sqlite3.Connection) -> Iterator[str]:
    """The log as JSON lines, the format of the checked-in fixture logs."""
    for row in conn.execute(_SELECT_ALL):
        seq, stream, version, type_, schema, ts, data, key = row
        yield json.dumps(
            {
                "seq": seq,
                "stream": stream,
                "version": version,
                "type": type_,
                "schema": schema,
                "ts": ts,
                "idem_key": key,
                "data": json.loads(data),
            },
            sort_keys=True,
        )
