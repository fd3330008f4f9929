"""The event log's pages as SSE frames, for the clients that replay history the ring no longer holds
(a new client resuming from an old id, or one that fell behind). A burst of reconnects all asks for
the same pages, so each page is read and encoded once, and the last full pages are kept.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from daemon.http.frames import event_frame
from daemon.log.store import EventStore

__all__ = ["PAGES_KEPT", "STORE_PAGE", "EventPages"]

STORE_PAGE = 256
PAGES_KEPT = 16
"""Pages of the event log (encoded) kept for clients that replay it."""


class EventPages:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._pages: OrderedDict[int, list[tuple[int, bytes]]] = OrderedDict()
        self._loading: dict[int, asyncio.Future[list[tuple[int, bytes]]]] = {}

    def buffered_bytes(self) -> int:
        return sum(len(frame) for page in self._pages.values() for _, frame in page)

    async def page(self, k: int) -> list[tuple[int, bytes]]:
        """Events (k*STORE_PAGE, (k+1)*STORE_PAGE] encoded: read and encoded once however many clients
        replay them at once (a burst of reconnects all asks for the same pages), full pages kept."""
        cached = self._pages.get(k)
        if cached is not None:
            self._pages.move_to_end(k)
            return cached
        loading = self._loading.get(k)
        if loading is not None:
            return await asyncio.shield(loading)
        fut: asyncio.Future[list[tuple[int, bytes]]] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failure may have no waiter
        self._loading[k] = fut
        try:
            frames = [(r.seq, event_frame(r)) for r in await self.store.read(k * STORE_PAGE, STORE_PAGE)]
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            del self._loading[k]
        if len(frames) == STORE_PAGE:
            self._pages[k] = frames
            while len(self._pages) > PAGES_KEPT:
                self._pages.popitem(last=False)
        fut.set_result(frames)
        return frames
