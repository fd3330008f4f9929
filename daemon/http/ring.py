"""A feed's bounded ring of encoded frames, shared by all the feed's clients, and the signal they wait
on for it to grow. Each client holds only a cursor into it (the id of the last frame it was sent);
a cursor behind the ring's floor reads the gap from the source (see `daemon.http.sse`).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable

__all__ = ["Feed", "Ring"]


class Ring:
    """A feed's recent frames, keyed by the id each ends at, oldest first; gap-free after `floor`."""

    def __init__(self, floor: int, max_frames: int, max_bytes: int) -> None:
        self.floor = floor
        """Every frame with a key above this is here; the ones up to it were dropped (or never kept)."""
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._keys: list[int] = []
        self._frames: list[bytes] = []
        self._first = 0
        self.bytes = 0

    @property
    def head(self) -> int:
        return self._keys[-1] if len(self._keys) > self._first else self.floor

    def publish(self, items: Iterable[tuple[int, bytes]]) -> None:
        for key, frame in items:
            self._keys.append(key)
            self._frames.append(frame)
            self.bytes += len(frame)
        while self._first < len(self._keys) and (
            len(self._keys) - self._first > self.max_frames or self.bytes > self.max_bytes
        ):
            self.floor = self._keys[self._first]
            self.bytes -= len(self._frames[self._first])
            self._first += 1
        if self._first > 1024 and self._first * 2 > len(self._keys):
            del self._keys[: self._first], self._frames[: self._first]
            self._first = 0

    def reset(self, floor: int) -> None:
        """Forget every frame: nobody reads this feed now, and the source has them."""
        self._keys.clear()
        self._frames.clear()
        self._first, self.bytes, self.floor = 0, 0, floor

    def behind(self, pos: int) -> bool:
        return pos < self.floor

    def inside(self, pos: int) -> int | None:
        """When `pos` falls inside a frame (a client resumed mid-line), that frame's end."""
        i = bisect.bisect_right(self._keys, pos, lo=self._first)
        if i == len(self._keys):
            return None
        start = self._keys[i - 1] if i > self._first else self.floor
        return self._keys[i] if start < pos else None

    def after(self, pos: int, budget: int) -> tuple[list[bytes], int]:
        """Frames after `pos` (which must not be behind), up to `budget` bytes, and the new cursor."""
        i = bisect.bisect_right(self._keys, pos, lo=self._first)
        out: list[bytes] = []
        size = 0
        while i < len(self._keys) and (not out or size + len(self._frames[i]) <= budget):
            out.append(self._frames[i])
            size += len(self._frames[i])
            pos = self._keys[i]
            i += 1
        return out, pos


class Feed:
    """A ring and the event its clients sleep on. `wake` swaps in a fresh event before setting the
    old one, so a client that took its `waiter()` before reading never misses what is published
    while it writes."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.clients = 0
        self._changed = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._changed

    def wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
