"""From the folded state to the scheduler's questions, and from its plan to events and commands.

Pure: the adapters hand in what they saw (GPUs, the time, free ports, log sizes) and get back the
events to record and, for each job that starts, the exact command. The daemon records these
before it acts, so the log alone explains every start, failure and wait.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from daemon.core.events import GpuShared, JobFailed, JobPreempted, JobStarted, JobsWaiting
from daemon.core.jobs import DatasetRef, JobSpec, ModelRef
from daemon.core.layout import StateLayout
from daemon.core.pausing import PAUSE_CALLBACK, PAUSE_FILE, PAUSE_FILE_ENV, PAUSE_PLUGIN, pausable
from daemon.core.state import WAITING, Job, State
from daemon.runs.outcome import RESUMABLE_TASKS
from daemon.runs.scheduler import Demand, GpuView, Lease, Phase, Placement, Plan, place
from daemon.runs.swift.artifacts import final_checkpoint
from daemon.runs.swift.command import CommandError, RunInputs, SwiftCommand, build_command

__all__ = [
    "Box",
    "Decisions",
    "Environment",
    "Launch",
    "RunPaths",
    "decide",
    "demands",
    "leases",
    "run_paths",
]


@dataclass(frozen=True)
class RunPaths:
    """Where one attempt of a job lives in the state directory."""

    run_dir: Path
    output_dir: Path
    log: Path


def run_paths(layout: StateLayout, job_id: int, attempt: int, log: Path | None = None) -> RunPaths:
    """One log per job, appended by every attempt (its byte offsets are what the API pages and
    streams), so a later attempt keeps the `log` its first one recorded; a fresh directory per
    attempt, because swift refuses or silently skips existing ones. Both are named by the event
    log's id too, so a new log's job ids never meet an old log's folders."""
    run_dir = layout.job_runs(job_id) / str(attempt)
    return RunPaths(run_dir, run_dir / "output", log or layout.job_log(job_id))


@dataclass(frozen=True)
class Launch:
    """What the runner needs to start one attempt, decided and recorded as `started`."""

    job_id: int
    started: JobStarted


@dataclass(frozen=True)
class Decisions:
    failed: list[JobFailed]
    waiting: JobsWaiting | None
    """Only the reasons that changed; None when none did."""
    launches: list[Launch]
    plan: Plan
    preempted: list[JobPreempted] = field(default_factory=list)
    """Preemptible runs to pause so that a higher-priority job gets their GPUs (or CPU slot)."""


@dataclass(frozen=True)
class Box:
    """What the adapters saw of the machine for one decision."""

    gpus: Sequence[GpuView]
    managed: bool
    """Whether this box manages GPUs at all: a job that does not say `gpus` then needs one."""
    cpu_slots: int
    now: float
    stop_grace_s: float
    disk_short: str | None = None
    """Why no run may start now (`[runs] min_free_disk_gib`); the jobs that could start wait with it."""
    cpu_count: int = 1
    """Cores the CPU slots share: a CPU run gets cpu_count // cpu_slots threads, since PyTorch
    would otherwise start one per core in every run and oversubscribed OpenMP threads spin."""
    cluster: bool = False
    """Runs go to a cluster scheduler (Slurm), which places them: every ready job starts at once as
    far as this box is concerned, with no GPU or thread count of this box's."""


@dataclass(frozen=True)
class Environment:
    """What an attempt's command is made of besides the job: the adapters fill it in."""

    layout: StateLayout
    python: str
    offline: bool
    free_port: Callable[[], int]
    """A TCP port nobody listens on now (torchrun's rendezvous binds it)."""


def _timeout(job: Job) -> float | None:
    value = job.spec.get("timeout_s")
    return float(value) if isinstance(value, int | float) else None


def _demand(state: State, job: Job, managed: bool) -> Demand:
    after: list[int] = []
    missing: list[str] = []
    for ref in job.after:
        dep = state.find_job(ref)
        if dep is None or dep.id == job.id:
            missing.append(ref)
        else:
            after.append(dep.id)
    blocked = [job.blocked] if job.blocked else []
    if missing:
        names = ", ".join(missing)
        blocked.append(f"after job {names}, which was not submitted yet (drop it, or cancel this job)")
    gpu_ids = tuple(str(g) for g in job.gpu_ids)
    gpus = len(gpu_ids) if gpu_ids else job.gpus if job.gpus is not None else int(managed)
    return Demand(
        id=job.id,
        name=job.name,
        priority=job.priority,
        order=job.submitted_seq,
        gpus=gpus,
        gpu_ids=gpu_ids,
        min_free_memory_mib=job.min_free_memory_mib,
        after=tuple(after),
        blocked="; ".join(blocked) or None,
        timeout_s=_timeout(job),
    )


def demands(state: State, managed: bool) -> list[Demand]:
    return [_demand(state, job, managed) for job in state.jobs.values() if job.state in WAITING]


def leases(state: State) -> tuple[dict[str, Lease], int]:
    """GPU UUID -> the lease of the running job on it, and the CPU slots running jobs hold."""
    held: dict[str, Lease] = {}
    cpu = 0
    for job in state.jobs.values():
        run = job.run
        if job.state != "running" or run is None:
            continue
        if not run.gpu_uuids:
            cpu += 1
        for uuid in run.gpu_uuids:
            held[uuid] = Lease(job.id, run.ends_by)
    return held, cpu


def shared_gpus(state: State, gpus: Sequence[GpuView]) -> list[GpuShared]:
    """Running jobs with a foreign process on one of their GPUs that their run has not recorded yet:
    an out-of-memory there may be somebody else's doing, so it counts as transient (retried)."""
    foreign = {g.uuid: g.index for g in gpus if g.foreign_processes}
    found = []
    for job in state.jobs.values():
        run = job.run
        if job.state != "running" or run is None:
            continue
        new = sorted({foreign[u] for u in run.gpu_uuids if u in foreign} - set(run.gpu_shared))
        if new:
            found.append(GpuShared(job_id=job.id, attempt=run.attempt, gpus=new))
    return found


def _phases(state: State, wanted: Sequence[Demand]) -> dict[int, tuple[str, Phase]]:
    phases: dict[int, tuple[str, Phase]] = {}
    for d in wanted:
        for dep in d.after:
            job = state.jobs[dep]
            phases[dep] = (job.name, job.state)
    return phases


def decide(state: State, box: Box, env: Environment) -> Decisions:
    """What to record now: jobs that can never run, changed waiting reasons, and the starts."""
    wanted = demands(state, box.managed)
    if box.cluster:
        wanted = [replace(d, gpus=0, gpu_ids=(), min_free_memory_mib=None) for d in wanted]
    held, cpu_used = leases(state)
    plan = place(wanted, box.gpus, held, _phases(state, wanted), box.cpu_slots, cpu_used, box.now)
    failed = [JobFailed(job_id=job_id, reason=reason) for job_id, reason in plan.fail.items()]
    by_uuid = {g.uuid: g.index for g in box.gpus}
    launches: list[Launch] = []
    waiting = dict(plan.waiting)
    if box.disk_short is not None:
        waiting |= {placement.job_id: box.disk_short for placement in plan.start}
        plan = replace(plan, start=())
    for placement in plan.start:
        job = state.jobs[placement.job_id]
        started = _start(state, job, placement, box, env, by_uuid)
        if isinstance(started, str):
            failed.append(JobFailed(job_id=job.id, reason=started))
        else:
            launches.append(Launch(job.id, started))
    changed = {
        str(job_id): reason for job_id, reason in waiting.items() if state.jobs[job_id].reason != reason
    }
    preempted = [] if box.disk_short is not None else _preemptions(state, wanted, plan, box, held, cpu_used)
    return Decisions(failed, JobsWaiting(reasons=changed) if changed else None, launches, plan, preempted)


def _pausable_now(job: Job) -> bool:
    return job.pause_requested is None and job.run is not None and pausable(job.run.argv)


def _preemptions(
    state: State, wanted: Sequence[Demand], plan: Plan, box: Box, held: Mapping[str, Lease], cpu_used: int
) -> list[JobPreempted]:
    """For each waiting job, highest priority first, that only waits for GPUs (or a CPU slot): the
    lowest-priority preemptible runs of lower priority whose resources, with the free ones, are enough.
    A job some run is already being paused for waits for that pause."""
    given = {u for p in plan.start for u in p.gpu_uuids}
    free_gpus = sum(
        1 for g in box.gpus if g.uuid not in held and g.uuid not in given and not g.foreign_processes
    )
    free_cpu = box.cpu_slots - cpu_used - sum(1 for p in plan.start if not p.gpu_uuids)
    running = [j for j in state.jobs.values() if j.state == "running" and j.run is not None]
    served = {j.preempted_by for j in running if j.preempted_by is not None}
    candidates = sorted(
        (j for j in running if j.spec.get("preemptible") is True and _pausable_now(j)),
        key=lambda j: (j.priority, -(j.run.placed_ts if j.run is not None else 0.0)),
    )
    out: list[JobPreempted] = []
    taken: set[int] = set()
    for d in sorted(wanted, key=lambda d: (-d.priority, d.order)):
        if d.id in served or d.id not in plan.waiting or d.blocked or d.gpu_ids:
            continue
        if any(state.jobs[a].state != "succeeded" for a in d.after):
            continue
        need, have = (d.gpus, free_gpus) if d.gpus > 0 else (1, free_cpu)
        chosen: list[Job] = []
        for victim in candidates:
            if have >= need:
                break
            run = victim.run
            if victim.id in taken or victim.priority >= d.priority or run is None:
                continue
            if bool(run.gpu_uuids) != (d.gpus > 0):
                continue
            chosen.append(victim)
            have += len(run.gpu_uuids) or 1
        if have < need or not chosen:
            continue
        for victim in chosen:
            taken.add(victim.id)
            assert victim.run is not None
            what = f"{len(victim.run.gpu_uuids)} GPU(s)" if victim.run.gpu_uuids else "its CPU slot"
            reason = (
                f"job {d.name} (priority {d.priority}) needs {what} that job {victim.name} "
                f"(priority {victim.priority}, preemptible) holds"
            )
            out.append(JobPreempted(job_id=victim.id, attempt=victim.run.attempt, by=d.id, reason=reason))
    return out


def _parent_output(state: State, ref: ModelRef | None, what: str) -> Path | None | str:
    """The directory an `@JOB` reference names now, None for other references, or why it cannot."""
    if ref is None or ref.kind != "job":
        return None
    parent = state.find_job(ref.ref)
    if parent is None or parent.state != "succeeded":
        return f"{what} @{ref.ref}: job {ref.ref} has not succeeded"
    path = parent.final_checkpoint if what == "adapters" else parent.final_model
    if path is None:
        kind = "checkpoint" if what == "adapters" else "merged or full model"
        return f"{what} @{ref.ref}: job {ref.ref} succeeded but left no {kind}"
    return Path(path)


def _resume_from(job: Job) -> Path | None:
    """Where a training job's next attempt continues, however the last one ended (a failure, a
    cancel, a daemon that stopped it or vanished, a reboot): the checkpoint recorded at a reboot,
    else the last attempt's newest complete checkpoint, else where that attempt itself continued
    from; nothing when a person asked to start over."""
    if job.spec.get("task") not in RESUMABLE_TASKS or job.from_scratch:
        return None
    if job.resume_from is not None:
        return Path(job.resume_from)
    run = job.run
    if run is None:
        return None
    best = final_checkpoint(run.artifacts)
    if best is not None:
        return Path(best.path)
    return None if run.resume_from is None else Path(run.resume_from)


def _with_value(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """`flag value` added to argv, or `value` added to the values the job already gave `flag`."""
    out = list(argv)
    if flag not in out:
        return [*out, flag, value]
    end = out.index(flag) + 1
    while end < len(out) and not out[end].startswith("--"):
        end += 1
    return [*out[:end], value, *out[end:]]


def _pausable(command: SwiftCommand, run_dir: Path) -> SwiftCommand:
    """A training run that saves a checkpoint and stops when its run folder gets a pause file."""
    argv = _with_value(command.argv, "--external_plugins", str(PAUSE_PLUGIN))
    argv = _with_value(argv, "--callbacks", PAUSE_CALLBACK)
    env = {**command.env, PAUSE_FILE_ENV: str(run_dir / PAUSE_FILE)}
    return replace(command, argv=tuple(argv), env=env)


def _cpu_threads(env: Mapping[str, str], placement: Placement, box: Box) -> dict[str, str]:
    if placement.gpu_uuids:
        return dict(env)
    threads = str(max(1, box.cpu_count // max(1, box.cpu_slots)))
    return {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def _start(
    state: State,
    job: Job,
    placement: Placement,
    box: Box,
    env: Environment,
    by_uuid: Mapping[str, int],
) -> JobStarted | str:
    """The attempt's JobStarted, or why its command cannot be built."""
    spec = JobSpec.model_validate(job.spec)
    resolved: dict[str, Path | None] = {}
    for what, ref in (
        ("model", spec.model),
        ("adapters", spec.adapters),
        ("reward_model", spec.reward_model),
    ):
        found = _parent_output(state, ref, what)
        if isinstance(found, str):
            return found
        resolved[what] = found
    attempt = job.attempts + 1
    paths = run_paths(env.layout, job.id, attempt, None if job.run is None else Path(job.run.log))
    inputs = {name: sha for name, sha in job.inputs.items() if sha is not None}

    def files(refs: Sequence[DatasetRef]) -> tuple[tuple[Path, int | None], ...]:
        return tuple((env.layout.converted_dataset(inputs[r.name]), r.sample) for r in refs if not r.hub)

    def rows(refs: Sequence[DatasetRef]) -> int | None:
        """What swift reads: `#N` samples N rows (repeating a smaller set); a hub set is unknown."""
        counts = [
            r.sample or state.datasets[inputs[r.name]].rows
            for r in refs
            if not r.hub and inputs.get(r.name) in state.datasets
        ]
        return sum(counts) if len(counts) == len(refs) else None

    run_inputs = RunInputs(
        output_dir=paths.output_dir,
        python=env.python,
        master_port=env.free_port(),
        model_dir=resolved["model"],
        adapters_dir=resolved["adapters"],
        reward_model_dir=resolved["reward_model"],
        datasets=files(spec.datasets),
        rows=rows(spec.datasets),
        val_datasets=files(spec.val_datasets),
        gpu_uuids=placement.gpu_uuids,
        offline=env.offline,
        cache_dir=env.layout.root / "cache",
        resume_from=_resume_from(job),
    )
    try:
        command = build_command(spec, run_inputs)
    except CommandError as e:
        return f"cannot build the swift command: {e}"
    if not box.cluster:
        command = replace(command, env=_cpu_threads(command.env, placement, box))
    if spec.swift_command in ("sft", "pt", "rlhf"):
        command = _pausable(command, paths.run_dir)
    timeout = _timeout(job)
    ends_by = None if timeout is None else box.now + timeout + box.stop_grace_s
    return JobStarted(
        job_id=job.id,
        attempt=attempt,
        gpu_uuids=list(placement.gpu_uuids),
        gpu_indices=[by_uuid[u] for u in placement.gpu_uuids],
        argv=list(command.argv),
        env=dict(command.env),
        unset_env=list(command.unset_env),
        secrets=dict(command.secrets),
        command=command.render(),
        run_dir=str(paths.run_dir),
        output_dir=str(paths.output_dir),
        log=str(paths.log),
        inputs=inputs,
        resume_from=None if run_inputs.resume_from is None else str(run_inputs.resume_from),
        timeout_s=timeout,
        ends_by=ends_by if ends_by is None or math.isfinite(ends_by) else None,
    )
