"""What a notification is, decided from one recorded event: its type, its payload, whether a target
wants it, its webhook-id, the text a person reads, and when a failed delivery is tried again.

Pure, so that the notifier (daemon/notify) only moves bytes and records cursors. A notification is
made from the event and the state as it is when the notifier reaches the event: a job's name and
project never change, and the attempt's numbers are looked up by attempt, so a delivery redone after a
restart carries the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daemon.core.config import NotifyTarget, NotifyType
from daemon.core.events import (
    DaemonStarted,
    DatasetAccepted,
    FileRejected,
    JobFailed,
    JobSubmitted,
    Recorded,
    RunExited,
    RunInterrupted,
    RunServing,
    RunStarted,
)
from daemon.core.state import Job, State

__all__ = [
    "Notification",
    "backoff_s",
    "notification_of",
    "notify_stream",
    "payload_json",
    "redact",
    "summary",
    "trial_notification",
    "unhealthy_notification",
    "wants",
    "webhook_id",
]

_STREAM = "notify:"


def notify_stream(target: str) -> str:
    """Where a target's deliveries and cursor are recorded."""
    return f"{_STREAM}{target}"


@dataclass(frozen=True, slots=True)
class Notification:
    type: NotifyType | str
    """One of NOTIFY_TYPES, or `test` for `llmtraind notify test`."""
    seq: int
    ts: float
    data: dict[str, Any]
    project: str | None = None
    """The job's project; None for an event about no job."""


def _job_data(state: State, job_id: int, attempt: int | None) -> tuple[dict[str, Any], str | None]:
    job: Job | None = state.jobs.get(job_id)
    data: dict[str, Any] = {"job_id": job_id, "name": None, "project": None}
    if job is None:
        return data, None
    data |= {"name": job.name, "project": job.project, "task": job.task}
    run = next((r for r in job.runs if r.attempt == attempt), None) if attempt else None
    if run is not None and run.progress is not None:
        data["loss"] = run.progress.loss
        data["step"] = run.progress.step
        data["max_steps"] = run.progress.max_steps
    return data, job.project


def _job_event(rec: Recorded, state: State) -> tuple[NotifyType, dict[str, Any], int, int | None] | None:
    ev = rec.event
    if isinstance(ev, JobSubmitted):
        return "job.queued", {}, ev.id, None
    if isinstance(ev, RunStarted):
        return "job.started", {"attempt": ev.attempt}, ev.job_id, ev.attempt
    if isinstance(ev, RunExited):
        if ev.retry:
            return None  # it runs again: not an end yet
        extra: dict[str, Any] = {
            "attempt": ev.attempt,
            "duration_s": ev.duration_s,
            "returncode": ev.returncode,
            "reason": ev.failure.reason if ev.failure else ev.stopped,
        }
        return f"job.{ev.outcome}", extra, ev.job_id, ev.attempt  # type: ignore[return-value]
    if isinstance(ev, JobFailed):
        return "job.failed", {"reason": ev.reason}, ev.job_id, None
    if isinstance(ev, RunInterrupted):
        extra = {"attempt": ev.attempt, "reason": ev.reason, "resume_from": ev.resume_from}
        return "job.paused", extra, ev.job_id, ev.attempt
    if isinstance(ev, RunServing):
        return (
            "job.serving",
            {"attempt": ev.attempt, "url": ev.url, "models": ev.models},
            ev.job_id,
            ev.attempt,
        )
    return None


def notification_of(rec: Recorded, state: State) -> Notification | None:
    """The notification an event makes, or None (most events make none, the notifier's own records
    among them)."""
    ev = rec.event
    found = _job_event(rec, state)
    if found is not None:
        kind, extra, job_id, attempt = found
        data, project = _job_data(state, job_id, attempt)
        return Notification(kind, rec.seq, rec.ts, {"seq": rec.seq} | data | extra, project)
    if isinstance(ev, FileRejected):
        data = {"filename": ev.filename, "kind": ev.kind, "summary": ev.summary, "kept_as": ev.kept_as}
        return Notification("file.rejected", rec.seq, rec.ts, {"seq": rec.seq} | data)
    if isinstance(ev, DatasetAccepted):
        data = {
            "name": ev.name,
            "filename": ev.filename,
            "format": ev.format,
            "rows": ev.rows,
            "sha256": ev.sha256,
        }
        return Notification("dataset.accepted", rec.seq, rec.ts, {"seq": rec.seq} | data)
    if isinstance(ev, DaemonStarted):
        data = {"version": ev.version, "host": ev.host, "pid": ev.pid}
        return Notification("daemon.started", rec.seq, rec.ts, {"seq": rec.seq} | data)
    return None


def unhealthy_notification(reason: str, now: float) -> Notification:
    """daemon.unhealthy is not an event of the log (the log may be what fails), so it has no seq."""
    return Notification("daemon.unhealthy", 0, now, {"seq": None, "reason": reason})


def trial_notification(target: str, now: float) -> Notification:
    return Notification("test", 0, now, {"seq": 0, "target": target, "message": "a test from llmtraind"})


def wants(target: NotifyTarget, n: Notification) -> bool:
    """Whether `target` is sent `n`: its type is in `on`, and, for a job's event with `projects`
    set, the job's project is one of them."""
    if n.type == "test":
        return True
    if n.type not in target.on:
        return False
    return not target.projects or n.project is None or n.project in target.projects


def payload_json(n: Notification, status_url: str = "") -> str:
    """The body every target gets: Standard Webhooks' `{"type", "timestamp", "data"}`."""
    data = dict(n.data)
    if status_url:
        data["status_url"] = status_url
    stamp = datetime.fromtimestamp(n.ts, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": n.type, "timestamp": stamp, "data": data}, separators=(",", ":"))


def webhook_id(log_id: str, target: str, key: int | str) -> str:
    """Stable for one event (its seq as `key`) and one target, across retries and restarts, and
    different for another log's event of the same seq: what a receiver de-duplicates on."""
    digest = hashlib.sha256(f"{log_id}\0{target}\0{key}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def summary(n: Notification, status_url: str = "") -> tuple[str, str]:
    """(title, body) for a person: job, state, reason, duration, loss, and a link to the status page."""
    d = n.data
    if n.type.startswith("job."):
        title = f"llmtraind: job {d.get('name') or d.get('job_id')} {n.type.removeprefix('job.')}"
        parts = [
            f"job {d.get('job_id')} {d.get('name') or ''} ({d.get('project') or '-'})".replace("  ", " ")
        ]
        for key, label in (("reason", "reason"), ("url", "serving at"), ("attempt", "attempt")):
            if d.get(key):
                parts.append(f"{label}: {d[key]}")
        if d.get("duration_s") is not None:
            parts.append(f"duration: {_duration(float(d['duration_s']))}")
        if d.get("loss") is not None:
            parts.append(f"loss: {float(d['loss']):.4g}")
    elif n.type == "file.rejected":
        title = f"llmtraind: {d['filename']} rejected"
        parts = [str(d["summary"]), f"kept as {d['kept_as']}"]
    elif n.type == "dataset.accepted":
        title = f"llmtraind: dataset {d['name']} accepted"
        parts = [f"{d['rows']} rows ({d['format']}) from {d['filename']}"]
    else:
        title = f"llmtraind: {n.type}"
        parts = [f"{k}: {v}" for k, v in d.items() if k != "seq"]
    if status_url:
        parts.append(status_url)
    return title, "\n".join(parts)


def backoff_s(attempt: int, base_s: float, max_s: float, rand: float) -> float:
    """The wait after failed attempt `attempt` (1-based): base x 2^(attempt-1), capped at `max_s`,
    then jittered into its upper half by `rand` in [0, 1), so targets that failed together do not
    retry together, while each wait still at least half-doubles."""
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 60))
    return ceiling * (0.5 + 0.5 * rand)


def redact(text: str, secrets: Iterable[str]) -> str:
    """A reason recorded or logged never carries a target's secret, apprise URL or webhook URL."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
