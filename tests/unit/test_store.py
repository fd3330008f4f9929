"""The event log's promises, on real SQLite files."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.app import StateLock
from daemon.core.events import DaemonStarted, DaemonStopped, NewEvent, Recorded
from daemon.core.streams import Append
from daemon.log.errors import ConcurrencyConflict, LogDamaged, StoreUnavailable
from daemon.log.sqlite import check_log, open_readonly
from daemon.log.store import EventStore


def stopped(n: int) -> DaemonStopped:
    return DaemonStopped(pid=n, reason=f"r{n}")


def count_rows(db: Path, where: str = "1=1", args: tuple[object, ...] = ()) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM events WHERE {where}", args).fetchone()[0])
    finally:
        conn.close()


async def test_append_assigns_gap_free_seq_and_stream_versions(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "log.db")
    a = await store.append("s1", [NewEvent(stopped(1)), NewEvent(stopped(2))])
    b = await store.append("s2", [NewEvent(stopped(3))])
    c = await store.append("s1", [NewEvent(stopped(4))], expected_version=2)
    assert [r.seq for r in a + b + c] == [1, 2, 3, 4]
    assert [(r.stream, r.version) for r in a + b + c] == [("s1", 1), ("s1", 2), ("s2", 1), ("s1", 3)]
    page = await store.read(after=1, limit=2)
    assert [r.seq for r in page] == [2, 3]
    assert page[0].event == stopped(2)
    assert [r.version for r in await store.read_stream("s1")] == [1, 2, 3]
    assert store.last_seq == 4
    await store.close()


async def test_idempotency_key_returns_the_original_and_writes_nothing(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "log.db")
    first = await store.append("s", [NewEvent(stopped(1), "k1"), NewEvent(stopped(2), "k2")])
    again = await store.append("s", [NewEvent(stopped(1), "k1"), NewEvent(stopped(2), "k2")])
    assert again == first
    assert count_rows(tmp_path / "log.db") == 2
    await store.close()


async def test_a_batch_is_one_transaction_with_idempotency_per_part(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "log.db")
    seen: list[list[Recorded]] = []
    store.add_listener(seen.append)
    first = await store.append_batch(
        [Append("a", [NewEvent(stopped(1), "k1")]), Append("b", [NewEvent(stopped(2))])]
    )
    assert [[r.seq for r in part] for part in first] == [[1], [2]]
    # A redo of part one alongside a new part: the original comes back, only the new part is written.
    redo = await store.append_batch(
        [Append("a", [NewEvent(stopped(9), "k1")]), Append("c", [NewEvent(stopped(3))], 0)]
    )
    assert redo[0] == first[0] and [r.seq for r in redo[1]] == [3]
    assert [[r.seq for r in batch] for batch in seen] == [[1, 2], [3]]
    # A conflict in any part writes none of the batch.
    with pytest.raises(ConcurrencyConflict):
        await store.append_batch(
            [Append("d", [NewEvent(stopped(4))]), Append("c", [NewEvent(stopped(5))], 0)]
        )
    assert count_rows(tmp_path / "log.db") == 3 and store.last_seq == 3
    await store.close()


async def test_same_key_from_many_tasks_at_once_is_one_row(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "log.db")
    results = await asyncio.gather(*(store.append("s", [NewEvent(stopped(1), "once")]) for _ in range(1000)))
    assert {r[0].seq for r in results} == {1}
    assert count_rows(tmp_path / "log.db") == 1
    await store.close()


async def test_expected_version_race_has_one_winner(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "log.db")
    await store.append("job:1", [NewEvent(stopped(0))])
    outcomes = await asyncio.gather(
        store.append("job:1", [NewEvent(stopped(1))], expected_version=1),
        store.append("job:1", [NewEvent(stopped(2))], expected_version=1),
        return_exceptions=True,
    )
    conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
    assert len(conflicts) == 1 and conflicts[0].actual == 2
    assert count_rows(tmp_path / "log.db") == 2
    await store.close()


async def test_update_and_delete_are_refused(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "log.db")
    await store.append("s", [NewEvent(stopped(1))])
    await store.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE refused"):
        conn.execute("UPDATE events SET type = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE refused"):
        conn.execute("DELETE FROM events")
    conn.close()
    assert count_rows(tmp_path / "log.db") == 1


async def test_cancelled_appends_land_zero_or_one_times_and_retries_converge(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db)
    rng = random.Random(7)
    seen: list[int] = []
    store.add_listener(lambda batch: seen.extend(r.seq for r in batch))
    for i in range(1000):
        task = asyncio.create_task(store.append(f"s{i % 7}", [NewEvent(stopped(i), f"key-{i}")]))
        await asyncio.sleep(rng.random() * 0.0003)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    await store.append("drain", [NewEvent(stopped(-1))])
    assert count_rows(db, "idem_key LIKE 'key-%'") <= 1000
    for i in range(1000):
        await store.append(f"s{i % 7}", [NewEvent(stopped(i), f"key-{i}")])
    for i in range(1000):
        assert count_rows(db, "idem_key = ?", (f"key-{i}",)) == 1
    assert seen == list(range(1, store.last_seq + 1)), "every commit reached the listeners, in order"
    await store.close()
    conn = open_readonly(db)
    check_log(conn)
    conn.close()


HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""
"""Holds the write lock until its stdin is closed, so the test, not a timer, says when it is let go."""


def hold_write_lock(db: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


async def test_lock_held_elsewhere_fails_cleanly_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db, busy_timeout_ms=200)
    await store.append("s", [NewEvent(stopped(1))])
    holder = hold_write_lock(db)
    with pytest.raises(StoreUnavailable, match="write lock"):
        await store.append("s", [NewEvent(stopped(2), "k2")])
    assert not store.healthy and "locked" in store.last_error
    assert not await store.probe_writable()
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=10)
    assert holder.stdout is not None
    holder.stdout.close()
    assert count_rows(db) == 1, "nothing partial was written"
    assert await store.probe_writable() and store.healthy
    await store.append("s", [NewEvent(stopped(2), "k2")])
    assert count_rows(db) == 2
    await store.close()


async def test_damaged_logs_are_refused_with_the_reason(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db)
    await store.append("s", [NewEvent(stopped(i)) for i in range(3)])
    await store.close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("DELETE FROM events WHERE seq = 2")
    conn.commit()
    conn.close()
    with pytest.raises(LogDamaged, match=r"not gap-free: 2 events span seq 1\.\.3"):
        await EventStore.open(db)


async def test_garbage_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogDamaged, match="not a database"):
        await EventStore.open(db)


async def test_corrupted_page_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db)
    for i in range(200):
        await store.append(f"s{i}", [NewEvent(stopped(i))])
    await store.close()
    conn = sqlite3.connect(db)
    (leaf,) = conn.execute(
        "SELECT min(pageno) FROM dbstat WHERE name = 'events' AND pagetype = 'leaf'"
    ).fetchone()
    conn.close()
    raw = bytearray(db.read_bytes())
    page = 4096
    # A page of events, wherever the layout puts it (a new log's auto_vacuum adds pointer-map pages).
    for off in range((leaf - 1) * page + 100, (leaf - 1) * page + 1100):
        raw[off] ^= 0x5A
    db.write_bytes(bytes(raw))
    with pytest.raises(LogDamaged):
        await EventStore.open(db)


async def test_newer_event_types_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db)
    await store.close()
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO events (stream, version, type, schema, ts, data) VALUES ('s', 1, 'FromTheFuture', 1, ?, '{}')",
        (time.time(),),
    )
    conn.commit()
    conn.close()
    with pytest.raises(LogDamaged, match="FromTheFuture"):
        await EventStore.open(db)


async def test_snapshots_keep_the_newest_few(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "log.db")
    for seq in range(1, 6):
        await store.save_snapshot(seq, 1, "{}")
    await store.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    assert [r[0] for r in conn.execute("SELECT seq FROM snapshots ORDER BY seq")] == [4, 5]
    conn.close()


async def test_daemon_started_round_trips(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "log.db")
    ev = DaemonStarted(version="1", config_digest="d", host="h", pid=1, boot_id="b")
    await store.append("daemon", [NewEvent(ev)])
    assert (await store.read())[0].event == ev
    await store.close()


async def test_a_fresh_state_folder_is_owner_only(tmp_path: Path) -> None:
    """The log holds every job's keys and commands: no other account may read it, whatever the umask."""

    state = tmp_path / "new" / "state"
    old = os.umask(0o022)
    try:
        with StateLock(state / "llmtraind.lock"):
            store = await EventStore.open(state / "llmtraind.sqlite3")
            await store.append("s1", [NewEvent(stopped(1))])
            made = [state.parent, state, *state.iterdir()]
            assert {p.name for p in made} >= {
                "llmtraind.lock",
                "llmtraind.sqlite3",
                "llmtraind.sqlite3-wal",
                "llmtraind.sqlite3-shm",
            }
            modes = {p.name: oct(p.stat().st_mode & 0o777) for p in made}
            await store.close()
    finally:
        os.umask(old)
    assert all(int(mode, 8) & 0o077 == 0 for mode in modes.values()), modes


async def test_an_existing_world_readable_log_is_made_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db)
    await store.close()
    db.chmod(0o644)
    store = await EventStore.open(db)
    await store.append("s1", [NewEvent(stopped(1))])
    for path in (db, db.with_name("log.db-wal"), db.with_name("log.db-shm")):
        assert path.stat().st_mode & 0o077 == 0, path
    await store.close()
