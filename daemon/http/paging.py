"""Pages of the API's lists, and answers kept per state seq.

Every list that grows with the queue comes a page at a time: `limit` entries at most (default
LIST_PAGE, at most MAX_PAGE) after the cursor `after`, and the body's `next` is the `after` of the
next page, or null on the last (the older `next_after` stays, with the same value). A page that has
a next one also says where it is in an RFC 8288 `Link: <...>; rel="next"` header, so a generic
client can follow it without knowing the cursor.

A dashboard polls the same pages over and over, and between two events they do not change: a page
is built once per state seq (by one build however many ask for it meanwhile) and kept for whoever
asks for it again at that seq, as /v1/status and /v1/state are. While a job runs its progress moves
the seq every few seconds; a kept page of jobs is then patched (the jobs it changed encoded again)
instead of built anew, as /v1/state patches its chunks.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from daemon.core.events import Event, JobsWaiting, Recorded
from daemon.core.state import State
from daemon.http.middleware import int_param
from daemon.http.openapi import LIST_PAGE, MAX_PAGE
from daemon.http.state_answer import OWN_JOB_ONLY
from daemon.http.views import job_view

__all__ = [
    "CHUNK",
    "KEPT_BYTES",
    "KEPT_EVENTS",
    "KEPT_PAGES",
    "PAGES",
    "JobChanges",
    "JobsPage",
    "Page",
    "PageCache",
    "encode_chunked",
    "jobs_page",
    "page_body",
    "page_limit",
    "page_response",
    "patch",
]

E = TypeVar("E")

CHUNK = 50
"""Entries built and encoded between two turns of the event loop (about 1 ms of work for jobs)."""
KEPT_PAGES = 64
KEPT_BYTES = 64 << 20
"""Pages kept: those that the dashboards and scripts polling one daemon ask for (a page of 5,000 jobs
is some 7 MB kept, its body and its jobs apart)."""
KEPT_EVENTS = 4096
"""Events whose jobs `JobChanges` remembers: a page older than that is built anew."""


def page_limit(request: web.Request) -> int:
    return int_param(request, "limit", LIST_PAGE, 1, MAX_PAGE)


async def encode_chunked(items: Sequence[E], view: Callable[[E], object]) -> str:
    """`items` seen through `view` as a JSON array, CHUNK entries at a time with the loop let through
    between chunks: 5,000 jobs are some 100 ms of work, which every other request would otherwise
    wait behind. (A thread would not help: the encoder and the views hold the GIL, and the fold
    changes the state on the loop meanwhile.) An entry that changes meanwhile shows as it was when
    its chunk was built."""
    parts: list[str] = []
    for start in range(0, len(items), CHUNK):
        if start:
            await asyncio.sleep(0)
        text = json.dumps([view(item) for item in items[start : start + CHUNK]])[1:-1]
        if text:
            parts.append(text)
    return "[" + ", ".join(parts) + "]"


@dataclass(frozen=True, slots=True)
class Page:
    """A page's body, and the cursor of the next page (None on the last)."""

    body: bytes
    next: int | str | None


@dataclass(frozen=True, slots=True)
class JobsPage(Page):
    """A page of jobs, with each job's JSON apart: `patch` encodes again only the jobs that events
    changed since, where those events changed neither a job's state nor its project (`JobChanges`)."""

    fields: str
    ids: tuple[int, ...]
    texts: tuple[str, ...]
    cursor: str


def page_body(
    fields: str, key: str, items: str, next_cursor: int | str | None, cursor: str = "after"
) -> Page:
    """`{<fields>, "<key>": <items>, "next": N, "next_<cursor>": N}`: `fields` is JSON members
    before the list (or "")."""
    return Page(_body(fields, key, items, next_cursor, cursor), next_cursor)


def _body(fields: str, key: str, items: str, next_cursor: int | str | None, cursor: str) -> bytes:
    nxt = json.dumps(next_cursor)
    return f'{{{fields}{", " if fields else ""}"{key}": {items}, "next": {nxt}, "next_{cursor}": {nxt}}}'.encode()


async def jobs_page(
    state: State, ids: Sequence[int], next_cursor: int | None, fields: str = "", cursor: str = "after"
) -> JobsPage:
    """The jobs `ids` as a page's body, built a chunk at a time with the loop let through."""
    texts: list[str] = []
    for start in range(0, len(ids), CHUNK):
        if start:
            await asyncio.sleep(0)
        texts += [json.dumps(job_view(state, state.jobs[i])) for i in ids[start : start + CHUNK]]
    return _jobs_page(fields, tuple(ids), tuple(texts), next_cursor, cursor)


def _jobs_page(
    fields: str, ids: tuple[int, ...], texts: tuple[str, ...], next_cursor: int | None, cursor: str
) -> JobsPage:
    body = _body(fields, "jobs", "[" + ", ".join(texts) + "]", next_cursor, cursor)
    return JobsPage(body, next_cursor, fields, ids, texts, cursor)


def patch(page: JobsPage, state: State, changed: set[int]) -> JobsPage:
    """`page` with the jobs in `changed` encoded again: the events `JobChanges.since` names jobs for
    change neither a job's state nor its project, so the page holds the same jobs."""
    if changed.isdisjoint(page.ids):
        return page
    texts = tuple(
        json.dumps(job_view(state, state.jobs[i])) if i in changed else text
        for i, text in zip(page.ids, page.texts, strict=True)
    )
    return _jobs_page(
        page.fields, page.ids, texts, page.next if isinstance(page.next, int) else None, page.cursor
    )


def page_response(request: web.Request, page: Page | None, cursor: str = "after") -> web.Response:
    """The page as JSON with its Link header; None (what a page of something that is not there is
    built as) is a 404."""
    if page is None:
        raise web.HTTPNotFound()
    headers = {}
    if page.next is not None:
        url = request.rel_url.update_query({cursor: str(page.next)})
        headers["Link"] = f'<{url}>; rel="next"'
    return web.Response(body=page.body, content_type="application/json", headers=headers)


def _jobs_changed(event: Event) -> tuple[int, ...] | None:
    """The jobs whose view `event` changes, when it changes nothing else and neither their state nor
    their project (daemon.core.fold): a run's own events (OWN_JOB_ONLY), and the scheduler's waiting
    reasons for a few jobs. None: anything may have changed."""
    if isinstance(event, OWN_JOB_ONLY):
        return (event.job_id,)
    if isinstance(event, JobsWaiting) and len(event.reasons) <= CHUNK:
        return tuple(int(key) for key in event.reasons)
    return None


class JobChanges:
    """Which jobs the events since a seq changed, as the store's listener sees them, for the last
    KEPT_EVENTS events: a page built before them is patched (`patch`) rather than built anew."""

    def __init__(self, last_seq: int) -> None:
        self._events: deque[tuple[int, tuple[int, ...] | None]] = deque()
        self._known_after = last_seq
        self._last = last_seq

    def recorded(self, batch: Sequence[Recorded]) -> None:
        for rec in batch:
            self._events.append((rec.seq, _jobs_changed(rec.event)))
            self._last = rec.seq
        while len(self._events) > KEPT_EVENTS:
            self._known_after = self._events.popleft()[0]

    def since(self, seq: int, now: int) -> set[int] | None:
        """The jobs changed after `seq` up to `now`; None when some event there may have changed
        anything, or those events are not all known (forgotten, or not seen)."""
        if seq < self._known_after or now > self._last:
            return None
        changed: set[int] = set()
        for event_seq, jobs in reversed(self._events):
            if event_seq <= seq:
                break
            if jobs is None:
                return None
            changed.update(jobs)
        return changed


@dataclass(frozen=True, slots=True)
class _Kept:
    state: State
    seq: int
    page: Page | None
    size: int


Build = Callable[[State], Coroutine[Any, Any, Page | None]]


class PageCache:
    """Pages kept for the state (and its seq) they were built from: the last KEPT_PAGES asked for,
    KEPT_BYTES at most. A page of jobs kept from an older seq is patched when the events since
    changed at most CHUNK jobs and neither their state nor project (a running job's progress: the
    usual case; `JobChanges`); any other page is built anew, by one build however many ask for it
    meanwhile. A page is kept only if the state did not move while it was built: one built across a
    fold may show jobs from two seqs, and the next asker gets a fresh one."""

    def __init__(self, state: Callable[[], State], changes: JobChanges) -> None:
        self._state = state
        self._changes = changes
        self._kept: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._bytes = 0
        self._building: dict[Hashable, tuple[State, int, asyncio.Task[Page | None]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    async def get(self, key: Hashable, build: Build) -> Page | None:
        state = self._state()
        seq = state.last_seq
        kept = self._kept.get(key)
        if kept is not None and kept.state is state:
            if kept.seq == seq:
                self._kept.move_to_end(key)
                return kept.page
            changed = self._changes.since(kept.seq, seq) if isinstance(kept.page, JobsPage) else None
            if changed is not None and len(changed) <= CHUNK and isinstance(kept.page, JobsPage):
                page = patch(kept.page, state, changed)
                self._keep(key, state, seq, page)
                return page
        building = self._building.get(key)
        if building is not None and building[0] is state and building[1] == seq:
            return await asyncio.shield(building[2])
        task = asyncio.get_running_loop().create_task(build(state))
        self._building[key] = (state, seq, task)
        task.add_done_callback(lambda t: self._built(key, state, seq, t))
        return await asyncio.shield(task)

    def _built(self, key: Hashable, state: State, seq: int, task: asyncio.Task[Page | None]) -> None:
        building = self._building.get(key)
        if building is not None and building[2] is task:
            del self._building[key]
        if task.cancelled() or task.exception() is not None:
            return
        if self._state() is state and state.last_seq == seq:
            self._keep(key, state, seq, task.result())

    def _keep(self, key: Hashable, state: State, seq: int, page: Page | None) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        size = 0 if page is None else 2 * len(page.body) if isinstance(page, JobsPage) else len(page.body)
        self._kept[key] = _Kept(state, seq, page, size)
        self._bytes += size
        while len(self._kept) > KEPT_PAGES or (self._bytes > KEPT_BYTES and len(self._kept) > 1):
            self._bytes -= self._kept.popitem(last=False)[1].size


PAGES = web.AppKey("pages", PageCache)
"""The list pages of the live state, kept per seq; the key's first item names the list."""
