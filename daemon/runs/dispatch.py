"""From the folded state to the scheduler's questions, and from its plan to events and commands.

Pure: the adapters hand in what they saw (GPUs, the time, free ports, log sizes) and get back the
events to record and, for each job that starts, the exact command. The daemon records these
before it acts, so the log alone explains every start, failure and wait.

With 10,000 queued jobs, rebuilding every job's placement demand and placing the whole queue on
every event made filling a queue quadratic and an idle daemon busy. A `Queue` therefore keeps the
demands, and the last decision, from one decision to the next, updated from the recorded events
that change them; `decide` is the same decision made from scratch (a fresh Queue), which the
property tests hold the kept one to.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from daemon.core.drops import dataset_name
from daemon.core.events import (
    DatasetAccepted,
    DuplicateDropped,
    FileRejected,
    GpuShared,
    JobFailed,
    JobPreempted,
    JobStarted,
    JobSubmitted,
    JobsWaiting,
    Recorded,
)
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
    "Queue",
    "RunPaths",
    "decide",
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


def _jobs(state: State, ids: Iterable[int] | None) -> Iterable[Job]:
    """The jobs `ids` names, in id order (the log's), or every job when the caller keeps no index."""
    return state.jobs.values() if ids is None else (state.jobs[i] for i in sorted(ids))


def leases(state: State, running: Iterable[int] | None = None) -> tuple[dict[str, Lease], int]:
    """GPU UUID -> the lease of the running job on it, and the CPU slots running jobs hold;
    `running` are the running jobs' ids, when the caller keeps them."""
    held: dict[str, Lease] = {}
    cpu = 0
    for job in _jobs(state, running):
        run = job.run
        if job.state != "running" or run is None:
            continue
        if not run.gpu_uuids:
            cpu += 1
        for uuid in run.gpu_uuids:
            held[uuid] = Lease(job.id, run.ends_by)
    return held, cpu


def shared_gpus(
    state: State, gpus: Sequence[GpuView], running: Iterable[int] | None = None
) -> list[GpuShared]:
    """Running jobs with a foreign process on one of their GPUs that their run has not recorded yet:
    an out-of-memory there may be somebody else's doing, so it counts as transient (retried)."""
    foreign = {g.uuid: g.index for g in gpus if g.foreign_processes}
    found = []
    for job in _jobs(state, running) if foreign else ():
        run = job.run
        if job.state != "running" or run is None:
            continue
        new = sorted({foreign[u] for u in run.gpu_uuids if u in foreign} - set(run.gpu_shared))
        if new:
            found.append(GpuShared(job_id=job.id, attempt=run.attempt, gpus=new))
    return found


def _phases(state: State, wanted: Iterable[Demand]) -> dict[int, tuple[str, Phase]]:
    phases: dict[int, tuple[str, Phase]] = {}
    for d in wanted:
        for dep in d.after:
            job = state.jobs[dep]
            phases[dep] = (job.name, job.state)
    return phases


def decide(state: State, box: Box, env: Environment) -> Decisions:
    """What to record now: jobs that can never run, changed waiting reasons, and the starts."""
    decided = Queue().decide(state, box, env)
    assert decided is not None, "a first decision is always made"
    return decided


_Key = tuple[str, str | None, int | None]
"""What of a job other decisions depend on besides its demand: its state, and a pause under way."""


@dataclass
class _Decided:
    """The last decision, kept so that the next one redoes only what changed since."""

    waiting: dict[int, str]
    fail: dict[int, str]
    box: tuple[object, ...]
    """All that placement saw besides the queue: on an equal box an unchanged job places the same."""
    static: bool
    """Nothing started and nothing was reserved: each job's outcome then followed from its own
    demand, its dependencies and the box alone, whatever else was queued."""
    timed: bool
    """A reservation with a deadline: reasons and backfill change with the clock."""


class Queue:
    """The scheduler's standing view of the log: every waiting job's demand and the last decision.

    `observe` follows each recorded batch and marks the jobs an event may have changed: the job it
    is about, the jobs waiting for a job whose state changed, the jobs whose `after:` names a job
    just submitted, and the jobs reading a dataset name just dropped. `decide` then returns None
    when neither the marked jobs, nor the box (GPUs as probed, leases, CPU slots, the disk guard),
    nor the clock (a reservation's deadline) changed since the last decision. When the last
    decision started nothing and reserved nothing and the box is the same, nothing any job does
    changes what another one gets, so placing only the marked jobs gives the answer placing the
    whole queue would; a marked job that would start or reserve GPUs places the whole queue again.

    The kept view belongs to one State object at one seq: any other state, or a seq it did not see
    through `observe`, makes the next decision start over from the state (as `forget` does).
    """

    def __init__(self) -> None:
        self._state: State | None = None
        self._seq = -1
        self._managed = False
        self.demands: dict[int, Demand] = {}
        """Waiting jobs (queued or interrupted) by id."""
        self.running: set[int] = set()
        self._keys: dict[int, _Key] = {}
        self._refs: dict[str, set[int]] = {}
        """An `after:` reference as written -> the waiting jobs that give it."""
        self._dependents: dict[int, set[int]] = {}
        """A job -> the waiting jobs whose `after:` resolves to it."""
        self._dirty: set[int] = set()
        self._last: _Decided | None = None

    def forget(self) -> None:
        """Start over from the state at the next decision: the last one may not have been recorded."""
        self._state = None

    def running_ids(self, state: State) -> set[int] | None:
        """The running jobs' ids, when the kept view is of `state` as it is now."""
        return self.running if self._state is state and self._seq == state.last_seq else None

    def observe(self, state: State, batch: Sequence[Recorded]) -> bool:
        """Follow a batch the projector folded into `state`; True when a decision may change."""
        if self._state is not state:
            return True
        changed = False
        for rec in batch:
            if rec.seq <= self._seq:
                continue
            if rec.seq != self._seq + 1:
                self.forget()
                return True
            self._seq = rec.seq
            changed |= self._event(state, rec)
        return changed

    def _event(self, state: State, rec: Recorded) -> bool:
        ev = rec.event
        touched: set[int] = set()
        if isinstance(ev, JobsWaiting):
            return False  # only the reasons this queue decided
        if isinstance(ev, JobSubmitted):
            touched = {ev.id, *self._refs.get(ev.name, ()), *self._refs.get(str(ev.id), ())}
        elif isinstance(ev, DatasetAccepted | DuplicateDropped | FileRejected):
            names = {ev.name} if isinstance(ev, DatasetAccepted) else {dataset_name(ev.filename)}
            if isinstance(ev, DuplicateDropped) and ev.alias is not None:
                names.add(ev.alias)
            touched = {i for name in names for i in state.waiting_for.get(name, ())}
        job_id = getattr(ev, "job_id", None)
        if isinstance(job_id, int):
            touched.add(job_id)
        elif ev.type in ("DaemonStarted", "ConfigReloaded"):
            self._last = None
            return True
        return any([self._touch(state, i) for i in touched])

    def _touch(self, state: State, job_id: int) -> bool:
        """Bring one job's entries up to date; True when they changed."""
        job = state.jobs.get(job_id)
        if job is None:
            return False
        key = (job.state, job.pause_requested, job.preempted_by)
        changed = self._keys.get(job_id) != key
        if changed:
            self._keys[job_id] = key
            self._dirty.update(self._dependents.get(job_id, ()))
            if job.state == "running":
                self.running.add(job_id)
            else:
                self.running.discard(job_id)
        old = self.demands.get(job_id)
        new = _demand(state, job, self._managed) if job.state in WAITING else None
        if new != old:
            self._set(job, old, new)
        if changed or new is not None:  # the fold may have set a waiting job's reason
            self._dirty.add(job_id)
        return changed

    def _set(self, job: Job, old: Demand | None, new: Demand | None) -> None:
        if old is not None:
            for dep in set(old.after):  # two references may name one job
                self._dependents[dep].discard(job.id)
                if not self._dependents[dep]:
                    del self._dependents[dep]
        if new is None:
            del self.demands[job.id]
            for ref in job.after:
                self._refs[ref].discard(job.id)
                if not self._refs[ref]:
                    del self._refs[ref]
            return
        self.demands[job.id] = new
        for dep in new.after:
            self._dependents.setdefault(dep, set()).add(job.id)
        if old is None:
            for ref in job.after:
                self._refs.setdefault(ref, set()).add(job.id)

    def sync(self, state: State, managed: bool) -> None:
        """Rebuild the view from `state` unless it is already the view of `state` as it is now."""
        if self._state is state and self._seq == state.last_seq and self._managed == managed:
            return
        self._state, self._seq, self._managed = state, state.last_seq, managed
        for index in (self.demands, self._refs, self._dependents, self._keys):
            index.clear()
        self.running.clear()
        self._last = None
        for job in state.jobs.values():
            self._touch(state, job.id)
        self._dirty.clear()

    def decide(self, state: State, box: Box, env: Environment) -> Decisions | None:
        """What to record now, or None when nothing it depends on changed since the last decision,
        which the caller recorded (else it calls `forget`)."""
        self.sync(state, box.managed)
        held, cpu_used = leases(state, self.running)
        holders = sorted({lease.job_id for lease in held.values()})
        named = {h: (state.jobs[h].name, state.jobs[h].state) for h in holders if h in self._dependents}
        seen = (
            tuple(box.gpus),
            box.managed,
            box.cpu_slots,
            box.cluster,
            box.disk_short,
            held,
            cpu_used,
            named,
        )
        last = self._last
        same_box = last is not None and not last.timed and last.box == seen
        if same_box and not self._dirty:
            return None
        plan: Plan | None = None
        compare: Mapping[int, str] = {}
        if same_box and last is not None and last.static:
            plan, compare = self._place_marked(state, box, held, cpu_used, named, last)
        if plan is None:
            wanted = self._wanted(self.demands.values(), box)
            phases = _phases(state, wanted)
            plan = place(wanted, box.gpus, held, phases, box.cpu_slots, cpu_used, box.now)
            shadow = plan.reservation.shadow_ts if plan.reservation is not None else math.inf
            static = not plan.start and plan.reservation is None
            self._last = _Decided(dict(plan.waiting), dict(plan.fail), seen, static, math.isfinite(shadow))
            compare = plan.waiting
        self._dirty.clear()
        queue = functools.partial(self._wanted, self.demands.values(), box)
        return _decisions(state, box, env, plan, compare, queue, held, cpu_used, self.running)

    def _wanted(self, demands: Iterable[Demand], box: Box) -> list[Demand]:
        if box.cluster:
            return [replace(d, gpus=0, gpu_ids=(), min_free_memory_mib=None) for d in demands]
        return list(demands)

    def _place_marked(
        self,
        state: State,
        box: Box,
        held: dict[str, Lease],
        cpu_used: int,
        named: Mapping[int, tuple[str, Phase]],
        last: _Decided,
    ) -> tuple[Plan | None, Mapping[int, str]]:
        """The marked jobs placed alone, merged into the last decision; None if one of them would
        start or reserve GPUs, which changes what the jobs ranked below it get."""
        wanted = self._wanted((self.demands[i] for i in self._dirty if i in self.demands), box)
        phases = {**named, **_phases(state, wanted)}
        plan = place(wanted, box.gpus, held, phases, box.cpu_slots, cpu_used, box.now)
        if plan.start or plan.reservation is not None:
            return None, {}
        for job_id in self._dirty:
            last.waiting.pop(job_id, None)
            last.fail.pop(job_id, None)
        last.waiting.update(plan.waiting)
        last.fail.update(plan.fail)
        fail = {**plan.fail, **last.fail}
        return Plan((), dict(last.waiting), fail, None), plan.waiting


def _decisions(
    state: State,
    box: Box,
    env: Environment,
    plan: Plan,
    compare: Mapping[int, str],
    wanted: Callable[[], Iterable[Demand]],
    held: Mapping[str, Lease],
    cpu_used: int,
    running: Collection[int],
) -> Decisions:
    """The events of a plan: `compare` holds the waiting reasons that may differ from the recorded ones."""
    failed = [JobFailed(job_id=job_id, reason=reason) for job_id, reason in plan.fail.items()]
    by_uuid = {g.uuid: g.index for g in box.gpus}
    launches: list[Launch] = []
    waiting = dict(compare)
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
    preempted = (
        [] if box.disk_short is not None else _preemptions(state, wanted, plan, box, held, cpu_used, running)
    )
    return Decisions(failed, JobsWaiting(reasons=changed) if changed else None, launches, plan, preempted)


def _pausable_now(job: Job) -> bool:
    return job.pause_requested is None and job.run is not None and pausable(job.run.argv)


def _preemptions(
    state: State,
    wanted: Callable[[], Iterable[Demand]],
    plan: Plan,
    box: Box,
    held: Mapping[str, Lease],
    cpu_used: int,
    running_ids: Collection[int],
) -> list[JobPreempted]:
    """For each waiting job, highest priority first, that only waits for GPUs (or a CPU slot): the
    lowest-priority preemptible runs of lower priority whose resources, with the free ones, are enough.
    A job some run is already being paused for waits for that pause. The queue is looked at only when
    some run could be preempted."""
    running = [j for j in _jobs(state, running_ids) if j.state == "running" and j.run is not None]
    candidates = sorted(
        (j for j in running if j.spec.get("preemptible") is True and _pausable_now(j)),
        key=lambda j: (j.priority, -(j.run.placed_ts if j.run is not None else 0.0)),
    )
    if not candidates:
        return []
    given = {u for p in plan.start for u in p.gpu_uuids}
    free_gpus = sum(
        1 for g in box.gpus if g.uuid not in held and g.uuid not in given and not g.foreign_processes
    )
    free_cpu = box.cpu_slots - cpu_used - sum(1 for p in plan.start if not p.gpu_uuids)
    served = {j.preempted_by for j in running if j.preempted_by is not None}
    out: list[JobPreempted] = []
    taken: set[int] = set()
    for d in sorted(wanted(), key=lambda d: (-d.priority, d.order)):
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
