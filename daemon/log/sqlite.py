"""The event log's SQLite file: its tables, the statements on them, and the reads that need no daemon.

The daemon's writer (daemon.log.store) and the readers that run without it (the projector's replay,
the CLI's and the API's state at a past seq, the tests' checks of a log after a crash) open the same
file; keeping its schema, its integrity check and its row decoding here gives them one definition of
what a sound log is. Everything here is plain sqlite3 and blocks; the daemon calls it from a thread.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from daemon.core.events import EVENT_TYPES, Recorded, decode_event
from daemon.log.errors import LogDamaged

__all__ = [
    "DB_SCHEMA",
    "SELECT_AFTER",
    "SELECT_KEYS",
    "SELECT_STREAM",
    "Snapshot",
    "check_log",
    "check_tail",
    "connect",
    "dump_jsonl",
    "encode_snapshot",
    "iter_events",
    "latest_snapshot",
    "latest_snapshot_seq",
    "missing_triggers",
    "open_readonly",
    "prepare",
    "read_log_id",
    "row_to_recorded",
    "write_log_id",
]

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
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
SELECT_AFTER = (
    "SELECT seq, stream, version, type, schema, ts, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
)
SELECT_STREAM = (
    "SELECT seq, stream, version, type, schema, ts, data FROM events "
    "WHERE stream = ? AND seq > ? ORDER BY version LIMIT ?"
)
SELECT_KEYS = (
    "SELECT seq, stream, version, type, schema, ts, data FROM events "
    "WHERE idem_key IN (SELECT value FROM json_each(?)) ORDER BY seq"
)
_SELECT_ALL = "SELECT seq, stream, version, type, schema, ts, data, idem_key FROM events ORDER BY seq"
TRIGGERS = ("events_no_update", "events_no_delete")
WAL_LIMIT_BYTES = 8 * 1024 * 1024
"""The -wal file is cut back to this after a checkpoint: a large snapshot would otherwise leave it
at its own size for good."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    schema: int
    state_json: str | bytes


def encode_snapshot(state_json: str) -> bytes:
    """Snapshots are stored zlib-compressed (level 1) as a BLOB: a state of 10,000 queued jobs is 18 MB
    of JSON and 0.47 MB compressed, for 36 ms of compression against 160 ms of encoding. A TEXT
    snapshot (written before compression) is read as it is."""
    return zlib.compress(state_json.encode(), 1)


def _decode_snapshot(stored: str | bytes) -> str | bytes:
    return zlib.decompress(stored) if isinstance(stored, bytes) else stored


def connect(path: Path, busy_timeout_ms: int, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=0)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def row_to_recorded(row: tuple[int, str, int, str, int, float, str]) -> Recorded:
    """A row whose data is not its event type's (or whose type is unknown) is damage, reported in one
    line naming the row, not as the validator's many."""
    seq, stream, version, type_, schema, ts, data = row
    try:
        event = decode_event(type_, schema, data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "data"
        raise LogDamaged(
            f"event {seq} ({type_}) does not match its schema: {where}: {first['msg']}"
            f" ({e.error_count()} error(s))"
        ) from None
    except ValueError as e:
        raise LogDamaged(f"event {seq} cannot be read: {e}") from None
    return Recorded(seq, stream, version, ts, event)


def prepare(conn: sqlite3.Connection) -> None:
    """Switch to WAL and create the tables; refuse a file written by a newer schema.

    A new log reclaims the pages of pruned snapshots (auto_vacuum = INCREMENTAL, which SQLite only
    accepts before the first table and the switch to WAL). A log created before that keeps
    auto_vacuum = NONE: its freed pages are reused by the next snapshot, so it stays at its peak
    size; switching it takes a VACUUM of the whole file, which start-up does not do (README)."""
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise LogDamaged(f"cannot switch to WAL journal (got {mode!r})")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > DB_SCHEMA:
        raise LogDamaged(f"database schema {version} is newer than this llmtraind ({DB_SCHEMA})")
    conn.executescript(_DDL)
    conn.execute(f"PRAGMA user_version = {DB_SCHEMA}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")


def read_log_id(conn: sqlite3.Connection) -> str | None:
    """The id this log was given when it was created (None for a log from before ids, or a new one)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
    return str(row[0]) if row else None


def write_log_id(conn: sqlite3.Connection, log_id: str) -> None:
    """Give the log its id (the state folder's run folders and its log-id file name it): once per
    history, so a new one where an old one was emptied gets a new id too."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('log_id', ?)", (log_id,))


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
    _refuse_unknown_types(conn.execute("SELECT DISTINCT type FROM events").fetchall())


def _refuse_unknown_types(types: list[tuple[str]]) -> None:
    unknown = [t for (t,) in types if t not in EVENT_TYPES]
    if unknown:
        raise LogDamaged(f"unknown event types {unknown}: the log was written by a newer llmtraind")


def check_tail(conn: sqlite3.Connection, after: int) -> None:
    """What a snapshot at seq `after` does not vouch for: the events after it continue it gap-free,
    each of their streams continues its versions from before the snapshot without a hole, and their
    types are known. Index lookups only, proportional to the tail, so start-up with a snapshot does
    not read the history; `check_log` (in the background, or `llmtraind fsck`) reads it all."""
    try:
        lo, hi = conn.execute("SELECT min(seq), max(seq) FROM events").fetchone()
        if hi is None or hi < after:
            raise LogDamaged(f"the snapshot at seq {after} is past the log's end (seq {hi or 0})")
        if lo != 1:
            raise LogDamaged(f"event seq is not gap-free: the log starts at seq {lo}")
        if after and conn.execute("SELECT 1 FROM events WHERE seq = ?", (after,)).fetchone() is None:
            raise LogDamaged(f"event {after}, where the snapshot was taken, is missing")
        count = conn.execute("SELECT count(*) FROM events WHERE seq > ?", (after,)).fetchone()[0]
        if count != hi - after:
            raise LogDamaged(
                f"event seq is not gap-free after the snapshot at {after}: {count} events span "
                f"seq {after + 1}..{hi}"
            )
        streams = conn.execute(
            "SELECT stream, count(*), min(version), max(version) FROM events WHERE seq > ? GROUP BY stream",
            (after,),
        ).fetchall()
        for stream, n, first, last in streams:
            before = conn.execute(
                "SELECT seq FROM events WHERE stream = ? AND version = ?", (stream, first - 1)
            ).fetchone()
            if last - first + 1 != n or (first > 1 and (before is None or before[0] > after)):
                raise LogDamaged(
                    f"stream versions are not 1..n: {stream} continues after the snapshot at {after} "
                    f"with {n} events with versions {first}..{last}"
                )
        types = conn.execute("SELECT DISTINCT type FROM events WHERE seq > ?", (after,)).fetchall()
    except sqlite3.DatabaseError as e:
        raise LogDamaged(f"cannot read the event log: {e}") from None
    _refuse_unknown_types(types)


def missing_triggers(conn: sqlite3.Connection) -> list[str]:
    """The triggers that keep the events append-only, where someone dropped them."""
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return [t for t in TRIGGERS if t not in present]


def open_readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise LogDamaged(f"{path}: no event log here")
    try:
        return connect(path, 5000, readonly=True)
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
        rows = conn.execute(SELECT_AFTER, (last, limit)).fetchall()
        for row in rows:
            yield row_to_recorded(row)
        if len(rows) < limit:
            return
        last = rows[-1][0]


def latest_snapshot(conn: sqlite3.Connection, schema: int, at_most: int | None = None) -> Snapshot | None:
    row = conn.execute(
        "SELECT seq, schema, state FROM snapshots WHERE schema = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
        (schema, at_most if at_most is not None else 2**62),
    ).fetchone()
    return Snapshot(row[0], row[1], _decode_snapshot(row[2])) if row else None


def latest_snapshot_seq(conn: sqlite3.Connection, schema: int) -> int | None:
    row = conn.execute("SELECT max(seq) FROM snapshots WHERE schema = ?", (schema,)).fetchone()
    return int(row[0]) if row[0] is not None else None


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
