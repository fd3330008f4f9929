"""A job's log as the SSE hub serves it: which file that is, the feed its followers share, and the
tail that fills that feed. Logs are read only while somebody follows them: the first follower of a
job starts the tail (a stat every 20-50 ms, then a read of what was appended), the last one to leave
stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from daemon.core.state import Job
from daemon.http.logfeed import LineCutter, log_frame
from daemon.http.ring import Feed, Ring

__all__ = ["LOG_RING", "JobFeed", "job_log_path", "tail"]

log = logging.getLogger(__name__)

LOG_POLL_S = (0.02, 0.05)
"""How often a followed log file is checked for growth: every 20 ms for a few followers, up to every
50 ms (about half of the 100 ms latency budget) for 1,000, whose writes then carry more lines each."""
TAIL_READ = 256 * 1024
LOG_RING = (4096, 2 << 20)
"""(frames, bytes) a job log's ring keeps."""


class JobFeed(Feed):
    def __init__(self, job_id: int) -> None:
        super().__init__(Ring(0, *LOG_RING))
        self.job_id = job_id
        self.path: Path | None = None
        self.tail: asyncio.Task[None] | None = None


def job_log_path(job: Job, state_dir: Path) -> Path | None:
    """The job's log file as the state records it (never a path from a request), and only inside the
    state folder."""
    if job.run is None:
        return None
    path = Path(job.run.log).resolve()
    if not path.is_relative_to(state_dir.resolve()):
        log.warning("job %d: log %s is outside the state folder; not served", job.id, path)
        return None
    return path


async def tail(feed: JobFeed, path: Path) -> None:
    """Publish the lines appended to `path` while someone follows it."""
    cutter = LineCutter(feed.ring.floor)
    fd: int | None = None
    try:
        fast, slow = LOG_POLL_S
        while True:
            await asyncio.sleep(min(slow, fast + (slow - fast) * feed.clients / 1000))
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
            size = os.fstat(fd).st_size
            while size > cutter.offset + cutter.pending:
                # Small reads of what was just written (page cache): microseconds, on the loop.
                at = cutter.offset + cutter.pending
                data = os.pread(fd, min(size - at, TAIL_READ), at)
                if not data:
                    break
                events = cutter.feed(data)
                if events:
                    feed.ring.publish((end, log_frame(end, text)) for end, text in events)
                    feed.wake()
                if len(data) == TAIL_READ:
                    await asyncio.sleep(0)  # a burst: let the clients write between reads
    finally:
        if fd is not None:
            os.close(fd)
