"""Local executor: starts each attempt under its own supervisor, watches it, reports what it sees.

The run's process tree is `supervisor (own session) -> swift (own process group) -> workers`; see
`daemon.runs.supervise`. The runner never holds a pipe to a run: swift appends to the job's log file
and the runner reads files (`logging.jsonl` for metrics, the log's last lines for the failure's
evidence), so a run never blocks on a slow daemon and a restarted daemon reads the same files.
The supervisor's exit is awaited through a pidfd, which works the same for a run this daemon
started and for one an earlier daemon started, and cannot be fooled by a reused pid.

Everything seen is handed to `Report` callbacks as events; the runner knows nothing of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daemon.core.deployment import serves
from daemon.core.events import (
    ArtifactRecord,
    ArtifactsFound,
    JobProgress,
    JobStarted,
    NewEvent,
    RunServing,
    RunStarted,
)
from daemon.core.streams import run_key
from daemon.runs import supervise
from daemon.runs.outcome import RunEnd
from daemon.runs.supervise import EXIT_FILE, RUN_FILE, SUPERVISOR_FILE, boot_id, proc_start_ticks
from daemon.runs.swift.artifacts import Artifact, scan_artifacts
from daemon.runs.swift.deploy import listening_url, local_url
from daemon.runs.swift.failures import TAIL_LINES
from daemon.runs.swift.progress import MetricsSampler, StepMetrics, parse_metrics

__all__ = ["Adoptable", "Report", "Runner", "read_tail"]

log = logging.getLogger(__name__)

Report = Callable[[int, list[NewEvent]], Awaitable[None]]
"""Record these events on job `id`'s stream; returns once they are durable."""

_TAIL_BYTES = 256 * 1024
_ARTIFACT_EVERY = 4
"""Polls between scans of the output directory (the metrics are read on every poll)."""
_STDOUT_RECORD_RE = re.compile(rb"(?:^|\r)\{'[^\r\n]*", re.MULTILINE)
"""A record starts a line, or follows the `\r<spaces>\r` with which tqdm.write clears its bar."""
_UNSET_FOR_RUNS = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID")
"""systemd's hand-offs to the daemon, which a run must not answer or inherit."""


@dataclass(frozen=True)
class Adoptable:
    """A run the log says is running, as an earlier daemon recorded it."""

    job_id: int
    attempt: int
    run_dir: Path
    output_dir: Path
    log: Path
    log_offset: int
    pid: int | None
    """None: the daemon died before it recorded RunStarted; supervisor.json may still tell."""
    start_ticks: int | None
    boot_id: str | None
    session: int | None
    last_step: int | None
    """The last train step recorded, so that no metrics record is kept twice."""
    serves: bool = False
    """A deploy run: the daemon watches for its server to answer."""


@dataclass
class _Watch:
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
    serve_offset: int = 0
    url: str | None = None
    """Where a deploy run's server said it listens."""
    serving: bool = False
    """Its server has answered (RunServing is recorded)."""


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


def _progress_event(w: _Watch, m: StepMetrics) -> NewEvent:
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


class Runner:
    """Starts, watches, cancels and re-adopts runs; one instance per daemon."""

    def __init__(
        self,
        report: Report,
        on_end: Callable[[int, int, RunEnd], Awaitable[None]],
        *,
        grace_s: float,
        poll_s: float,
        supervisor_python: str = sys.executable,
    ) -> None:
        self._report = report
        self._on_end = on_end
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.python = supervisor_python
        self._runs: dict[int, _Watch] = {}

    @property
    def running(self) -> set[int]:
        return set(self._runs)

    def sessions(self) -> set[int]:
        """Session ids of our runs: a GPU process in one of them is ours, any other is foreign."""
        return {w.session for w in self._runs.values() if w.session is not None}

    async def launch(self, started: JobStarted) -> None:
        """Start the attempt `started` decided; its end is reported through `on_end`."""
        w = _Watch(
            started.job_id,
            started.attempt,
            Path(started.run_dir),
            Path(started.output_dir),
            Path(started.log),
        )
        w.serves = serves(started.argv)
        self._runs[w.job_id] = w
        w.task = asyncio.create_task(self._launch_and_watch(w, started), name=f"run-{w.job_id}")

    async def adopt(self, run: Adoptable, boot_id: str) -> None:
        """Watch a run an earlier daemon started: its end may already be in exit.json."""
        w = _Watch(run.job_id, run.attempt, run.run_dir, run.output_dir, run.log, run.log_offset)
        w.session = run.session
        w.serves = run.serves
        if run.last_step is not None:
            w.sampler.seen(run.last_step)
        self._runs[w.job_id] = w
        w.task = asyncio.create_task(self._adopt_and_watch(w, run, boot_id), name=f"run-{w.job_id}")

    def cancel(self, job_id: int, why: str = "cancel") -> bool:
        """Ask the run's supervisor to stop swift (SIGTERM, grace, SIGKILL); False if not ours."""
        w = self._runs.get(job_id)
        if w is None:
            return False
        if w.cancel is None:
            w.cancel = why
            self._signal(w)
        return True

    async def stop(self, *, stop_runs: bool, wait_s: float = 0.0) -> None:
        """Daemon shutdown: stop watching; the runs go on unless `stop_runs`. Stopped runs that end
        within `wait_s` are reported; the supervisors of the others finish stopping them and the
        next daemon reads how they ended."""
        if stop_runs:
            for w in self._runs.values():
                w.cancel = "shutdown"
                self._signal(w)
            waits = [w.task for w in self._runs.values() if w.task is not None]
            if waits and wait_s > 0:
                await asyncio.wait(waits, timeout=wait_s)
        for w in list(self._runs.values()):
            if w.task is not None:
                w.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w.task
            self._close(w)

    # -- one run -----------------------------------------------------------------------------

    def _signal(self, w: _Watch) -> None:
        if w.pidfd is None:
            return  # not started yet: _launch_and_watch sends it once it is
        sig = signal.SIGUSR1 if w.cancel == "shutdown" else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(w.pidfd, sig)

    def _close(self, w: _Watch) -> None:
        self._runs.pop(w.job_id, None)
        if w.pidfd is not None:
            with contextlib.suppress(OSError):
                asyncio.get_running_loop().remove_reader(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = None

    async def _launch_and_watch(self, w: _Watch, started: JobStarted) -> None:
        try:
            error = await self._spawn(w, started)
            if error is None:
                await self._record_started(w, boot_id())
                await self._watch(w)
            await self._finish(w, error)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a run must end with a record, whatever broke here
            log.exception("job %d attempt %d: the runner failed", w.job_id, w.attempt)
            await self._finish(w, f"the daemon's runner failed: {e}")

    async def _spawn(self, w: _Watch, started: JobStarted) -> str | None:
        header = f"\n==> llmtraind: job {w.job_id} attempt {w.attempt}: {started.command}\n"
        w.log_offset = await asyncio.to_thread(self._prepare, w, started, header, self.grace_s)
        env = {k: v for k, v in os.environ.items() if k not in {*started.unset_env, *_UNSET_FOR_RUNS}}
        log_fd = os.open(w.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python,
                "-I",
                "-S",
                supervise.__file__,
                str(w.run_dir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                env=env | started.env,
                start_new_session=True,
                cwd=w.run_dir,
            )
        except OSError as e:
            return f"cannot start the run's supervisor ({self.python}): {e}"
        finally:
            os.close(log_fd)
        await proc.wait()
        info = _read_json(w.run_dir / SUPERVISOR_FILE)
        if info is None:
            return (
                None
                if (w.run_dir / EXIT_FILE).exists()
                else "the run's supervisor failed to start; see the log"
            )
        w.pid = int(info["pid"])
        return self._open_pidfd(w)

    @staticmethod
    def _prepare(w: _Watch, started: JobStarted, header: str, grace_s: float) -> int:
        """Make the run's folders and its run.json; the log's size before the attempt's header."""
        w.run_dir.mkdir(parents=True, exist_ok=True)
        w.output_dir.mkdir(parents=True, exist_ok=True)
        w.log.parent.mkdir(parents=True, exist_ok=True)
        spec = {"argv": started.argv, "log": str(w.log), "timeout_s": started.timeout_s}
        (w.run_dir / RUN_FILE).write_text(json.dumps(spec | {"grace_s": grace_s}))
        with open(w.log, "ab") as f:
            offset = f.tell()
            f.write(header.encode())
        return offset

    def _open_pidfd(self, w: _Watch) -> str | None:
        assert w.pid is not None
        try:
            w.pidfd = os.pidfd_open(w.pid)
        except ProcessLookupError:
            return None  # already gone: exit.json says how it ended
        if w.cancel is not None:
            self._signal(w)
        return None

    async def _record_started(self, w: _Watch, boot_id: str) -> None:
        info = await asyncio.to_thread(_read_json, w.run_dir / SUPERVISOR_FILE)
        if info is None:
            return
        event = RunStarted(
            job_id=w.job_id,
            attempt=w.attempt,
            pid=int(info["pid"]),
            start_ticks=int(info["start_ticks"]),
            boot_id=str(info.get("boot_id", boot_id)),
            child_pid=int(info["child_pid"]),
            session=int(info["sid"]),
            log_offset=w.log_offset,
        )
        w.session = event.session
        await self._report(w.job_id, [NewEvent(event, run_key(w.job_id, w.attempt, "started"))])

    async def _adopt_and_watch(self, w: _Watch, run: Adoptable, boot_id: str) -> None:
        try:
            error = await asyncio.to_thread(self._find, w, run, boot_id)
            if error is None and run.pid is None:
                await self._record_started(w, boot_id)
            if error is None:
                await self._watch(w)
            await self._finish(w, error)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("job %d attempt %d: re-adopting the run failed", w.job_id, w.attempt)
            await self._finish(w, f"the daemon could not re-adopt the run: {e}")

    def _find(self, w: _Watch, run: Adoptable, boot_id: str) -> str | None:
        """Open the recorded supervisor again, unless its pid now names another process."""
        info = _read_json(w.run_dir / SUPERVISOR_FILE)
        pid = run.pid if run.pid is not None else (int(info["pid"]) if info else None)
        ticks = run.start_ticks if run.start_ticks is not None else (info or {}).get("start_ticks")
        boot = run.boot_id if run.boot_id is not None else (info or {}).get("boot_id")
        if (w.run_dir / EXIT_FILE).exists():
            return None
        if pid is None:
            return "the daemon stopped before the run's supervisor started"
        if boot != boot_id:
            w.interrupted = True
            return "the machine rebooted while the run was running"
        if proc_start_ticks(pid) != ticks:
            return f"the run's supervisor (pid {pid}) is gone without recording an exit"
        w.pid = pid
        try:
            w.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None if (w.run_dir / EXIT_FILE).exists() else f"the run's supervisor (pid {pid}) is gone"
        if proc_start_ticks(pid) != ticks:  # exited and reused between the check and the open
            return None if (w.run_dir / EXIT_FILE).exists() else f"the run's supervisor (pid {pid}) is gone"
        return None

    async def _watch(self, w: _Watch) -> None:
        """Poll the run's files until the supervisor exits; once, if it is already gone."""
        if w.pidfd is None:
            await self._poll(w, final=True)
            return
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(w.pidfd, _resolve, exited)
        try:
            done = False
            while not done:
                await asyncio.wait([exited], timeout=self.poll_s)
                # Decided once per round: an exit seen during a poll still gets its own final poll.
                done = exited.done()
                if done:  # a pidfd stays readable: stop watching before the last poll
                    loop.remove_reader(w.pidfd)
                await self._poll(w, final=done)
        finally:
            loop.remove_reader(w.pidfd)

    async def _poll(self, w: _Watch, *, final: bool) -> None:
        events = await asyncio.to_thread(self._observe, w, final)
        if events:
            await self._report(w.job_id, events)

    def _observe(self, w: _Watch, final: bool) -> list[NewEvent]:
        """New metrics records, and the artifacts when they changed. Runs in a thread."""
        now = time.monotonic()
        events = [_progress_event(w, m) for m in self._new_metrics(w) if w.sampler.offer(m, now)]
        w.polls += 1
        if w.serves and not w.serving and not final:
            events += self._serving(w)
        if final or w.polls % _ARTIFACT_EVERY == 0:
            found = _records(w.output_dir, scan_artifacts(w.output_dir))
            if _changed(w.artifacts, found, sizes=final):
                w.artifacts = found
                digest = hashlib.sha256(repr(found).encode()).hexdigest()[:16]
                event = ArtifactsFound(job_id=w.job_id, attempt=w.attempt, artifacts=list(found))
                events.append(NewEvent(event, run_key(w.job_id, w.attempt, f"artifacts:{digest}")))
        return events

    @staticmethod
    def _serving(w: _Watch) -> list[NewEvent]:
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

    def _new_metrics(self, w: _Watch) -> list[StepMetrics]:
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

    async def _finish(self, w: _Watch, error: str | None) -> None:
        end = await asyncio.to_thread(self._collect, w, error)
        self._close(w)
        await self._on_end(w.job_id, w.attempt, end)

    def _collect(self, w: _Watch, error: str | None) -> RunEnd:
        info = _read_json(w.run_dir / EXIT_FILE)
        tail = read_tail(w.log, w.log_offset)
        artifacts = scan_artifacts(w.output_dir)
        if info is None:
            why = error or "the run ended without recording an exit"
            return RunEnd(None, w.cancel, why, tail, artifacts, w.output_dir, None, w.interrupted)
        started, ended = info.get("started"), info.get("ended")
        duration = ended - started if isinstance(started, float) and isinstance(ended, float) else None
        return RunEnd(
            info.get("returncode"),
            info.get("stopped"),
            info.get("error"),
            tail,
            artifacts,
            w.output_dir,
            duration,
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
