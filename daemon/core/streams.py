"""The event log's addresses, spelled in one place: stream names, idempotency keys, and one append.

A stream name and an idempotency key are a contract with every log already written (replay, the
API's per-job events, exactly-once intake and runs), so each is made by one function here and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from daemon.core.events import NewEvent

__all__ = [
    "DAEMON_STREAM",
    "INTAKE_STREAM",
    "SCHEDULER_STREAM",
    "Append",
    "dataset_stream",
    "drop_key",
    "job_id_of",
    "job_stream",
    "run_key",
]

DAEMON_STREAM = "daemon"
INTAKE_STREAM = "intake"
"""Rejected files and validation progress: about no dataset or job yet."""
SCHEDULER_STREAM = "scheduler"
"""Why queued jobs wait: one stream, so a pass over 10,000 jobs is one event."""
_JOB = "job:"


def job_stream(job_id: int) -> str:
    return f"{_JOB}{job_id}"


def job_id_of(stream: str) -> int | None:
    """The job a stream belongs to, or None for another kind of stream."""
    rest = stream.removeprefix(_JOB)
    return int(rest) if rest != stream and rest.isdigit() else None


def dataset_stream(sha256: str) -> str:
    return f"dataset:{sha256}"


def drop_key(drop: str) -> str:
    """A dropped file's decision is recorded once, however often intake redoes it after a crash."""
    return f"drop:{drop}"


def run_key(job_id: int, attempt: int, what: str) -> str:
    """One observation of one attempt (`started`, `exited`, `metrics:train:40`, …), recorded once."""
    return f"run:{job_id}:{attempt}:{what}"


@dataclass(frozen=True, slots=True)
class Append:
    """One stream's part of an `append_batch`; idempotency and `expected_version` apply per part."""

    stream: str
    events: Sequence[NewEvent]
    expected_version: int | None = None
