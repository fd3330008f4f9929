"""What the runner sees of a run, written to the job's stream: its observations as they come, and
its end turned into the event that decides what happens next (done, retry, resume).

The runner reports here rather than to the scheduling loop, so the composition root can build the
runner first and hand it to the loop: nothing is wired after construction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from daemon.core.events import NewEvent
from daemon.core.state import State
from daemon.core.streams import Append, job_stream, run_key
from daemon.log.store import EventStore
from daemon.runs.outcome import RunEnd, exit_event, interrupted_event

__all__ = ["RunRecorder"]

log = logging.getLogger("daemon.runs.loop")


class RunRecorder:
    def __init__(self, store: EventStore, state: Callable[[], State]) -> None:
        self.store = store
        self.state = state

    async def report(self, job_id: int, events: list[NewEvent]) -> None:
        await self.store.append_batch([Append(job_stream(job_id), [e]) for e in events])

    async def ended(self, job_id: int, attempt: int, end: RunEnd) -> None:
        job = self.state().jobs.get(job_id)
        if job is None:
            return
        if end.interrupted:
            stopped = interrupted_event(job, attempt, end)
            key = run_key(job_id, attempt, "interrupted")
            await self.store.append(job_stream(job_id), [NewEvent(stopped, key)])
            log.warning(
                "job %d attempt %d: %s (resume from %s)", job_id, attempt, stopped.reason, stopped.resume_from
            )
            return
        event = exit_event(job, attempt, end)
        await self.store.append(job_stream(job_id), [NewEvent(event, run_key(job_id, attempt, "exited"))])
        log.info("job %d attempt %d %s", job_id, attempt, event.outcome)
