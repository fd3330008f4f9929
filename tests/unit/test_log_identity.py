"""The event log's identity against its state folder's, and a store whose file goes away under it."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from daemon.core.events import DaemonStopped, NewEvent
from daemon.core.layout import StateLayout
from daemon.log.errors import LogMismatch, StoreUnavailable
from daemon.log.identity import read_state_id
from daemon.log.sqlite import read_log_id
from daemon.log.store import EventStore


def stopped(n: int) -> DaemonStopped:
    return DaemonStopped(pid=n, reason=f"r{n}")


def log_id_in(db: Path) -> str | None:
    conn = sqlite3.connect(db)
    try:
        return read_log_id(conn)
    finally:
        conn.close()


async def started(state: Path, *, new_log: bool = False) -> EventStore:
    """A store as the daemon leaves it after a start: one event recorded."""
    store = await EventStore.open(state / "llmtraind.sqlite3", new_log=new_log)
    await store.append("daemon", [NewEvent(stopped(1))])
    return store


def old_run(state: Path) -> None:
    (state / "runs" / "1" / "1" / "output" / "checkpoint-60").mkdir(parents=True)


async def test_a_new_log_gets_an_id_kept_in_the_log_and_an_owner_only_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = await started(state)
    await store.close()
    log_id = read_state_id(StateLayout(state))
    assert log_id and log_id == store.log_id == log_id_in(state / "llmtraind.sqlite3")
    assert stat.S_IMODE((state / "log-id").stat().st_mode) == 0o600
    old_run(state)
    again = await EventStore.open(state / "llmtraind.sqlite3")
    assert again.log_id == log_id
    await again.close()


@pytest.mark.parametrize("how", ["deleted", "truncated", "emptied"])
async def test_a_lost_log_beside_runs_is_refused_until_new_log(tmp_path: Path, how: str) -> None:
    state = tmp_path / "state"
    db = state / "llmtraind.sqlite3"
    await (await started(state)).close()
    first = read_state_id(StateLayout(state))
    old_run(state)
    if how == "deleted":
        db.unlink()
    elif how == "truncated":
        db.write_bytes(b"")
    else:
        conn = sqlite3.connect(db)
        conn.execute("DROP TABLE events")
        conn.close()
    with pytest.raises(LogMismatch) as refused:
        await EventStore.open(db)
    message = str(refused.value)
    assert "runs/" in message and "--new-log" in message and "stay where they are" in message
    assert {"deleted": "no event log", "truncated": "empty (0 bytes)", "emptied": "holds no events"}[
        how
    ] in message
    assert read_state_id(StateLayout(state)) == first
    store = await started(state, new_log=True)
    await store.close()
    assert store.log_id != first and read_state_id(StateLayout(state)) == store.log_id
    assert (state / "runs" / "1" / "1" / "output" / "checkpoint-60").is_dir()


async def test_a_replaced_log_beside_blobs_is_refused(tmp_path: Path) -> None:
    state, other = tmp_path / "state", tmp_path / "other"
    await (await started(state)).close()
    await (await started(other)).close()
    (state / "blobs" / "sha256").mkdir(parents=True)
    (state / "blobs" / "sha256" / "ab").write_bytes(b"x")
    shutil.copy(other / "llmtraind.sqlite3", state / "llmtraind.sqlite3")
    with pytest.raises(LogMismatch, match="but this state folder belongs to log .* blobs/sha256/"):
        await EventStore.open(state / "llmtraind.sqlite3")


async def test_a_log_from_before_ids_is_given_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    await (await started(state)).close()
    conn = sqlite3.connect(state / "llmtraind.sqlite3")
    conn.execute("DROP TABLE meta")
    conn.close()
    (state / "log-id").unlink()
    old_run(state)
    store = await EventStore.open(state / "llmtraind.sqlite3")
    await store.close()
    assert store.log_id and log_id_in(state / "llmtraind.sqlite3") == store.log_id
    assert read_state_id(StateLayout(state)) == store.log_id


async def test_a_lost_log_with_no_runs_or_blobs_starts_afresh(tmp_path: Path) -> None:
    state = tmp_path / "state"
    await (await started(state)).close()
    first = read_state_id(StateLayout(state))
    (state / "llmtraind.sqlite3").unlink()
    store = await EventStore.open(state / "llmtraind.sqlite3")
    await store.close()
    assert store.log_id != first and read_state_id(StateLayout(state)) == store.log_id


@pytest.mark.parametrize("how", ["log deleted", "log replaced", "state deleted"])
async def test_a_store_whose_file_goes_away_refuses_appends(tmp_path: Path, how: str) -> None:
    state = tmp_path / "state"
    db = state / "llmtraind.sqlite3"
    store = await started(state)
    if how == "log deleted":
        db.unlink()
    elif how == "log replaced":
        shutil.copy(db, tmp_path / "copy")
        (tmp_path / "copy").replace(db)
    else:
        shutil.rmtree(state)
    assert not await store.probe_writable()
    what = "state folder" if how == "state deleted" else "event log"
    verb = "replaced" if how == "log replaced" else "deleted"
    assert not store.healthy and f"the {what} " in store.last_error and verb in store.last_error
    with pytest.raises(StoreUnavailable, match=verb):
        await store.append("daemon", [NewEvent(stopped(2))])
    assert store.last_seq == 1
    await store.close()
