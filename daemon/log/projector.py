"""Keeps the live State equal to fold(log): loads the newest snapshot, replays the tail, follows appends.

Start-up cost is the snapshot plus the events after it, not the whole history; snapshots are written
every `snapshot_every` events from the state as it stood right after the event they name.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from daemon.core.events import Recorded
from daemon.core.fold import apply
from daemon.core.state import STATE_SCHEMA, State, state_from_json, state_to_json
from daemon.log.sqlite import iter_events, latest_snapshot, open_readonly
from daemon.log.store import EventStore

__all__ = ["Projector", "load_state", "load_state_at_path"]

log = logging.getLogger(__name__)


def load_state(conn: sqlite3.Connection, upto: int | None = None) -> tuple[State, int]:
    """State at seq `upto` (default: the end) from the newest usable snapshot at or before it, then
    the tail; also returns how many events were folded after that snapshot."""
    snap = latest_snapshot(conn, STATE_SCHEMA, upto)
    state = state_from_json(snap.state_json) if snap else State()
    tail = 0
    for rec in iter_events(conn, after=state.last_seq, upto=upto):
        state = apply(state, rec)
        tail += 1
    return state, tail


def _load_at_path(db: Path, upto: int | None) -> tuple[State, int]:
    conn = open_readonly(db)
    try:
        return load_state(conn, upto)
    finally:
        conn.close()


def load_state_at_path(db: Path, upto: int | None = None) -> State:
    return _load_at_path(db, upto)[0]


Subscriber = Callable[[State, list[Recorded]], None]


class Projector:
    def __init__(self, store: EventStore, state: State, snapshot_every: int, since_snapshot: int = 0) -> None:
        self.store = store
        self.state = state
        self.snapshot_every = snapshot_every
        self._since_snapshot = since_snapshot
        self._subscribers: list[Subscriber] = []
        self._snapshot_task: asyncio.Task[None] | None = None
        store.add_listener(self._on_append)

    @classmethod
    async def start(cls, store: EventStore, snapshot_every: int) -> Projector:
        state, tail = await asyncio.to_thread(_load_at_path, store.path, None)
        return cls(store, state, snapshot_every, tail)

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def _on_append(self, batch: list[Recorded]) -> None:
        for rec in batch:
            if rec.seq <= self.state.last_seq:
                continue
            if rec.seq != self.state.last_seq + 1:
                log.error("projection out of step: at seq %d, got %d", self.state.last_seq, rec.seq)
            self.state = apply(self.state, rec)
            self._since_snapshot += 1
        for fn in self._subscribers:
            fn(self.state, batch)
        if self._since_snapshot >= self.snapshot_every and self._snapshot_task is None:
            self._since_snapshot = 0
            self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshot())

    async def _snapshot(self) -> None:
        seq, blob = self.state.last_seq, state_to_json(self.state)
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
