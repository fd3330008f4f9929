"""Server-sent events: the event log's feed (`id:` = seq) and each job's log feed (`id:` = byte offset),
resumable with Last-Event-ID, fanned out to many clients without one slow client costing the daemon
or the others (reliability.md §5).

Shape. Each feed keeps its recent frames, encoded once, in a bounded `Ring` shared by its clients;
each client is its own request task holding only a cursor (the last id it was sent). A client wakes
when its feed grows, takes the frames after its cursor (at most SEND_BUDGET bytes) and writes them in
one go. A client behind the ring's oldest frame, a new one resuming from an old id, or one whose
cursor fell off the ring while it was slow, reads the gap from the source instead (the store, or the
log file): the log is the buffer, so the ring is the only "queue" and its size does not grow with
the number of clients. A write that has not gone out within `[api] sse_send_timeout_s` (the client
stopped reading, the kernel's buffers are full) gets the connection aborted: that client is dropped,
and reconnects with Last-Event-ID if it is alive. Memory per client: its cursor, one write of at most
SEND_BUDGET bytes, and a kernel send buffer capped at SNDBUF.

Job logs are read only while somebody follows them: the first follower of a job starts a tail of its
log file (a stat every 20-50 ms, then a read of what was appended), and the last one to leave
stops it. Every `[api] sse_keepalive_s` each stream gets a comment line; `retry:` is sent once at the
start. On shutdown every stream is ended, so the daemon still exits within `[daemon] stop_timeout_s`.

This module is the hub (the feeds, the clients, keep-alives, stalls, shutdown) and its two stream
handlers; `ring` holds the shared frames, `frames` the wire format and resume points, `pages` the
event log's replay pages, `logtail` a followed job log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiohttp import web

from daemon.core.config import ApiConfig
from daemon.core.events import Recorded
from daemon.core.state import TERMINAL, Job, State
from daemon.core.streams import job_id_of
from daemon.http.frames import PING, RETRY_MS, SSE_HEADERS, event_frame, resume_point
from daemon.http.logfeed import line_floor, read_frames
from daemon.http.logtail import LOG_RING, JobFeed, job_log_path, tail
from daemon.http.pages import STORE_PAGE, EventPages
from daemon.http.ring import Feed, Ring
from daemon.log.errors import StoreError
from daemon.log.store import EventStore

__all__ = ["SseHub", "SseSettings", "StreamRefused"]

log = logging.getLogger(__name__)

SEND_BUDGET = 256 * 1024
"""Bytes one write takes from the ring or the source."""
SNDBUF = 256 * 1024
"""Each stream's kernel send buffer (Linux doubles it): caps what a stalled client holds in the kernel."""
EVENTS_RING = (8192, 8 << 20)
"""(frames, bytes) the event log's ring keeps."""

Kind = Literal["events", "log"]


@dataclass(frozen=True, slots=True)
class SseSettings:
    keepalive_s: float = 15.0
    send_timeout_s: float = 10.0
    max_streams: int = 1024

    @classmethod
    def from_config(cls, api: ApiConfig) -> SseSettings:
        return cls(api.sse_keepalive_s, api.sse_send_timeout_s, api.sse_max_streams)


class StreamRefused(Exception):
    """The stream cannot be served; the API answers with this status and JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Client:
    __slots__ = ("dropped", "kind", "pinged", "resp", "transport", "writing_since")

    def __init__(self, kind: Kind, request: web.Request, pinged: int) -> None:
        self.kind = kind
        self.transport = request.transport
        self.resp = web.StreamResponse(headers=SSE_HEADERS)
        self.writing_since: float | None = None
        self.pinged = pinged
        self.dropped = False

    async def send(self, data: bytes) -> bool:
        """Write; False when the stream is gone (closed by the client, or dropped as stalled)."""
        if self.dropped:
            return False
        self.writing_since = asyncio.get_running_loop().time()
        try:
            await self.resp.write(data)
        except ConnectionError:
            return False
        finally:
            self.writing_since = None
        return not self.dropped


class SseHub:
    """Every SSE stream of one daemon: the feeds, their clients, keep-alives, stalls and shutdown."""

    def __init__(
        self, store: EventStore, state: Callable[[], State], state_dir: Path, settings: SseSettings
    ) -> None:
        self.store = store
        self.state = state
        self.state_dir = state_dir.resolve()
        self.settings = settings
        self.dropped = 0
        """Streams closed because their client stopped reading."""
        self._events = Feed(Ring(store.last_seq, *EVENTS_RING))
        self._jobs: dict[int, JobFeed] = {}
        self._pages = EventPages(store)
        self._clients: set[_Client] = set()
        self._pings = 0
        self._closing = False
        self._ticker: asyncio.Task[None] | None = None
        store.add_listener(self._on_batch)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="sse-ticker")

    async def close(self) -> None:
        """End every stream (aiohttp's on_shutdown): handlers return and their responses finish."""
        self._closing = True
        for c in list(self._clients):
            if c.writing_since is not None:
                self._drop(c, count=False)
        self._wake_all()
        tasks = [t for t in [self._ticker, *(f.tail for f in self._jobs.values())] if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def clients(self) -> dict[str, int]:
        counts = {"events": 0, "log": 0}
        for c in self._clients:
            counts[c.kind] += 1
        return counts

    def buffered_bytes(self) -> int:
        pages = self._pages.buffered_bytes()
        return self._events.ring.bytes + pages + sum(f.ring.bytes for f in self._jobs.values())

    # -- feeding -----------------------------------------------------------------------------------

    def _on_batch(self, batch: list[Recorded]) -> None:
        ring = self._events.ring
        if self._events.clients:
            ring.publish((rec.seq, event_frame(rec)) for rec in batch)
            self._events.wake()
        else:
            ring.reset(batch[-1].seq)
        for rec in batch:
            job_id = job_id_of(rec.stream)
            feed = None if job_id is None else self._jobs.get(job_id)
            if feed is not None:
                feed.wake()

    def _wake_all(self) -> None:
        self._events.wake()
        for feed in self._jobs.values():
            feed.wake()

    async def _tick(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + s.keepalive_s
        while True:
            await asyncio.sleep(min(1.0, s.keepalive_s, s.send_timeout_s / 4))
            now = loop.time()
            for c in list(self._clients):
                if c.writing_since is not None and now - c.writing_since > s.send_timeout_s:
                    self._drop(c)
            if now >= next_ping:
                self._pings += 1
                next_ping = now + s.keepalive_s
                self._wake_all()

    def _drop(self, c: _Client, count: bool = True) -> None:
        if c.dropped:
            return
        c.dropped = True
        if count:
            self.dropped += 1
            log.info(
                "dropped a stalled %s stream: a write waited over %.0f s",
                c.kind,
                self.settings.send_timeout_s,
            )
        if c.transport is not None:
            c.transport.abort()

    # -- clients -----------------------------------------------------------------------------------

    async def _open(self, request: web.Request, kind: Kind, notes: list[str]) -> _Client:
        if self._closing:
            raise StreamRefused(503, "shutting_down", "the daemon is stopping")
        if len(self._clients) >= self.settings.max_streams:
            raise StreamRefused(
                503, "too_many_streams", f"{len(self._clients)} streams are open ([api] sse_max_streams)"
            )
        c = _Client(kind, request, self._pings)
        self._clients.add(c)
        sock = c.transport.get_extra_info("socket") if c.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        try:
            await c.resp.prepare(request)
        except BaseException:
            self._clients.discard(c)
            raise
        head = f"retry: {RETRY_MS}\n" + "".join(f": {n}\n" for n in notes) + "\n"
        await c.send(head.encode())
        return c

    async def _close(self, c: _Client) -> None:
        self._clients.discard(c)
        if not c.dropped:
            with contextlib.suppress(ConnectionError):
                await c.resp.write_eof()

    async def _ping_or_wait(self, c: _Client, waiter: asyncio.Event) -> bool:
        if c.pinged != self._pings:
            c.pinged = self._pings
            return await c.send(PING)
        await waiter.wait()
        return True

    # -- the event log ------------------------------------------------------------------------------

    async def events(self, request: web.Request, after: int | None) -> web.StreamResponse:
        start, notes = resume_point(request, after, self.store.last_seq)
        if request.method == "HEAD":
            return web.Response(headers=SSE_HEADERS)
        c = await self._open(request, "events", notes)
        self._events.clients += 1
        try:
            await self._pump_events(c, start)
        finally:
            self._events.clients -= 1
            await self._close(c)
        return c.resp

    async def _pump_events(self, c: _Client, pos: int) -> None:
        feed = self._events
        while not self._closing:
            waiter = feed.waiter()
            ring = feed.ring
            if ring.behind(pos):
                try:
                    page = await self._pages.page(pos // STORE_PAGE)
                except StoreError:
                    return
                chunk = [frame for seq, frame in page if seq > pos]
                if not chunk:  # not readable yet (cannot happen: the ring's floor is committed)
                    await asyncio.sleep(0.05)
                    continue
                pos = page[-1][0]
                if not await c.send(b"".join(chunk)):
                    return
                continue
            frames, pos = ring.after(pos, SEND_BUDGET)
            if frames:
                if not await c.send(b"".join(frames)):
                    return
                if pos < ring.head:
                    continue
            if not await self._ping_or_wait(c, waiter):
                return

    # -- a job's log --------------------------------------------------------------------------------

    def _log_path(self, job: Job) -> Path | None:
        return job_log_path(job, self.state_dir)

    @staticmethod
    def _size(path: Path | None) -> int:
        try:
            return 0 if path is None else path.stat().st_size
        except OSError:
            return 0

    async def job_log(self, request: web.Request, job: Job, after: int | None) -> web.StreamResponse:
        path = self._log_path(job)
        size = self._size(path)
        start, notes = resume_point(request, after, size)
        if job.state in TERMINAL and start >= size:
            return web.Response(status=204)  # the whole log was sent: EventSource stops reconnecting
        if request.method == "HEAD":
            return web.Response(headers=SSE_HEADERS)
        c = await self._open(request, "log", notes)
        feed = self._jobs.get(job.id)
        if feed is None:
            feed = self._jobs[job.id] = JobFeed(job.id)
        feed.clients += 1
        try:
            await self._pump_log(c, feed, start)
        finally:
            feed.clients -= 1
            if feed.clients == 0:
                self._jobs.pop(job.id, None)
                if feed.tail is not None:
                    feed.tail.cancel()
            await self._close(c)
        return c.resp

    async def _pump_log(self, c: _Client, feed: JobFeed, pos: int) -> None:
        while not self._closing:
            waiter = feed.waiter()
            job = self.state().jobs.get(feed.job_id)
            if job is None:
                return
            if feed.path is None:
                feed.path = self._log_path(job)
            if job.state in TERMINAL:
                await self._finish_log(c, feed.path, pos, job)
                return
            if feed.path is not None:
                sent = await self._send_log(c, feed, feed.path, pos)
                if sent is None:
                    return
                pos, more = sent
                if more:
                    continue
            if not await self._ping_or_wait(c, waiter):
                return

    async def _send_log(self, c: _Client, feed: JobFeed, path: Path, pos: int) -> tuple[int, bool] | None:
        """Send what the client lacks: its new cursor and whether more may be ready at once (else it
        has had all the ring holds and can wait), or None when the client is gone."""
        if feed.tail is None:
            floor = await asyncio.to_thread(line_floor, path)
            if feed.tail is None:  # another follower may have started it meanwhile
                feed.ring = Ring(floor, *LOG_RING)
                feed.tail = asyncio.create_task(tail(feed, path), name=f"sse-tail-{feed.job_id}")
        ring = feed.ring
        stop = ring.floor if ring.behind(pos) else ring.inside(pos)
        if stop is not None:
            frames, new = await asyncio.to_thread(read_frames, path, pos, stop, SEND_BUDGET)
            new = new if new > pos else stop  # the file is shorter than the ring says: skip ahead
        else:
            frames, new = ring.after(pos, SEND_BUDGET)
        if frames and not await c.send(b"".join(frames)):
            return None
        return new, stop is not None or new < ring.head

    async def _finish_log(self, c: _Client, path: Path | None, pos: int, job: Job) -> None:
        """The job has ended, so its log is complete: send the rest, then an `end` event."""
        size = self._size(path)
        while path is not None and pos < size:
            frames, new = await asyncio.to_thread(read_frames, path, pos, size, SEND_BUDGET)
            if new <= pos or not await c.send(b"".join(frames)):
                break
            pos = new
        end = json.dumps({"job": job.id, "state": job.state, "offset": pos})
        await c.send(f"event: end\ndata: {end}\n\n".encode())
