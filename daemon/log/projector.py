"""Keeps the live State equal to fold(log): loads the newest snapshot, replays the tail, follows appends.

Start-up cost is the snapshot plus the events after it, not the whole history. A snapshot is written
once the events since the last one hold more data than both `[store] snapshot_bytes` and the last
snapshot's own JSON: the tail a start-up replays stays bounded by about one state's worth of events,
and the cost of writing snapshots stays proportional to the events appended (never a full state per
fixed number of events, which made a long queue's snapshots quadratic).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from daemon.core.events import Recorded
from daemon.core.fold import apply
from daemon.core.state import STATE_SCHEMA, State, state_from_json, state_to_json
from daemon.log.errors import LogDamaged
from daemon.log.sqlite import iter_events, latest_snapshot, open_readonly
from daemon.log.store import EventStore

__all__ = ["Loaded", "Projector", "load_state", "load_state_at_path"]

log = logging.getLogger(__name__)


class Loaded(NamedTuple):
    state: State
    snapshot_bytes: int
    """The JSON size of the snapshot it started from (0 without one)."""
    tail_bytes: int
    """The event data folded after that snapshot."""


def load_state(conn: sqlite3.Connection, upto: int | None = None) -> Loaded:
    """State at seq `upto` (default: the end) from the newest usable snapshot at or before it, then
    the tail."""
    snap = latest_snapshot(conn, STATE_SCHEMA, upto)
    state = state_from_json(snap.state_json) if snap else State()
    start = state.last_seq
    for rec in iter_events(conn, after=start, upto=upto):
        state = apply(state, rec)
    tail = conn.execute(
        "SELECT coalesce(sum(length(data)), 0) FROM events WHERE seq > ? AND seq <= ?",
        (start, state.last_seq),
    ).fetchone()[0]
    return Loaded(state, len(snap.state_json) if snap else 0, int(tail))


def _load_at_path(db: Path, upto: int | None) -> Loaded:
    conn = open_readonly(db)
    try:
        return load_state(conn, upto)
    except sqlite3.DatabaseError as e:
        raise LogDamaged(f"{db}: cannot read the event log: {e}") from None
    finally:
        conn.close()


def load_state_at_path(db: Path, upto: int | None = None) -> State:
    return _load_at_path(db, upto).state


Subscriber = Callable[[State, list[Recorded]], None]


class Projector:
    def __init__(
        self, store: EventStore, state: State, snapshot_bytes: int, loaded: Loaded | None = None
    ) -> None:
        self.store = store
        self.state = state
        self.snapshot_bytes = snapshot_bytes
        self._last_snapshot_bytes = loaded.snapshot_bytes if loaded else 0
        self._appended_at_snapshot = store.appended_bytes - (loaded.tail_bytes if loaded else 0)
        self._subscribers: list[Subscriber] = []
        self._snapshot_task: asyncio.Task[None] | None = None
        store.add_listener(self._on_append)

    @classmethod
    async def start(cls, store: EventStore, snapshot_bytes: int) -> Projector:
        loaded = await asyncio.to_thread(_load_at_path, store.path, None)
        return cls(store, loaded.state, snapshot_bytes, loaded)

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def _on_append(self, batch: list[Recorded]) -> None:
        for rec in batch:
            if rec.seq <= self.state.last_seq:
                continue
            if rec.seq != self.state.last_seq + 1:
                log.error("projection out of step: at seq %d, got %d", self.state.last_seq, rec.seq)
            self.state = apply(self.state, rec)
        for fn in self._subscribers:
            fn(self.state, batch)
        tail = self.store.appended_bytes - self._appended_at_snapshot
        if tail >= max(self.snapshot_bytes, self._last_snapshot_bytes) and self._snapshot_task is None:
            self._appended_at_snapshot = self.store.appended_bytes
            self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshot())

    async def _snapshot(self) -> None:
        seq, blob = self.state.last_seq, state_to_json(self.state)
        self._last_snapshot_bytes = len(blob)
        try:
            await self.store.save_snapshot(seq, STATE_SCHEMA, blob)
        except Exception:
            log.exception("snapshot at seq %d failed; start-up will replay more", seq)
        finally:
            self._snapshot_task = None

    async def flush(self) -> None:
        """Wait for a snapshot in flight, so shutdown does not abandon it half-way."""
        if self._snapshot_task is not None:
            await self._snapshot_task
