"""The Slurm executor: each attempt the daemon decided is handed to sbatch, and Slurm places it.

Exactly once: an attempt's Slurm job is named after the attempt (`script.job_name`) and its id is
recorded (SlurmSubmitted) before anything else is done with it. A daemon that died between sbatch
and that record finds the job again by its name in squeue, or by the id the batch script wrote when
it started, and never submits the attempt a second time. Progress, metrics and artifacts are read
from the run folder on the shared root as for a local run; the end is what squeue says last, with
the exit status the batch script wrote. A job squeue no longer lists is reported as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon.core.config import Config
from daemon.core.events import JobStarted, NewEvent, SlurmJobState, SlurmSubmitted
from daemon.core.layout import StateLayout
from daemon.core.pausing import PAUSE_FILE
from daemon.core.state import State
from daemon.core.streams import run_key
from daemon.runs.outcome import RunEnd
from daemon.runs.runner import Adoptable, Report, adopted_watch, record_until_taken
from daemon.runs.secrets import SecretError, resolve_secrets
from daemon.runs.slurm.script import (
    SCRIPT_FILE,
    STARTED_FILE,
    ScriptOptions,
    batch_script,
    job_name,
    slurm_time,
)
from daemon.runs.slurm.states import Cluster, SlurmJob, cluster_summary, ended, parse_squeue
from daemon.runs.supervise import EXIT_FILE
from daemon.runs.swift.artifacts import scan_artifacts
from daemon.runs.watch import Watch, observe, read_json, read_tail

__all__ = ["SUBMIT_FILE", "SlurmExecutor", "shared_root_problem", "summary"]

log = logging.getLogger(__name__)

SUBMIT_FILE = "slurm-submit.json"
"""Written before sbatch: where the attempt's output begins in the job's log."""
_EXIT_AFTER_SBATCH = "LLMTRAIND_TEST_SLURM_EXIT_AFTER_SBATCH"
"""Test hook: the daemon dies right after sbatch accepted a job, before recording it."""
_RETRY_S = 2.0
_UNSET_FOR_JOBS = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID")
"""systemd's hand-offs to the daemon, which a job must not inherit through sbatch."""


def shared_root_problem(root: Path) -> str | None:
    """Why the shared root cannot hold run folders, or None: checked at start-up."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".llmtraind-write-check-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        return f"[slurm] shared_root = {str(root)!r} is not a writable folder: {e}"
    return None


@dataclass
class _Attempt:
    w: Watch
    name: str
    started: JobStarted | None
    slurm_id: int | None = None
    seen: tuple[str, str | None, str] | None = None
    cancelled: bool = False
    paused: bool = False
    task: asyncio.Task[None] | None = None
    last: SlurmJob | None = None
    """What squeue said last of the job; None once it no longer lists it."""


class SlurmExecutor:
    """Submits, watches, cancels and re-adopts Slurm jobs; one instance per daemon."""

    def __init__(
        self,
        report: Report,
        on_end: Callable[[int, int, RunEnd], Awaitable[None]],
        *,
        cfg: Config,
        state: Callable[[], State],
        log_id: str,
        poll_s: float,
        grace_s: float,
    ) -> None:
        self._report = report
        self._on_end = on_end
        self.cfg = cfg
        self.state = state
        self.log_id = log_id
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.root = cfg.slurm.shared_root or cfg.paths.state
        self.layout = StateLayout(self.root, log_id)
        self._runs: dict[int, _Attempt] = {}
        self._trouble: dict[int, str] = {}
        self._squeue: tuple[float, list[SlurmJob]] | None = None
        self._squeue_lock = asyncio.Lock()
        self.cluster: Cluster | None = None
        """What sinfo said last; None until it answered."""
        self.cluster_error: str | None = None
        self._sinfo_at = -1e18
        self.jobs_by_state: dict[str, int] = {}

    # -- what the scheduling loop asks ------------------------------------------------------------

    @property
    def running(self) -> set[int]:
        return set(self._runs)

    @property
    def trouble(self) -> str:
        return "; ".join(f"job {job_id}: {why}" for job_id, why in sorted(self._trouble.items()))

    def holding(self) -> dict[int, tuple[int, tuple[str, ...]]]:
        """Slurm holds the resources: nothing on this box is held by a Slurm job."""
        return {}

    def sessions(self) -> set[int]:
        return set()

    def script_for(self, started: JobStarted) -> JobStarted:
        """The attempt as it will be submitted: its command is its sbatch script."""
        job = self.state().jobs.get(started.job_id)
        spec = job.spec if job is not None else {}
        nodes = int(spec.get("nodes") or 1)
        gpus = spec.get("gpus")
        options = spec.get("slurm") if isinstance(spec.get("slurm"), dict) else {}
        s = self.cfg.slurm
        script = batch_script(
            started,
            ScriptOptions(
                name=job_name(self.log_id, started.job_id, started.attempt),
                nodes=nodes,
                gpus_per_node=int(gpus) if isinstance(gpus, int) else 0,
                master_port=int(started.env.get("MASTER_PORT", "29500")),
                partition=s.partition,
                account=s.account,
                qos=s.qos,
                time=slurm_time(started.timeout_s) or s.time_limit,
                job_options={str(k): str(v) for k, v in (options or {}).items()},
                sbatch_args=s.sbatch_args,
            ),
        )
        return started.model_copy(update={"command": script})

    async def launch(self, started: JobStarted) -> None:
        w = Watch.of(started)
        a = self._attempt(w, started)
        a.task = asyncio.create_task(self._go(a), name=f"slurm-{a.w.job_id}")

    async def adopt(self, run: Adoptable, boot_id: str) -> None:
        job = self.state().jobs.get(run.job_id)
        current = job.run if job is not None else None
        started = None
        if current is not None and current.attempt == run.attempt:
            started = JobStarted(
                job_id=run.job_id,
                attempt=run.attempt,
                gpu_uuids=current.gpu_uuids,
                gpu_indices=current.gpu_indices,
                argv=current.argv,
                env=current.env,
                unset_env=current.unset_env,
                command=current.command,
                run_dir=current.run_dir,
                output_dir=current.output_dir,
                log=current.log,
                inputs=current.inputs,
                timeout_s=current.timeout_s,
                secrets=current.secrets,
            )
        a = self._attempt(adopted_watch(run), started)
        a.slurm_id = current.slurm_job_id if current is not None else None
        a.task = asyncio.create_task(self._go(a), name=f"slurm-{run.job_id}")

    def cancel(self, job_id: int, why: str = "cancel") -> bool:
        a = self._runs.get(job_id)
        if a is None:
            return False
        if a.w.cancel is None:
            a.w.cancel = why
            if a.slurm_id is not None:
                asyncio.get_running_loop().create_task(self._scancel(a))
        return True

    def pause(self, job_id: int) -> bool:
        """As for a local run: the pause file in the run folder (on the shared root, which every
        rank's pause callback watches) makes it save a checkpoint at its next step and exit."""
        a = self._runs.get(job_id)
        if a is None:
            return False
        a.w.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (a.w.run_dir / PAUSE_FILE).touch()
        a.paused = True
        return True

    async def stop(self, *, stop_runs: bool, wait_s: float = 0.0) -> None:
        """Daemon shutdown: Slurm jobs go on unless `stop_runs`; the next daemon re-adopts them."""
        if stop_runs:
            for job_id in list(self._runs):
                self.cancel(job_id, "shutdown")
            waits = [a.task for a in self._runs.values() if a.task is not None]
            if waits and wait_s > 0:
                await asyncio.wait(waits, timeout=wait_s)
        for a in list(self._runs.values()):
            if a.task is not None:
                a.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await a.task
        self._runs.clear()

    async def refresh_cluster(self) -> None:
        """sinfo every `[slurm] poll_s`, for /v1/status and /metrics; a failure is shown, never raised."""
        now = time.monotonic()
        if now - self._sinfo_at < self.cfg.slurm.poll_s:
            return
        self._sinfo_at = now
        try:
            out = await _run("sinfo", "--json")
            self.cluster, self.cluster_error = cluster_summary(out), None
        except (OSError, ValueError, RuntimeError) as e:
            self.cluster_error = f"sinfo failed: {e}"

    # -- one attempt ----------------------------------------------------------------------------

    def _attempt(self, w: Watch, started: JobStarted | None) -> _Attempt:
        a = _Attempt(w, job_name(self.log_id, w.job_id, w.attempt), started)
        self._runs[w.job_id] = a
        return a

    async def _go(self, a: _Attempt) -> None:
        w = a.w
        try:
            error = None
            if a.slurm_id is None:
                error = await self._submit_once(a)
            if error is None:
                await self._watch(a)
            await self._finish(a, error)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an attempt must end with a record, whatever broke here
            log.exception("job %d attempt %d: the Slurm executor failed", w.job_id, w.attempt)
            await self._finish(a, f"the daemon's Slurm executor failed: {e}")

    async def _submit_once(self, a: _Attempt) -> str | None:
        """Find the attempt's job, or submit it; then record its id. Returns why it cannot run."""
        w = a.w
        found = await self._find(a)
        if found is None:
            if a.started is None:
                return "the daemon lost the attempt's command before submitting it"
            try:
                secrets = await asyncio.to_thread(resolve_secrets, a.started.secrets, os.environ)
            except SecretError as e:
                return str(e)
            w.log_offset = await asyncio.to_thread(self._prepare, a.started)
            submitted = await self._sbatch(w, secrets)
            if isinstance(submitted, str):
                return submitted
            found = submitted
            self._squeue = None  # an answer from before the submission does not know it
            log.info("job %d attempt %d: Slurm job %d submitted", w.job_id, w.attempt, found)
            if os.environ.get(_EXIT_AFTER_SBATCH):
                os._exit(137)
        else:
            info = read_json(w.run_dir / SUBMIT_FILE) or {}
            w.log_offset = int(info.get("log_offset", w.log_offset))
            log.info("job %d attempt %d: found Slurm job %d again", w.job_id, w.attempt, found)
        a.slurm_id = found
        event = SlurmSubmitted(
            job_id=w.job_id, attempt=w.attempt, slurm_job_id=found, name=a.name, log_offset=w.log_offset
        )
        news = [NewEvent(event, run_key(w.job_id, w.attempt, "slurm-submitted"))]
        await self._record(w, "its Slurm job id", lambda: self._report(w.job_id, news))
        if w.cancel is not None:
            await self._scancel(a)
        return None

    async def _find(self, a: _Attempt) -> int | None:
        """The attempt's Slurm job if it was submitted: by name in squeue, else by the id its batch
        script wrote when it started (Slurm may have forgotten a job that ended long ago)."""
        jobs = await self._jobs(fresh=True)
        mine = [j.job_id for j in jobs if j.name == a.name]
        if mine:
            return max(mine)
        info = await asyncio.to_thread(read_json, a.w.run_dir / STARTED_FILE)
        job_id = (info or {}).get("slurm_job_id")
        return job_id if isinstance(job_id, int) else None

    def _prepare(self, started: JobStarted) -> int:
        """The run folder on the shared root, the datasets there, the script; the log's offset."""
        run_dir, output_dir, log_path = Path(started.run_dir), Path(started.output_dir), Path(started.log)
        for folder in (run_dir, output_dir, log_path.parent):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        local = StateLayout(self.cfg.paths.state, self.log_id)
        for sha in started.inputs.values():
            src, dst = local.converted_dataset(sha), self.layout.converted_dataset(sha)
            if src != dst and src.exists() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                part = dst.with_suffix(".part")
                shutil.copyfile(src, part)
                part.replace(dst)
        (run_dir / SCRIPT_FILE).write_text(started.command)
        header = f"\n==> llmtraind: job {started.job_id} attempt {started.attempt}: sbatch {run_dir / SCRIPT_FILE}\n"
        with open(log_path, "ab") as f:
            offset = f.tell()
            f.write(header.encode())
        (run_dir / SUBMIT_FILE).write_text(json.dumps({"log_offset": offset}))
        return offset

    async def _sbatch(self, w: Watch, secrets: Mapping[str, str]) -> int | str:
        """sbatch passes its environment to the job: the secrets go there, never into the script."""
        env = {k: v for k, v in os.environ.items() if k not in _UNSET_FOR_JOBS} | dict(secrets)
        try:
            proc = await asyncio.create_subprocess_exec(
                "sbatch",
                "--parsable",
                str(w.run_dir / SCRIPT_FILE),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=w.run_dir,
                env=env,
            )
        except OSError as e:
            return f"cannot run sbatch: {e}"
        out, err = await proc.communicate()
        text = err.decode(errors="replace").strip()
        if proc.returncode != 0:
            return f"sbatch refused the job: {text or f'exit status {proc.returncode}'}"
        first = out.decode().strip().split(";")[0]
        if not first.isdigit():
            return f"sbatch gave no job id: {out.decode()!r} {text}"
        return int(first)

    async def _scancel(self, a: _Attempt) -> None:
        if a.cancelled or a.slurm_id is None:
            return
        a.cancelled = True
        try:
            await _run("scancel", str(a.slurm_id))
        except (OSError, RuntimeError) as e:
            a.cancelled = False
            log.warning("job %d: scancel %d failed, trying again: %s", a.w.job_id, a.slurm_id, e)

    async def _jobs(self, *, fresh: bool = False) -> list[SlurmJob]:
        """squeue --json, shared by every attempt's watcher for up to a second."""
        async with self._squeue_lock:
            now = time.monotonic()
            if fresh or self._squeue is None or now - self._squeue[0] >= min(1.0, self.cfg.slurm.poll_s):
                jobs = parse_squeue(await _run("squeue", "--json"))
                self._squeue = (now, jobs)
                counts: dict[str, int] = {}
                for j in jobs:
                    counts[j.state] = counts.get(j.state, 0) + 1
                self.jobs_by_state = counts
            return self._squeue[1]

    async def _watch(self, a: _Attempt) -> None:
        """Until Slurm says the job ended, or no longer knows it."""
        w = a.w
        next_ask = 0.0
        while True:
            if time.monotonic() >= next_ask:
                next_ask = time.monotonic() + self.cfg.slurm.poll_s
                try:
                    jobs = await self._jobs()
                except (OSError, ValueError, RuntimeError) as e:
                    self._trouble[w.job_id] = f"cannot ask Slurm about job {a.slurm_id}: {e}"
                    await asyncio.sleep(_RETRY_S)
                    continue
                self._trouble.pop(w.job_id, None)
                job = next((j for j in jobs if j.job_id == a.slurm_id), None)
                a.last = job
                if job is not None:
                    await self._seen(a, job)
                if w.cancel is not None and not a.cancelled:
                    await self._scancel(a)
                if job is None or not job.active:
                    await self._poll(w, final=True)
                    return
            await self._poll(w, final=False)
            await asyncio.sleep(min(self.poll_s, self.cfg.slurm.poll_s))

    async def _seen(self, a: _Attempt, job: SlurmJob) -> None:
        key = (job.state, job.reason, job.nodes)
        if key == a.seen:
            return
        a.seen = key
        assert a.slurm_id is not None
        w = a.w
        event = SlurmJobState(
            job_id=w.job_id,
            attempt=w.attempt,
            slurm_job_id=a.slurm_id,
            state=job.state,
            reason=job.reason,
            nodes=job.nodes,
        )
        tag = f"slurm:{a.slurm_id}:{job.state}:{job.reason}:{job.nodes}"
        seen = [NewEvent(event, run_key(w.job_id, w.attempt, tag))]
        await self._record(w, "its Slurm state", lambda: self._report(w.job_id, seen))

    async def _poll(self, w: Watch, *, final: bool) -> None:
        events = await asyncio.to_thread(observe, w, final)
        if events:
            await self._record(w, "its progress", lambda: self._report(w.job_id, events))

    async def _record(self, w: Watch, what: str, write: Callable[[], Awaitable[None]]) -> None:
        await record_until_taken(self._trouble, w, what, write, first_s=_RETRY_S, max_s=_RETRY_S)

    async def _finish(self, a: _Attempt, error: str | None) -> None:
        w = a.w
        end = await asyncio.to_thread(self._collect, a, error)
        try:
            await self._record(w, "its end", lambda: self._on_end(w.job_id, w.attempt, end))
        finally:
            self._trouble.pop(w.job_id, None)
            self._runs.pop(w.job_id, None)

    def _collect(self, a: _Attempt, error: str | None) -> RunEnd:
        w = a.w
        tail = read_tail(w.log, w.log_offset)
        artifacts = scan_artifacts(w.output_dir)
        if error is not None:
            return RunEnd(
                None, w.cancel if w.cancel == "cancel" else None, error, tail, artifacts, w.output_dir, None
            )
        assert a.slurm_id is not None
        info = read_json(w.run_dir / EXIT_FILE)
        e = ended(a.last, a.slurm_id, info)
        stopped = e.stopped
        if stopped == "cancel" and w.cancel == "shutdown":
            stopped = "shutdown"
        started, finished = (info or {}).get("started"), (info or {}).get("ended")
        duration = finished - started if isinstance(started, float) and isinstance(finished, float) else None
        return RunEnd(
            e.returncode, stopped, e.error, tail, artifacts, w.output_dir, duration, failure=e.failure
        )


async def _run(*argv: str) -> str:
    """A Slurm client command's output; RuntimeError with its message when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"{argv[0]} did not answer within 60 s") from None
    if proc.returncode != 0:
        raise RuntimeError(err.decode(errors="replace").strip() or f"{argv[0]} exit status {proc.returncode}")
    return out.decode(errors="replace")


def summary(executor: SlurmExecutor | None) -> Mapping[str, object] | None:
    """The cluster as /v1/status shows it."""
    if executor is None:
        return None
    c = executor.cluster
    return {
        "partitions": list(c.partitions) if c else [],
        "nodes": c.nodes if c else None,
        "nodes_up": c.nodes_up if c else None,
        "cpus": c.cpus if c else None,
        "gpus": c.gpus if c else None,
        "jobs": dict(sorted(executor.jobs_by_state.items())),
        "error": executor.cluster_error,
    }
