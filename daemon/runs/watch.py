"""What the runner sees of one run, read from its files (a thread's work): new metrics records,
the artifacts in its output folder, whether a deploy run's server answers yet, and at the end how it
ended (exit.json, the log's last lines, the final artifacts). Polled, so that a run never blocks on a
slow daemon and a restarted daemon reads the same files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daemon.core.events import ArtifactRecord, ArtifactsFound, JobProgress, JobStarted, NewEvent, RunServing
from daemon.core.pausing import PAUSE_FILE
from daemon.core.streams import run_key
from daemon.runs.outcome import RunEnd
from daemon.runs.reaper import Orphan
from daemon.runs.supervise import EXIT_FILE
from daemon.runs.swift.artifacts import Artifact, scan_artifacts
from daemon.runs.swift.deploy import listening_url, local_url
from daemon.runs.swift.failures import TAIL_LINES
from daemon.runs.swift.progress import MetricsSampler, StepMetrics, parse_metrics

__all__ = ["Watch", "collect", "observe", "probe_server", "read_json", "read_tail"]

_TAIL_BYTES = 256 * 1024
_STEP_TIMES = 50
"""Recent step times kept for the median hang detection compares with."""
_ARTIFACT_EVERY = 4
"""Polls between scans of the output directory (the metrics are read on every poll)."""
_STDOUT_RECORD_RE = re.compile(rb"(?:^|\r)\{'[^\r\n]*", re.MULTILINE)
"""A record starts a line, or follows the `\r<spaces>\r` with which tqdm.write clears its bar."""


@dataclass
class Watch:
    """One run as the runner follows it: its supervisor's handles, and how far each of its files has
    been read, so that a poll reads only what is new."""

    job_id: int
    attempt: int
    run_dir: Path
    output_dir: Path
    log: Path
    log_offset: int = 0
    pid: int | None = None
    session: int | None = None
    interrupted: bool = False
    pidfd: int | None = None
    cancel: str | None = None
    sampler: MetricsSampler = field(default_factory=MetricsSampler)
    metrics_offset: int = 0
    stdout_offset: int = 0
    artifacts: tuple[ArtifactRecord, ...] = ()
    polls: int = 0
    task: asyncio.Task[None] | None = None
    serves: bool = False
    gpu_uuids: tuple[str, ...] = ()
    """The GPUs the run holds while its process lives."""
    exited: bool = False
    """Its supervisor has exited: from now on the log's word on the run holds its slot."""
    serve_offset: int = 0
    url: str | None = None
    """Where a deploy run's server said it listens."""
    serving: bool = False
    """Its server has answered (RunServing is recorded)."""
    orphan: Orphan | None = None
    """Swift, once its supervisor died before writing exit.json: `pidfd` is then swift's."""

    @classmethod
    def of(cls, started: JobStarted) -> Watch:
        """The attempt a launch starts, its files where the decision put them (local or on Slurm)."""
        return cls(
            started.job_id,
            started.attempt,
            Path(started.run_dir),
            Path(started.output_dir),
            Path(started.log),
        )

    exit_info: dict[str, Any] | None = None
    """How the orphan ended, as the daemon wrote it to exit.json (or could not)."""
    last_step: int | None = None
    """The newest train step seen, when (time.monotonic()), and the seconds each step took."""
    max_steps: int = 0
    step_at: float = 0.0
    step_s: list[float] = field(default_factory=list)
    hang: str | None = None
    """Why the daemon stopped the run as hung."""


def read_tail(path: Path, start: int, limit: int = _TAIL_BYTES) -> list[str]:
    """The last lines of `path` after byte `start`, split at CR and LF as a terminal shows them."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            begin = max(start, size - limit)
            f.seek(max(0, begin - 1))
            before = f.read(1) if begin > 0 else b"\n"
            data = f.read(size - begin)
    except OSError:
        return []
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    lines = [part for line in text.split("\n") for part in line.split("\r")[-1:]]
    if begin > start and before != b"\n" and lines:
        lines = lines[1:]  # the first is cut
    return [line for line in lines if line.strip()][-TAIL_LINES:]


def _read_new(path: Path, offset: int) -> tuple[bytes, int]:
    """Complete lines appended to `path` since `offset`, and the offset after them."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(8 * 1024 * 1024)
    except OSError:
        return b"", offset
    end = data.rfind(b"\n") + 1
    return data[:end], offset + end


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Requests to our own runs' servers never go through an http_proxy from the environment."""


def probe_server(url: str, timeout: float = 2.0) -> list[str] | None:
    """The model names a swift deploy server at `url` serves, or None while its /health does not
    answer 200. Blocking (a thread's work). A server that wants an api_key for /v1/models still
    counts as answering, with no names."""
    try:
        with _DIRECT.open(f"{url}/health", timeout=timeout) as resp:
            if resp.status != 200:
                return None
    except (OSError, ValueError):
        return None
    try:
        with _DIRECT.open(f"{url}/v1/models", timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return []
    data = body.get("data") if isinstance(body, dict) else None
    return [str(m["id"]) for m in data or [] if isinstance(m, dict) and "id" in m]


def _progress_event(w: Watch, m: StepMetrics) -> NewEvent:
    event = JobProgress(job_id=w.job_id, attempt=w.attempt, **asdict(m) | {"raw": dict(m.raw)})
    return NewEvent(event, run_key(w.job_id, w.attempt, f"metrics:{m.kind}:{m.step}"))


def _changed(old: tuple[ArtifactRecord, ...], new: tuple[ArtifactRecord, ...], *, sizes: bool) -> bool:
    """While a run writes, only a new, removed or completed entry is news: sizes grow on every
    scan of a checkpoint being saved. The last scan records the final sizes."""
    if sizes:
        return old != new
    return [(a.kind, a.path, a.step, a.complete) for a in old] != [
        (a.kind, a.path, a.step, a.complete) for a in new
    ]


def _records(output_dir: Path, artifacts: list[Artifact]) -> tuple[ArtifactRecord, ...]:
    return tuple(
        ArtifactRecord(
            kind=a.kind, path=str(output_dir / a.path), bytes=a.bytes, step=a.step, complete=a.complete
        )
        for a in artifacts
    )


def observe(w: Watch, final: bool) -> list[NewEvent]:
    """New metrics records, and the artifacts when they changed. Runs in a thread."""
    now = time.monotonic()
    records = _new_metrics(w)
    _track_steps(w, records, now)
    events = [_progress_event(w, m) for m in records if w.sampler.offer(m, now)]
    w.polls += 1
    if w.serves and not w.serving and not final:
        events += _serving(w)
    if final or w.polls % _ARTIFACT_EVERY == 0:
        found = _records(w.output_dir, scan_artifacts(w.output_dir))
        if _changed(w.artifacts, found, sizes=final):
            w.artifacts = found
            digest = hashlib.sha256(repr(found).encode()).hexdigest()[:16]
            event = ArtifactsFound(job_id=w.job_id, attempt=w.attempt, artifacts=list(found))
            events.append(NewEvent(event, run_key(w.job_id, w.attempt, f"artifacts:{digest}")))
    return events


def _track_steps(w: Watch, records: list[StepMetrics], now: float) -> None:
    """How fast the run's steps come, for hang detection: the time since its step last advanced,
    spread over the steps it advanced by."""
    for m in records:
        if m.kind != "train" or (w.last_step is not None and m.step <= w.last_step):
            continue
        if w.last_step is not None:
            w.step_s.append((now - w.step_at) / (m.step - w.last_step))
            del w.step_s[:-_STEP_TIMES]
        w.last_step, w.max_steps, w.step_at = m.step, m.max_steps, now


def _serving(w: Watch) -> list[NewEvent]:
    """Once a deploy run's server has said where it listens and answers there: RunServing."""
    data, w.serve_offset = _read_new(w.log, max(w.serve_offset, w.log_offset))
    w.url = listening_url(data) or w.url
    if w.url is None:
        return []
    models = probe_server(local_url(w.url))
    if models is None:
        return []
    w.serving = True
    event = RunServing(job_id=w.job_id, attempt=w.attempt, url=w.url, models=models)
    return [NewEvent(event, run_key(w.job_id, w.attempt, "serving"))]


def _new_metrics(w: Watch) -> list[StepMetrics]:
    """From logging.jsonl; from the log's stdout records while swift has written no logging.jsonl."""
    jsonl = w.output_dir / "logging.jsonl"
    if jsonl.exists():
        data, w.metrics_offset = _read_new(jsonl, w.metrics_offset)
        lines = data.splitlines()
    else:
        data, end = _read_new(w.log, max(w.stdout_offset, w.log_offset))
        w.stdout_offset = end
        lines = [m.group(0) for m in _STDOUT_RECORD_RE.finditer(data)]
    return [m for line in lines if (m := parse_metrics(line)) is not None]


def collect(w: Watch, error: str | None) -> RunEnd:
    info = read_json(w.run_dir / EXIT_FILE) or w.exit_info
    tail = read_tail(w.log, w.log_offset)
    artifacts = scan_artifacts(w.output_dir)
    if info is None:
        why = error or "the run ended without recording an exit"
        return RunEnd(None, w.cancel, why, tail, artifacts, w.output_dir, None, w.interrupted)
    started, ended = info.get("started"), info.get("ended")
    duration = ended - started if isinstance(started, float) and isinstance(ended, float) else None
    return RunEnd(
        info.get("returncode"),
        "hang" if w.hang is not None else info.get("stopped"),
        info.get("error"),
        tail,
        artifacts,
        w.output_dir,
        duration,
        paused=(w.run_dir / PAUSE_FILE).exists(),
        hang=w.hang,
    )


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
