"""The scheduling loop: on every change in the log (and every `[runs] schedule_s`), ask the kept
`dispatch.Queue` what to do, record it, then act on it through the runner. The queue follows the
log as a projector subscriber, so a pass with nothing changed costs next to nothing.

Decisions are recorded before they are acted on: a JobStarted is durable before its supervisor
is spawned, so a crash in between leaves a run the next daemon can account for (its supervisor
file tells whether it started). Observations come back from the runner and are recorded on
the job's stream with idempotency keys, so recording one twice (after a restart) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemon.core.config import Config
from daemon.core.deployment import serves
from daemon.core.disk import disk_view
from daemon.core.events import CancelRequested, JobPreempted, NewEvent, PauseRequested, Recorded
from daemon.core.gpus import GpuProbe, GpuStatus
from daemon.core.layout import StateLayout
from daemon.core.state import State
from daemon.core.streams import SCHEDULER_STREAM, Append, job_stream, run_key
from daemon.log.store import EventStore
from daemon.runs.dispatch import Box, Decisions, Environment, Queue, shared_gpus
from daemon.runs.model_code import CodeCheck, refuse_model_code
from daemon.runs.pruner import Pruner
from daemon.runs.runner import Adoptable, Runner
from daemon.runs.scheduler import GpuView
from daemon.runs.slurm.executor import SlurmExecutor
from daemon.runs.supervise import boot_id

__all__ = ["Scheduling", "held_by_runs"]

log = logging.getLogger(__name__)

_WAKES = frozenset(
    {
        "JobSubmitted",
        "DatasetAccepted",
        "DuplicateDropped",
        "RetryRequested",
        "ResumeRequested",
        "RunExited",
        "RunInterrupted",
        "JobFailed",
        "DaemonStarted",
    }
)
"""Events after which a queued job may be able to start (or must fail)."""


_CLUSTER_SLOTS = 1_000_000
"""Jobs submitted to Slurm at once: Slurm queues them, so the daemon does not limit them."""


def free_port() -> int:
    """A port the kernel calls free now; torchrun binds it a few seconds later, so a clash is
    possible but rare, and is classified as `port_in_use`, a transient failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ours(pid: int, sessions: set[int]) -> bool:
    try:
        return os.getsid(pid) in sessions
    except OSError:  # gone, or in another pid namespace: not ours to vouch for
        return False


def gpu_views(gpus: Sequence[GpuStatus], sessions: set[int]) -> list[GpuView]:
    """The probe's GPUs as placement sees them: a process outside our runs' sessions is foreign."""
    return [
        GpuView(
            index=g.index,
            uuid=g.uuid,
            name=g.name,
            memory_total_mib=g.memory_total_mib,
            memory_used_mib=g.memory_used_mib,
            foreign_processes=sum(not _ours(p.pid, sessions) for p in g.processes),
        )
        for g in gpus
    ]


def held_by_runs(
    views: Sequence[GpuView],
    cpu_slots: int,
    state: State,
    holding: Mapping[int, tuple[int, tuple[str, ...]]],
) -> tuple[list[GpuView], int]:
    """The GPUs and CPU slots left for placement once the runs whose processes live keep theirs.

    `dispatch` counts what the log says is running; a live run the log does not count as running
    (its end, or a JobFailed, was recorded while its process went on) holds its slot or GPUs all the
    same: slots and GPUs are held by what runs, not by what the log managed to say. Its GPUs show
    as taken by a process placement may not share."""
    cpu, gpus = 0, set[str]()
    for job_id, (attempt, uuids) in holding.items():
        job = state.jobs.get(job_id)
        run = job.run if job is not None else None
        if job is not None and job.state == "running" and run is not None and run.attempt == attempt:
            continue  # dispatch counts it already
        if uuids:
            gpus.update(uuids)
        else:
            cpu += 1
    held = [replace(g, foreign_processes=g.foreign_processes + 1) if g.uuid in gpus else g for g in views]
    return held, max(0, cpu_slots - cpu)


class Scheduling:
    def __init__(
        self,
        cfg: Config,
        store: EventStore,
        state: Callable[[], State],
        probe: GpuProbe,
        runner: Runner | SlurmExecutor,
        model_code: CodeCheck | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.state = state
        self.probe = probe
        self.layout = StateLayout(cfg.paths.state, store.log_id)
        self.runner = runner
        self.model_code = model_code
        """Checks a model folder for code (`daemon.intake.validate.remote_code`) before a run starts."""
        self.last_tick = time.monotonic()
        """When the loop last came round: the watchdog pings only while this is recent."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gpus: list[GpuStatus] = []
        if isinstance(runner, Runner):
            runner.hang_factor, runner.hang_min_s = cfg.runs.hang_factor, cfg.runs.hang_min_s
        self.pruner = Pruner(store, self.layout, lambda: self.cfg.runs.keep_checkpoints)
        self._prune_due = True
        """Checkpoints appeared or a run ended: the retention rules may delete some."""
        self._leftovers = True
        self._probed_at = -1e18
        self.queue = Queue()
        """The queue as the last decision left it, kept from the recorded events: a pass places only
        what changed, and none happens while nothing did."""

    def reconfigure(self, cfg: Config) -> None:
        """A reload: the new [runs], [gpus] cpu_slots and [swift] apply to the next decision and
        the next run; runs already going keep the grace they were started with."""
        self.cfg = cfg
        self.runner.grace_s, self.runner.poll_s = cfg.runs.stop_grace_s, cfg.runs.poll_s
        if isinstance(self.runner, Runner):  # Slurm watches no steps of its own
            self.runner.hang_factor, self.runner.hang_min_s = cfg.runs.hang_factor, cfg.runs.hang_min_s
        self.queue.forget()
        self._wake.set()

    @property
    def healthy(self) -> bool:
        """The loop came round recently (it does at least every `[runs] schedule_s`)."""
        return (
            self._task is not None
            and not self._task.done()
            and (time.monotonic() - self.last_tick < 3 * self.cfg.runs.schedule_s + 10)
        )

    def on_recorded(self, state: State, batch: list[Recorded]) -> None:
        """Projector subscriber: follow the queue, wake the loop, and pass cancels of running jobs to
        the runner."""
        if self.queue.observe(state, batch):
            self._wake.set()
        for rec in batch:
            ev = rec.event
            if isinstance(ev, CancelRequested):
                job = state.jobs.get(ev.job_id)
                if job is not None and job.state == "running":
                    self.runner.cancel(ev.job_id)
            if isinstance(ev, PauseRequested | JobPreempted):
                job = state.jobs.get(ev.job_id)
                if job is not None and job.state == "running":
                    self.runner.pause(ev.job_id)
            if ev.type in _WAKES:
                self._wake.set()
            if ev.type in ("ArtifactsFound", "RunExited"):
                self._prune_due = True

    async def start(self) -> None:
        """Re-adopt the runs the log says are running, then start placing."""
        me = boot_id()
        for job in self.state().jobs.values():
            run = job.run
            if job.state != "running" or run is None or job.id in self.runner.running:
                continue
            last = run.progress.step if run.progress is not None and run.progress.kind == "train" else None
            adoptable = Adoptable(
                job_id=job.id,
                attempt=run.attempt,
                run_dir=Path(run.run_dir),
                output_dir=Path(run.output_dir),
                log=Path(run.log),
                log_offset=run.log_offset,
                pid=run.pid,
                start_ticks=run.start_ticks,
                boot_id=run.boot_id,
                session=run.session,
                last_step=last,
                serves=serves(run.argv),
                gpu_uuids=tuple(run.gpu_uuids),
            )
            await self.runner.adopt(adoptable, me)
            if job.cancel_requested:
                self.runner.cancel(job.id)
            elif job.pause_requested is not None:
                self.runner.pause(job.id)
        self._task = asyncio.create_task(self._loop(), name="scheduling")

    async def stop(self, wait_s: float) -> None:
        """Stop placing; with `[daemon] on_stop = "stop"`, stop the runs too, recording the ends
        seen within `wait_s` (the next daemon records the others from their exit files)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.runner.stop(stop_runs=self.cfg.daemon.on_stop == "stop", wait_s=wait_s)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.runs.schedule_s)
            self._wake.clear()
            self.last_tick = time.monotonic()
            try:
                await self.schedule_once()
            except Exception:
                self.queue.forget()  # what it decided may not be recorded
                log.exception("placement failed; trying again in %.0f s", self.cfg.runs.schedule_s)
            if self._prune_due:
                self._prune_due = False
                try:
                    await self.pruner.prune_once(self.state(), leftovers=self._leftovers)
                    self._leftovers = False
                except Exception:
                    log.exception("pruning checkpoints failed; trying again on the next change")

    def disk(self) -> dict[str, Any]:
        """The state folder's free space against `[runs] min_free_disk_gib` (a statvfs: cheap enough
        for every decision and every API read)."""
        where = self.cfg.paths.state
        try:
            usage = shutil.disk_usage(where)
        except OSError as e:
            return {"path": str(where), "ok": False, "reason": f"disk: cannot read {where}: {e}"}
        return disk_view(usage.free, usage.total, self.cfg.runs.min_free_disk_gib, str(where))

    def last_probe(self) -> tuple[list[GpuStatus], float] | None:
        """The GPUs as the loop last probed them, and when (time.monotonic()); None before its first
        probe. Read-only: the API shows it and never probes itself."""
        return None if self._probed_at < 0 else (list(self._gpus), self._probed_at)

    async def _probe(self) -> list[GpuStatus]:
        """A fresh probe every `[runs] gpu_probe_s`. A foreign process on a running job's GPU is
        recorded (GpuShared) before the probe is shown, so the API never shows one not yet recorded."""
        now = time.monotonic()
        if now - self._probed_at >= self.cfg.runs.gpu_probe_s:
            gpus = await self.probe.snapshot()
            state = self.state()
            views = gpu_views(gpus, self.runner.sessions())
            shared = shared_gpus(state, views, self.queue.running_ids(state))
            if shared:
                await self.store.append_batch(
                    [
                        Append(
                            job_stream(e.job_id),
                            [NewEvent(e, run_key(e.job_id, e.attempt, f"shared:{e.gpus}"))],
                        )
                        for e in shared
                    ]
                )
            self._gpus, self._probed_at = gpus, now
        return self._gpus

    async def _refuse_model_code(self, decided: Decisions) -> None:
        """A model folder may have changed since intake: a start that would now load its code is
        not made, and its job fails with the refusal intake would have given."""
        if self.model_code is None or self.cfg.swift.allow_code or not decided.launches:
            return
        starts = [x.started for x in decided.launches]
        failed = await asyncio.to_thread(refuse_model_code, starts, self.model_code)
        refused = {f.job_id for f in failed}
        decided.launches[:] = [x for x in decided.launches if x.job_id not in refused]
        decided.failed.extend(failed)
        for f in failed:
            log.warning("job %d not started: %s", f.job_id, f.reason)

    async def schedule_once(self) -> None:
        gpus = await self._probe()  # also while nothing waits: /v1/gpus and /metrics show this probe
        state = self.state()
        if isinstance(self.runner, SlurmExecutor):
            await self.runner.refresh_cluster()
        slurm = self.runner if isinstance(self.runner, SlurmExecutor) else None
        self.queue.sync(state, managed=bool(gpus) and slurm is None)
        if not self.queue.demands:
            return
        views, cpu_slots = held_by_runs(
            gpu_views(gpus, self.runner.sessions()), self.cfg.gpus.cpu_slots, state, self.runner.holding()
        )
        box = Box(
            gpus=views,
            managed=bool(gpus),
            cpu_slots=cpu_slots,
            now=time.time(),
            stop_grace_s=self.cfg.runs.stop_grace_s,
            cpu_count=os.cpu_count() or 1,
            disk_short=self.disk()["reason"] or None,
        )
        python = self.cfg.swift.python or sys.executable
        env = Environment(self.layout, python, self.cfg.swift.offline, free_port)
        if slurm is not None:  # Slurm places the runs; their folders are on the shared root
            box = replace(box, gpus=[], managed=False, cpu_slots=_CLUSTER_SLOTS, cluster=True)
            env = replace(env, layout=slurm.layout, python=self.cfg.slurm.python or python)
        decided = self.queue.decide(state, box, env)
        if decided is None:
            return  # nothing changed since the last decision, which is recorded
        await self._refuse_model_code(decided)
        if slurm is not None:
            decided.launches[:] = [replace(x, started=slurm.script_for(x.started)) for x in decided.launches]
        parts = [Append(job_stream(f.job_id), [NewEvent(f)]) for f in decided.failed]
        if decided.waiting is not None:
            parts.append(Append(SCHEDULER_STREAM, [NewEvent(decided.waiting)]))
        for launch in decided.launches:
            key = run_key(launch.job_id, launch.started.attempt, "placed")
            parts.append(Append(job_stream(launch.job_id), [NewEvent(launch.started, key)]))
        for p in decided.preempted:
            key = run_key(p.job_id, p.attempt, "preempted")
            parts.append(Append(job_stream(p.job_id), [NewEvent(p, key)]))
            log.info("job %d attempt %d is preempted: %s", p.job_id, p.attempt, p.reason)
        if not parts:
            return
        await self.store.append_batch(parts)
        for launch in decided.launches:
            log.info(
                "job %d attempt %d starts: %s", launch.job_id, launch.started.attempt, launch.started.command
            )
            await self.runner.launch(launch.started)
