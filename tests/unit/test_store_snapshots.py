"""Snapshots that do not grow with history, start-up that checks only what its snapshot does not
vouch for, and the whole check after it (issue 16), on real SQLite files."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from daemon.cli.main import main
from daemon.core.events import DaemonStopped, NewEvent
from daemon.core.state import STATE_SCHEMA, state_to_json
from daemon.log.errors import LogDamaged, StoreUnavailable
from daemon.log.fsck import fsck
from daemon.log.projector import Projector, load_state_at_path
from daemon.log.store import EventStore


def stopped(n: int) -> DaemonStopped:
    return DaemonStopped(pid=n, reason=f"r{n}")


async def log_with_snapshot(db: Path, before: int = 6, after: int = 3) -> int:
    """`before` events in streams s0..s2, a snapshot of the fold there, then `after` more; returns
    the snapshot's seq."""
    store = await EventStore.open(db)
    for i in range(before):
        await store.append(f"s{i % 3}", [NewEvent(stopped(i))])
    await store.save_snapshot(before, STATE_SCHEMA, state_to_json(load_state_at_path(db)))
    for i in range(after):
        await store.append(f"s{i % 3}", [NewEvent(stopped(100 + i))])
    await store.close()
    return before


def tamper(db: Path, *statements: str) -> None:
    """Change the log behind the store's back, as a damaged disk or a hand edit would."""
    conn = sqlite3.connect(db, isolation_level=None)
    triggers = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'")]
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER events_no_delete")
    for sql in statements:
        conn.execute(sql)
    for sql in triggers:
        conn.execute(sql)
    conn.close()


async def test_with_a_snapshot_open_leaves_the_history_to_check_history(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await log_with_snapshot(db)
    store = await EventStore.open(db, snapshot_schema=STATE_SCHEMA)
    assert store.history_unchecked
    assert await store.check_history() == ""
    assert not store.history_unchecked and store.healthy
    await store.close()
    plain = await EventStore.open(db)
    assert not plain.history_unchecked
    await plain.close()


async def test_without_a_snapshot_of_this_schema_open_checks_everything(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db)
    await store.append("s", [NewEvent(stopped(1)), NewEvent(stopped(2))])
    await store.save_snapshot(2, STATE_SCHEMA - 1, "{}")
    await store.close()
    tamper(db, "UPDATE events SET version = 5 WHERE seq = 1")
    with pytest.raises(LogDamaged, match="stream versions are not 1..n"):
        await EventStore.open(db, snapshot_schema=STATE_SCHEMA)


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            "DELETE FROM events WHERE seq = 8",
            r"not gap-free after the snapshot at 6: 2 events span seq 7\.\.9",
        ),
        ("UPDATE events SET version = 9 WHERE seq = 8", "s1 continues after the snapshot at 6"),
        ("UPDATE events SET type = 'FromTheFuture' WHERE seq = 9", "unknown event types"),
        ("DELETE FROM events WHERE seq > 4", r"the snapshot at seq 6 is past the log's end \(seq 4\)"),
        ("DELETE FROM events WHERE seq = 6", "event 6, where the snapshot was taken, is missing"),
    ],
)
async def test_damage_in_the_tail_refuses_the_start(tmp_path: Path, statement: str, message: str) -> None:
    db = tmp_path / "log.db"
    await log_with_snapshot(db)
    tamper(db, statement)
    with pytest.raises(LogDamaged, match=message):
        await EventStore.open(db, snapshot_schema=STATE_SCHEMA)


async def test_damage_before_the_snapshot_is_found_after_the_start_and_stops_writes(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await log_with_snapshot(db)
    tamper(db, "UPDATE events SET version = 7 WHERE seq = 2")
    store = await EventStore.open(db, snapshot_schema=STATE_SCHEMA)
    await store.append("s9", [NewEvent(stopped(9))])
    damage = await store.check_history()
    assert "stream versions are not 1..n: s1 has" in damage
    assert not store.healthy and "the event log is damaged" in store.last_error
    with pytest.raises(StoreUnavailable, match="nothing more is recorded"):
        await store.append("s9", [NewEvent(stopped(10))])
    assert not await store.probe_writable()
    assert (await store.read())[-1].seq == 10
    await store.close()
    assert (tmp_path / "log-damaged").read_text().startswith("stream versions are not 1..n")
    with pytest.raises(LogDamaged, match="stream versions are not 1..n"):
        await EventStore.open(db, snapshot_schema=STATE_SCHEMA)


async def test_a_whole_check_that_passes_at_start_clears_an_earlier_finding(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await log_with_snapshot(db)
    (tmp_path / "log-damaged").write_text("restored from a backup since\n")
    store = await EventStore.open(db, snapshot_schema=STATE_SCHEMA)
    assert not store.history_unchecked
    assert not (tmp_path / "log-damaged").exists()
    await store.close()


async def test_snapshots_are_compressed_and_text_ones_still_read(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await log_with_snapshot(db)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT typeof(state) FROM snapshots").fetchall() == [("blob",)]
    conn.close()
    folded = state_to_json(load_state_at_path(db))
    text = state_to_json(load_state_at_path(db, 6))
    conn = sqlite3.connect(db)
    conn.execute("UPDATE snapshots SET state = ? WHERE seq = 6", (text,))
    conn.commit()
    conn.close()
    assert state_to_json(load_state_at_path(db)) == folded


async def test_a_new_log_gives_pruned_snapshots_pages_back(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db)
    await store.append("s", [NewEvent(stopped(1))])
    big = '{"pad": "' + "".join(f"{i:08x}" for i in range(100_000)) + '"}'
    for seq in range(1, 5):
        await store.save_snapshot(seq, 1, big)
    await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert [r[0] for r in conn.execute("SELECT seq FROM snapshots ORDER BY seq")] == [3, 4]
    conn.close()


async def test_a_snapshot_is_due_once_the_tail_outweighs_the_bound_and_the_last_snapshot(
    tmp_path: Path,
) -> None:
    db = tmp_path / "log.db"
    store = await EventStore.open(db)
    projector = await Projector.start(store, 2000)
    size = len(stopped(1).model_dump_json())

    async def snapshots_after(events: int) -> list[int]:
        for _ in range(events):
            await store.append("s", [NewEvent(stopped(1))])
            await projector.flush()
        conn = sqlite3.connect(db)
        try:
            return [r[0] for r in conn.execute("SELECT seq FROM snapshots ORDER BY seq")]
        finally:
            conn.close()

    first = -(-2000 // size)
    assert await snapshots_after(first - 1) == []
    assert await snapshots_after(1) == [first]
    snapshot = len(state_to_json(load_state_at_path(db, first)))
    assert snapshot < 2000
    assert await snapshots_after(first - 1) == [first]
    assert await snapshots_after(1) == [first, 2 * first]
    await store.close()


async def test_start_up_counts_the_tail_it_replayed_toward_the_next_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await log_with_snapshot(db, before=6, after=3)
    size = len(stopped(100).model_dump_json())
    due = max(4 * size, len(state_to_json(load_state_at_path(db, 6))))
    tail = -(-due // size)
    store = await EventStore.open(db, snapshot_schema=STATE_SCHEMA)
    projector = await Projector.start(store, 4 * size)
    for _ in range(tail - 3):
        await store.append("s", [NewEvent(stopped(100))])
        await projector.flush()
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT seq FROM snapshots ORDER BY seq")] == [6, 6 + tail]
    conn.close()
    await store.close()


async def test_fsck_finds_a_clean_log_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "llmtraind.sqlite3"
    await log_with_snapshot(db)
    report = fsck(db)
    assert report.problems == [] and report.events == 9
    assert "the snapshot at seq 6 equals the fold of events 1..6" in report.checked
    assert main(["fsck", str(tmp_path)]) == 0
    assert f"{db}: 9 events, no problems" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        (
            'UPDATE snapshots SET state = \'{"last_seq": 6, "daemon_starts": 3}\'',
            "the snapshot at seq 6 differs from the fold",
        ),
        ("UPDATE snapshots SET state = 'not json'", "the snapshot at seq 6 cannot be read"),
        ("DELETE FROM events WHERE seq = 2", r"not gap-free: 8 events span seq 1\.\.9"),
        (
            'UPDATE events SET data = \'{"pid": "x"}\' WHERE seq = 8',
            r"event 8 \(DaemonStopped\) does not match",
        ),
        ("UPDATE snapshots SET seq = 12", r"snapshot\(s\) at seq \[12\] are past the log's end"),
    ],
)
async def test_fsck_names_the_problem_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], statement: str, problem: str
) -> None:
    db = tmp_path / "llmtraind.sqlite3"
    await log_with_snapshot(db)
    tamper(db, statement)
    (found,) = fsck(db).problems
    assert re.search(problem, found), found
    assert main(["fsck", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s); nothing was repaired" in err


async def test_fsck_notices_a_missing_trigger_and_another_folders_log(tmp_path: Path) -> None:
    db = tmp_path / "llmtraind.sqlite3"
    await log_with_snapshot(db)
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_no_delete")
    conn.commit()
    conn.close()
    (tmp_path / "log-id").write_text("someone-else\n")
    problems = fsck(db).problems
    assert "the append-only trigger(s) events_no_delete are missing" in problems
    assert any("is not the state folder's log-id (someone-else)" in p for p in problems)
