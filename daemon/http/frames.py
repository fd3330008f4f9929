"""The SSE wire format this daemon writes: the response headers, the frames of the event log's feed
(`id:` = seq), the keep-alive comment, and where a stream resumes from (Last-Event-ID, ?after=).
A job log's frames (`id:` = byte offset) are cut in `daemon.http.logfeed`.
"""

from __future__ import annotations

import json

from aiohttp import web

from daemon.core.events import Recorded
from daemon.http.views import recorded_json

__all__ = [
    "PING",
    "RETRY_MS",
    "SSE_HEADERS",
    "event_frame",
    "parse_last_event_id",
    "resume_point",
]

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
RETRY_MS = 2000
"""What EventSource waits before it reconnects (sent once, as `retry:`)."""
PING = b": keep-alive\n\n"
MAX_ID_CHARS = 19
"""Longer than any offset or seq this daemon will reach (2**63 has 19 digits)."""


def parse_last_event_id(raw: str | None) -> tuple[int | None, str | None]:
    """The id a reconnecting client names, or None and why it was ignored (never an error: a browser
    would stop reconnecting on one)."""
    if raw is None or raw == "":
        return None, None
    text = raw.strip()
    if 0 < len(text) <= MAX_ID_CHARS and text.isascii() and text.isdigit():
        return int(text), None
    shown = (text[:40] + ("..." if len(text) > 40 else "")).replace("\r", " ").replace("\n", " ")
    return None, f"ignored Last-Event-ID {shown!r}: not an id of this stream (a non-negative integer)"


def resume_point(request: web.Request, after: int | None, end: int) -> tuple[int, list[str]]:
    """Where a stream starts: Last-Event-ID (a reconnect) over ?after= over the beginning. A point past
    the end names another log (this one never shrinks): the stream starts over, and says so."""
    named, why = parse_last_event_id(request.headers.get("Last-Event-ID"))
    notes = [why] if why else []
    start = named if named is not None else (after or 0)
    if start > end:
        notes.append(f"resume point {start} is past the end of this log ({end}): starting from the beginning")
        start = 0
    return start, notes


def event_frame(rec: Recorded) -> bytes:
    data = json.dumps(recorded_json(rec), ensure_ascii=False, separators=(",", ":"))
    return b"id: %d\ndata: %s\n\n" % (rec.seq, data.encode())
