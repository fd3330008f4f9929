"""A job's log as SSE events: where lines are cut, how a line is framed, and reading a stretch of the
file. Pure except for `read_frames`, which reads the file (blocking: small reads, or a thread).

One event per line. A line ends at LF; its `id` is the byte offset just after that LF, so a client
that reconnects with it resumes at the next line. The LF is not part of the data. A CR inside a line
(tqdm redraws its bar with CR) starts a new `data:` line of the same event, as the SSE format wants
(a raw CR would end the field): a client that joins an event's data lines with LF, as EventSource
does, gets the line back exactly by turning each LF into CR again, because a line has no LF of its
own. A line longer than MAX_LINE bytes is sent in pieces (after its last CR within the limit when it
has one, else at the limit on a UTF-8 character boundary), each an event with the offset it ends at,
so no client or buffer ever holds more than MAX_LINE of one line. Bytes that are not UTF-8 arrive as
U+FFFD.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MAX_LINE", "LineCutter", "line_floor", "log_frame", "read_frames"]

MAX_LINE = 64 * 1024
_READ = 1 << 20


def _piece_end(data: bytes | bytearray, start: int) -> int:
    """Where a piece of a line longer than MAX_LINE, starting at `start`, ends."""
    limit = start + MAX_LINE
    cr = data.rfind(b"\r", start, limit)
    if cr >= 0:
        return cr + 1
    end = limit
    # Back off over UTF-8 continuation bytes (at most 3) so a character is never split.
    while end > limit - 3 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return end


class LineCutter:
    """Cuts a stream of the log's bytes into events: (offset after the event, its text without LF)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        """File offset of the first byte not yet returned in an event."""
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._pending += data
        buf = self._pending
        out: list[tuple[int, bytes]] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            stop = len(buf) if nl < 0 else nl
            while stop - start > MAX_LINE:
                end = _piece_end(buf, start)
                out.append((self.offset + end, bytes(buf[start:end])))
                start = end
            if nl < 0:
                break
            out.append((self.offset + nl + 1, bytes(buf[start:nl])))
            start = nl + 1
        if start:
            del buf[:start]
            self.offset += start
        return out

    def flush(self) -> list[tuple[int, bytes]]:
        """The last, unterminated line: sent when the file is known to be complete, or at a cut."""
        if not self._pending:
            return []
        self.offset += len(self._pending)
        text = bytes(self._pending)
        self._pending.clear()
        return [(self.offset, text)]


def log_frame(end: int, text: bytes) -> bytes:
    """One SSE event: `id: END`, one `data:` line per CR-separated part of the line."""
    parts = text.decode("utf-8", "replace").split("\r")
    data = "".join(f"data: {p}\n" for p in parts)
    return f"id: {end}\n{data}\n".encode()


def read_frames(path: Path, start: int, stop: int | None, budget: int) -> tuple[list[bytes], int]:
    """Frames for the log's bytes from `start`, reading at most `budget` bytes (but always enough for
    one event), and the offset after the last one.

    `stop` is an offset that ends an event whatever follows it (the end of a finished job's log, or
    where a live tail took over); None reads whole lines only. Blocking.
    """
    cutter = LineCutter(start)
    frames: list[bytes] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], start
    try:
        pos = start
        chunk = max(4096, min(_READ, budget))
        while True:
            want = chunk if stop is None else min(chunk, stop - pos)
            data = os.pread(fd, want, pos) if want > 0 else b""
            pos += len(data)
            events = cutter.feed(data)
            at_stop = stop is not None and (pos >= stop or not data)
            if at_stop:
                events += cutter.flush()
            frames += [log_frame(end, text) for end, text in events]
            if at_stop or not data or (frames and pos - start >= budget):
                break
    finally:
        os.close(fd)
    return frames, cutter.offset


def line_floor(path: Path) -> int:
    """Where a live tail of the log starts: after the last LF in its final MAX_LINE bytes (the start
    of the line being written), or the end of the file when no LF is that near. Blocking (one read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        base = max(0, size - MAX_LINE)
        tail = os.pread(fd, size - base, base)
    finally:
        os.close(fd)
    nl = tail.rfind(b"\n")
    if nl >= 0:
        return base + nl + 1
    return 0 if base == 0 else size
