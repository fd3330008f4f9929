"""Pages of the API's lists, and answers kept per state seq.

Every list that grows with the queue comes a page at a time: `limit` entries at most (default
LIST_PAGE, at most MAX_PAGE) after the cursor `after`, and the body's `next` is the `after` of the
next page, or null on the last (the older `next_after` stays, with the same value). A page that has
a next one also says where it is in an RFC 8288 `Link: <...>; rel="next"` header, so a generic
client can follow it without knowing the cursor.

A dashboard polls the same pages over and over, and between two events they do not change: a page
is built once per state seq (by one build however many ask for it meanwhile) and kept for whoever
asks for it again at that seq, as /v1/status and /v1/state are.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from daemon.core.state import State
from daemon.http.middleware import int_param
from daemon.http.openapi import LIST_PAGE, MAX_PAGE

__all__ = [
    "CHUNK",
    "KEPT_PAGES",
    "PAGES",
    "Page",
    "SeqCache",
    "encode_chunked",
    "page_body",
    "page_limit",
    "page_response",
]

T = TypeVar("T")
E = TypeVar("E")

CHUNK = 50
"""Entries built and encoded between two turns of the event loop (about 1 ms of work for jobs)."""
KEPT_PAGES = 64
"""Pages kept per cache: those that the dashboards and scripts polling one daemon ask for."""


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


def page_body(
    fields: str, key: str, items: str, next_cursor: int | str | None, cursor: str = "after"
) -> Page:
    """`{<fields>, "<key>": <items>, "next": N, "next_<cursor>": N}`: `fields` is JSON members
    before the list (or "")."""
    nxt = json.dumps(next_cursor)
    body = f'{{{fields}{", " if fields else ""}"{key}": {items}, "next": {nxt}, "next_{cursor}": {nxt}}}'
    return Page(body.encode(), next_cursor)


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


@dataclass(frozen=True, slots=True)
class _Kept(Generic[T]):
    state: State
    seq: int
    value: T


class SeqCache(Generic[T]):
    """Answers kept for the state (and its seq) they were built from, the last KEPT_PAGES asked for;
    those of an older seq go when one of a newer seq is kept. An answer is kept only if the state did
    not move while it was built: one built across a fold may show jobs from two seqs, and the next
    asker gets a fresh one."""

    def __init__(self, state: Callable[[], State], size: int = KEPT_PAGES) -> None:
        self._state = state
        self._size = size
        self._kept: OrderedDict[Hashable, _Kept[T]] = OrderedDict()
        self._building: dict[Hashable, tuple[State, int, asyncio.Task[T]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    async def get(self, key: Hashable, build: Callable[[State], Coroutine[Any, Any, T]]) -> T:
        state = self._state()
        seq = state.last_seq
        kept = self._kept.get(key)
        if kept is not None and kept.state is state and kept.seq == seq:
            self._kept.move_to_end(key)
            return kept.value
        building = self._building.get(key)
        if building is not None and building[0] is state and building[1] == seq:
            return await asyncio.shield(building[2])
        task = asyncio.get_running_loop().create_task(build(state))
        self._building[key] = (state, seq, task)
        task.add_done_callback(lambda t: self._built(key, state, seq, t))
        return await asyncio.shield(task)

    def _built(self, key: Hashable, state: State, seq: int, task: asyncio.Task[T]) -> None:
        building = self._building.get(key)
        if building is not None and building[2] is task:
            del self._building[key]
        if task.cancelled() or task.exception() is not None:
            return
        if self._state() is state and state.last_seq == seq:
            stale = [k for k, kept in self._kept.items() if kept.seq != seq or kept.state is not state]
            for k in stale:
                del self._kept[k]
            self._kept[key] = _Kept(state, seq, task.result())
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)


PAGES = web.AppKey("pages", SeqCache[Page | None])
"""The list pages of the live state, kept per seq; the key's first item names the list."""
