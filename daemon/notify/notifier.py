"""Delivery driven from the event log: one task per target, each reading the log after its own cursor.

A target's cursor is the seq of its last recorded delivery (NotifyDelivered or NotifyGivenUp, or a
NotifyCursor that skips events it does not want), on the stream `notify:<target>`; a start resumes
right after it. The record is written after the target acknowledged, so a notification is repeated
only when the daemon dies between the receiver's 2xx and its record, once, with the same webhook-id.
Records are written in batches while the next deliveries go out (one fsync per batch, not per
delivery), so a crash may repeat each of the last few (at most UNRECORDED_MAX) once. One delivery at
a time per target keeps its order; the targets run independently, so a slow or dead one delays no
other and not the daemon.

Only the events a target is sent are recorded (plus one NotifyCursor per SKIP_RECORD_EVERY skipped
events), so the log grows with notifications, not with events; the records themselves never make a
notification, so they cannot loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.core.config import NotifyTarget
from daemon.core.events import NewEvent, NotifyCursor, NotifyDelivered, NotifyGivenUp, Recorded
from daemon.core.notify import (
    Notification,
    backoff_s,
    notification_of,
    notify_stream,
    payload_json,
    redact,
    unhealthy_notification,
    wants,
    webhook_id,
)
from daemon.core.state import State
from daemon.log.errors import StoreError
from daemon.log.store import EventStore
from daemon.notify.senders import DeliveryFailed, Sender, make_sender, where

__all__ = ["FAULT_ENV", "SKIP_RECORD_EVERY", "Notifications"]

log = logging.getLogger(__name__)

SKIP_RECORD_EVERY = 10_000
"""A target that wants none of this many events records its cursor once, so a start does not read
them all again."""
PAGE = 500
UNRECORDED_MAX = 256
"""Deliveries acknowledged but not yet recorded, at most, per target."""
RECORD_RETRY_S = 1.0
FAULT_ENV = "LLMTRAIND_TEST_NOTIFY_FAULT"
"""Test hook: the daemon SIGKILLs itself when a delivery reaches this step: `picked` (before the
send) or `delivered` (after the target's 2xx, before the record)."""


@dataclass
class TargetStatus:
    """What GET /v1/notify and /metrics show of one target; never its secret or full URL."""

    name: str
    kind: str
    where: str
    on: tuple[str, ...]
    projects: tuple[str, ...]
    cursor: int = 0
    delivered: int = 0
    failed: int = 0
    """Failed attempts (each retry counts)."""
    given_up: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    last_delivered_at: float | None = None
    in_hand_ts: float | None = None
    """The time of the event being delivered (its lag), None when caught up."""

    def view(self, last_seq: int, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "where": self.where,
            "on": list(self.on),
            "projects": list(self.projects),
            "cursor": self.cursor,
            "lag_events": max(0, last_seq - self.cursor),
            "lag_s": 0.0 if self.in_hand_ts is None else round(max(0.0, now - self.in_hand_ts), 3),
            "delivered": self.delivered,
            "failed": self.failed,
            "given_up": self.given_up,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_delivered_at": self.last_delivered_at,
        }


class _Worker:
    def __init__(self, owner: Notifications, target: NotifyTarget, cursor: int, recorded: int) -> None:
        self.owner = owner
        self.target = target
        self.sender: Sender = make_sender(target, owner.status_url)
        kind, place = where(target)
        self.status = TargetStatus(target.name, kind, place, target.on, target.projects, cursor=cursor)
        self.recorded = recorded
        """The seq of the newest record written or queued."""
        self.pending: list[tuple[int, NewEvent]] = []
        self.flusher: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.alerts: asyncio.Queue[Notification] = asyncio.Queue(maxsize=100)
        self.secrets = [target.url, target.secret.get_secret_value(), target.apprise.get_secret_value()]
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while True:
                self.wake.clear()
                while not self.alerts.empty():
                    await self._deliver(self.alerts.get_nowait(), None)
                page = await self._page()
                if not page:
                    self.status.in_hand_ts = None
                    if self.status.cursor - self.recorded >= SKIP_RECORD_EVERY:
                        await self._record(
                            NotifyCursor(target=self.target.name, seq=self.status.cursor), None
                        )
                    await self.wake.wait()
                    continue
                for rec in page:
                    n = notification_of(rec, self.owner.state())
                    if n is not None and wants(self.target, n):
                        self.status.in_hand_ts = rec.ts
                        await self._deliver(n, rec)
                    self.status.cursor = rec.seq
        finally:
            await self.sender.close()

    async def _page(self) -> list[Recorded]:
        """The next events after the cursor that the state has folded (a job's name and project
        come from it), so a commit seen before its fold waits for the wake that follows it."""
        folded = self.owner.state().last_seq
        if folded <= self.status.cursor:
            return []
        page = await self.owner.store.read(self.status.cursor, PAGE)
        return [r for r in page if r.seq <= folded]

    async def _deliver(self, n: Notification, rec: Recorded | None) -> None:
        """Try until acknowledged or out of attempts, then record the outcome (which moves the
        cursor). An alert (`rec` None: daemon.unhealthy, which the log may be unable to take) is not
        recorded."""
        target, status = self.target, self.status
        msg_id = webhook_id(self.owner.log_id, target.name, n.seq if rec else f"{n.type}@{n.ts}")
        body = payload_json(n, self.owner.status_url)
        self.owner.fault("picked")
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.sender.send(n, body, msg_id)
            except DeliveryFailed as e:
                reason = redact(e.reason, self.secrets)
                status.failed += 1
                status.last_error, status.last_error_at = reason, time.time()
                log.warning(
                    "notify %s: %s of seq %d, attempt %d of %d failed: %s",
                    target.name,
                    n.type,
                    n.seq,
                    attempt,
                    target.attempts,
                    reason,
                )
                if attempt >= target.attempts:
                    status.given_up += 1
                    log.error("notify %s: gave up on %s of seq %d: %s", target.name, n.type, n.seq, reason)
                    given_up = NotifyGivenUp(
                        target=target.name, seq=n.seq, webhook_id=msg_id, attempts=attempt, reason=reason
                    )
                    await self._record(given_up, rec)
                    return
                jitter = random.random()  # noqa: S311 (spreads retries; no secret depends on it)
                await asyncio.sleep(backoff_s(attempt, target.backoff_s, target.backoff_max_s, jitter))
                continue
            self.owner.fault("delivered")
            status.delivered += 1
            status.last_delivered_at = time.time()
            done = NotifyDelivered(target=target.name, seq=n.seq, webhook_id=msg_id, attempts=attempt)
            await self._record(done, rec)
            return

    async def _record(
        self, event: NotifyDelivered | NotifyGivenUp | NotifyCursor, rec: Recorded | None
    ) -> None:
        """Queue the outcome's record. Records are written in batches, one transaction (one fsync)
        each, while the next deliveries go out: a kill -9 loses at most the batch being written, and
        each notification in it is then sent once more, with its webhook-id. At most UNRECORDED_MAX
        wait before the deliveries wait for them."""
        if isinstance(event, NotifyCursor):
            new, key = event.seq, None
        elif rec is None:
            return
        else:
            new, key = rec.seq, f"notify:{self.target.name}:{rec.seq}"
        self.pending.append((new, NewEvent(event, key)))
        self.recorded = new
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush(), name=f"notify {self.target.name} records")
        if len(self.pending) >= UNRECORDED_MAX:
            await asyncio.shield(self.flusher)

    async def _flush(self) -> None:
        stream = notify_stream(self.target.name)
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                await self.owner.store.append(stream, [e for _, e in batch])
            except StoreError as e:
                log.warning("notify %s: cannot record deliveries yet: %s", self.target.name, e)
                await self._one_by_one(stream, batch)

    async def _one_by_one(self, stream: str, batch: list[tuple[int, NewEvent]]) -> None:
        """A batch the log refused, one record at a time, each until it is taken: a record already
        there (a restarted target redoing one) is then found by its key, not refused."""
        for _, event in batch:
            while True:
                try:
                    await self.owner.store.append(stream, [event])
                    break
                except StoreError as e:
                    log.warning("notify %s: cannot record a delivery yet: %s", self.target.name, e)
                    await asyncio.sleep(RECORD_RETRY_S)

    async def drain(self) -> None:
        """Write what is queued (a stop or a reload), so a restart does not send it again."""
        if self.flusher is not None:
            await asyncio.shield(self.flusher)
        if self.pending:
            await self._flush()


class Notifications:
    """The targets' tasks, started, reconfigured on reload and stopped by the composition root."""

    def __init__(self, store: EventStore, state: Callable[[], State], status_url: str = "") -> None:
        self.store = store
        self.state = state
        self.status_url = status_url
        self.log_id = store.log_id or ""
        self._workers: dict[str, _Worker] = {}
        self._fault_at = os.environ.get(FAULT_ENV, "")
        store.add_listener(self._on_append)

    def fault(self, step: str) -> None:
        if step == self._fault_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def _on_append(self, _: list[Recorded]) -> None:
        for w in self._workers.values():
            w.wake.set()

    async def _cursor(self, name: str, new_from: int | None) -> tuple[int, int]:
        """(cursor, last recorded seq): where the target's records say it is, or, for a target the
        log has never seen, `new_from` (default: the log's end), recorded now: a new target is not
        sent the history."""
        recorded = await self.store.read_stream(notify_stream(name))
        if recorded:
            last = recorded[-1].event
            assert isinstance(last, NotifyDelivered | NotifyGivenUp | NotifyCursor)
            return last.seq, last.seq
        seq = self.store.last_seq if new_from is None else new_from
        await self.store.append(notify_stream(name), [NewEvent(NotifyCursor(target=name, seq=seq))])
        return seq, seq

    async def start(self, targets: Sequence[NotifyTarget], new_from: int | None = None) -> None:
        """Read (or record) every target's cursor before returning; a target new to the log starts
        after `new_from` (the daemon passes the seq before its DaemonStarted, so a first start is
        notified too)."""
        for t in targets:
            await self._start(t, new_from)

    async def _start(self, target: NotifyTarget, new_from: int | None = None) -> None:
        cursor, recorded = await self._cursor(target.name, new_from)
        w = _Worker(self, target, cursor, recorded)
        w.task = asyncio.create_task(w.run(), name=f"notify {target.name}")
        w.task.add_done_callback(self._ended)
        self._workers[target.name] = w

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("notifier task %s ended", task.get_name(), exc_info=task.exception())

    async def reconfigure(self, targets: Sequence[NotifyTarget]) -> None:
        """A reload: removed targets stop, new ones start at the log's end, changed ones restart from
        their recorded cursor with the new settings."""
        wanted = {t.name: t for t in targets}
        for name, w in list(self._workers.items()):
            if wanted.get(name) != w.target:
                await self._stop(self._workers.pop(name))
        for name, t in wanted.items():
            if name not in self._workers:
                await self._start(t)

    async def _stop(self, w: _Worker) -> None:
        if w.task is not None:
            w.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w.task
        await w.drain()

    async def stop(self) -> None:
        for w in list(self._workers.values()):
            await self._stop(w)
        self._workers.clear()

    def alert(self, n: Notification) -> None:
        """A notification that is not an event of the log (daemon.unhealthy: the log itself may be
        what is failing), sent best-effort to each target that wants it, before its next event."""
        for w in self._workers.values():
            if wants(w.target, n):
                with contextlib.suppress(asyncio.QueueFull):
                    w.alerts.put_nowait(n)
                w.wake.set()

    async def watch_health(self, health: Callable[[], tuple[bool, str]], interval_s: float) -> None:
        """daemon.unhealthy once each time the daemon's health (log writable, intake and runs
        without trouble) turns bad."""
        was = True
        while True:
            await asyncio.sleep(interval_s)
            ok, why = health()
            if was and not ok:
                self.alert(unhealthy_notification(why, time.time()))
            was = ok

    def view(self) -> list[dict[str, Any]]:
        now, last = time.time(), self.store.last_seq
        return [w.status.view(last, now) for w in self._workers.values()]
