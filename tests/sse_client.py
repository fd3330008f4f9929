"""An SSE client for the tests, written from the WHATWG HTML spec ("9.2 Server-sent events",
"Interpreting an event stream"), independent of the daemon's code.

The parser takes bytes in chunks of any size: UTF-8 decoding is incremental (a character split
between chunks is kept), lines end at CRLF, LF or CR (a CR at the end of a chunk waits for the next
one to see whether an LF follows), a leading BOM is dropped, and an event is dispatched only at a
blank line, so an event cut off by the end of the stream is discarded, as a browser does.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

__all__ = ["SseEvent", "SseParser", "Stream", "open_stream"]


@dataclass(frozen=True)
class SseEvent:
    type: str
    data: str
    last_event_id: str


@dataclass
class SseParser:
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry_ms: int | None = None
    last_event_id: str = ""
    """The EventSource's last event ID string: what it sends as Last-Event-ID on a reconnect."""
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    _text: str = ""
    _started: bool = False
    _id_buffer: str = ""
    _data: str = ""
    _type: str = ""

    def feed(self, chunk: bytes, final: bool = False) -> list[SseEvent]:
        before = len(self.events)
        text = self._decoder.decode(chunk, final)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._text += text
        self._lines(final)
        return self.events[before:]

    def _lines(self, final: bool) -> None:
        buf, start = self._text, 0
        while True:
            cr, lf = buf.find("\r", start), buf.find("\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            if end == cr and end == len(buf) - 1 and not final:
                break  # CR at the end: an LF may follow in the next chunk
            self._line(buf[start:end])
            start = end + (2 if end == cr and buf.startswith("\n", end + 1) else 1)
        self._text = buf[start:]

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
        elif line.startswith(":"):
            self.comments.append(line[1:])
        else:
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            self._field(name, value)

    def _field(self, name: str, value: str) -> None:
        if name == "event":
            self._type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry_ms = int(value)

    def _dispatch(self) -> None:
        self.last_event_id = self._id_buffer
        if self._data == "":
            self._type = ""
            return
        data = self._data[:-1] if self._data.endswith("\n") else self._data
        self.events.append(SseEvent(self._type or "message", data, self.last_event_id))
        self._data, self._type = "", ""


@dataclass
class Stream:
    status: int
    headers: dict[str, str]
    parser: SseParser
    closed: bool = False
    """The server ended the stream (as opposed to the client leaving)."""


async def open_stream(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    max_events: int | None = None,
    max_bytes: int | None = None,
    until_comments: int | None = None,
    until: Callable[[list[SseEvent]], bool] | None = None,
    max_seconds: float | None = None,
    chunk: int = 65536,
) -> Stream:
    """Read one stream until the server ends it or a limit is reached (then leave, abruptly)."""
    loop = asyncio.get_running_loop()
    deadline = None if max_seconds is None else loop.time() + max_seconds
    async with session.get(url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        parser = SseParser()
        stream = Stream(resp.status, dict(resp.headers), parser)
        if resp.status != 200:
            await resp.read()
            return stream
        got = 0
        while True:
            size = chunk if max_bytes is None else max(1, min(chunk, max_bytes - got))
            try:
                async with asyncio.timeout_at(deadline):
                    data = await resp.content.read(size)
            except TimeoutError:
                resp.close()
                return stream
            if not data:
                parser.feed(b"", final=True)
                stream.closed = True
                return stream
            got += len(data)
            parser.feed(data)
            if (
                (max_events is not None and len(parser.events) >= max_events)
                or (max_bytes is not None and got >= max_bytes)
                or (until_comments is not None and len(parser.comments) >= until_comments)
                or (until is not None and until(parser.events))
            ):
                resp.close()
                return stream
