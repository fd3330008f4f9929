"""Placement: which queued jobs start now, on which GPUs, and why every other one does not.

Pure and deterministic: the caller hands in the queue, the GPUs as probed, our leases, the phases
of the jobs that queued jobs depend on and the time; `place` returns a `Plan` and touches nothing.
The daemon records the plan as events before acting on it, so a replayed log reproduces every
decision, and a test can set up any box and queue without a GPU or a clock.

Ranking. Jobs are taken in (higher `priority`, earlier `order`) order. Priority is the only
statement of urgency a person makes, so it is strict: waiting time never ages a job past a
higher-priority one. The reservation below, not aging, keeps a large job from starving behind
smaller ones.

Reservation and backfill. Left alone, a job needing more GPUs than are free waits forever while
one-GPU jobs take each GPU as it frees. The rule is EASY backfill, as in Slurm, with a job's
`timeout` as its time limit:

* The highest-ranked job that waits only for GPUs our own jobs hold (the holder) reserves the
  GPUs that will be free soonest: idle ones first, then busy ones by their lease's `ends_by`
  (start + timeout), by index on ties. Its shadow time is when the last of them is sure to be
  free; never, when one is held by a job without a timeout. A job whose GPUs are all busy holds
  nothing yet: ranked first, it is first to get each GPU as it frees, and a reservation that
  idles nothing would only keep the next job from holding GPUs this one cannot use.
* A lower-ranked job may start on unreserved GPUs, and on reserved idle ones only if its timeout
  ends it by the shadow time: it uses GPUs that would stand idle anyway and cannot delay the
  holder. A job without a timeout never backfills onto reserved GPUs.
* Backfilled runs end by the shadow time, so on the next call the holder again finds enough GPUs
  free by then: the shadow never moves later although `place` keeps no memory between calls, and
  the holder starts by it (or, under an untimed run, as soon as that run ends).
* There is one holder at a time: every reservation idles GPUs, and the next-ranked job becomes
  the holder as soon as this one starts, so every job that can ever run starts after the
  finitely many jobs ranked above it.
* A job waiting for a dependency, a dataset, a GPU with a foreign process, or memory something
  else uses does not hold a reservation; it passes down the queue. Those waits have no bound we
  control, and holding GPUs idle for them could stall every queue.

CPU-slot jobs (`gpus: 0`) all need the same single slot, so taking them in rank order is already
fair and they need no reservation. A job asking for GPUs on a box without any waits with that
reason: it never falls back to a CPU slot, which would turn hours of training into weeks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from daemon.core.state import JobState

__all__ = ["Demand", "GpuView", "Lease", "Phase", "Placement", "Plan", "Reservation", "place"]

Phase = JobState
"""What placement knows of a job it waits for (`after:`): the job's state."""
_Shape = tuple[int, tuple[str, ...], int | None, bool]
"""A request as placement sees it: gpus, gpu_ids, min free memory, and whether it ends in time to
use reserved GPUs. Timeouts themselves vary from job to job; this flag takes only two values."""


@dataclass(frozen=True, slots=True)
class Demand:
    """One queued job, reduced to what placement needs."""

    id: int
    name: str
    priority: int
    """Higher goes first."""
    order: int
    """Submission order, lower first among equal priorities."""
    gpus: int
    """Already resolved from the spec's default: 0 means a CPU slot."""
    gpu_ids: tuple[str, ...] = ()
    """Exactly these GPUs, each a UUID or str(index); empty means any `gpus` of them."""
    min_free_memory_mib: int | None = None
    """Free memory each of its GPUs must have at the start."""
    after: tuple[int, ...] = ()
    """Jobs that must have succeeded first."""
    blocked: str | None = None
    """Why the job cannot start for a reason placement does not own (e.g. a missing dataset)."""
    timeout_s: float | None = None
    """The run is stopped after this long; only a job with one may backfill onto reserved GPUs."""

    def __post_init__(self) -> None:
        if self.gpus < 0 or (self.min_free_memory_mib or 0) < 0 or (self.timeout_s or 0) < 0:
            raise ValueError(f"job {self.name}: negative gpus, min_free_memory_mib or timeout_s")
        if self.gpu_ids and (self.gpus != len(self.gpu_ids) or len(set(self.gpu_ids)) != self.gpus):
            raise ValueError(f"job {self.name}: gpus must count gpu_ids, each listed once")


@dataclass(frozen=True, slots=True)
class GpuView:
    """One managed GPU as last probed."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_used_mib: int
    foreign_processes: int = 0
    """Compute processes on it that are not ours; a GPU with any is never given to a job."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A GPU held by one of our running jobs."""

    job_id: int
    ends_by: float | None = None
    """When the run is sure to be over: its start, its timeout and the grace the runner gives it to
    stop; None: no timeout."""


@dataclass(frozen=True, slots=True)
class Placement:
    job_id: int
    gpu_uuids: tuple[str, ...]
    """Empty for a CPU slot."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """GPUs kept for a waiting job; only runs that end by `shadow_ts` may use them meanwhile."""

    job_id: int
    gpu_uuids: tuple[str, ...]
    shadow_ts: float
    """When all of them are sure to be free; inf while one is held by a run without a timeout."""


@dataclass(frozen=True, slots=True)
class Plan:
    start: tuple[Placement, ...]
    """In rank order."""
    waiting: Mapping[int, str]
    """A reason, for a person, for every queued job that neither starts nor fails."""
    fail: Mapping[int, str]
    """Jobs that can never run because a dependency failed, was cancelled or does not exist."""
    reservation: Reservation | None


def place(
    demands: Sequence[Demand],
    gpus: Sequence[GpuView],
    leases: Mapping[str, Lease],
    phases: Mapping[int, tuple[str, Phase]],
    cpu_slots_total: int,
    cpu_slots_used: int,
    now: float,
) -> Plan:
    """Decide what starts now; every demand ends up in exactly one of start, waiting and fail.

    `leases` maps a GPU's UUID to the lease of the running job on it. `phases` gives (name, phase)
    of the jobs that demands depend on; a dependency missing from it but present among `demands`
    counts as queued, one missing from both does not exist. `now` is on the clock of `ends_by`.
    """
    ranked = sorted(demands, key=attrgetter("order"))
    ranked.sort(key=attrgetter("priority"), reverse=True)  # stable: order breaks ties
    placer = _Placer(demands, gpus, leases, phases, cpu_slots_total, cpu_slots_used, now)
    known, waiting = placer.known, placer.waiting
    for d in ranked:
        if d.after or d.blocked is not None:
            placer.consider_dependent(d)
            continue
        t = d.timeout_s  # placer.shape(d), inlined: this loop runs once per queued job
        reason = known.get(
            (d.gpus, d.gpu_ids, d.min_free_memory_mib, t is not None and now + t <= placer.shadow)
        )
        if reason is None:
            placer.consider(d)
        else:
            waiting[d.id] = reason
    return placer.plan()


def _free_mib(g: GpuView) -> int:
    return g.memory_total_mib - g.memory_used_mib


def _count(n: int) -> str:
    return "1 GPU" if n == 1 else f"{n} GPUs"


def _labels(gs: Sequence[GpuView]) -> str:
    indices = ",".join(str(g.index) for g in gs)
    return f"GPU {indices}" if len(gs) == 1 else f"GPUs {indices}"


def _foreign(gs: Sequence[GpuView]) -> str:
    if len(gs) > 1:
        return f"{_labels(gs)} have foreign processes"
    n = gs[0].foreign_processes
    return f"{_labels(gs)} has " + ("a foreign process" if n == 1 else f"{n} foreign processes")


def _duration(seconds: float) -> str:
    """Rounded down, so that a timeout of this length does fit."""
    s = max(0, math.floor(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m" if s >= 60 else f"{s}s"


class _Placer:
    """The working state of one `place` call: what this plan has taken so far, and caches.

    With 10,000 queued jobs and 8 GPUs almost every job meets a box that no longer changes, so
    reasons are cached by request shape (`known`) and by dependency list, and `known` is emptied
    whenever a GPU is taken or reserved; recomputing each job's reason would dominate the call.
    """

    def __init__(
        self,
        demands: Sequence[Demand],
        gpus: Sequence[GpuView],
        leases: Mapping[str, Lease],
        phases: Mapping[int, tuple[str, Phase]],
        cpu_slots_total: int,
        cpu_slots_used: int,
        now: float,
    ) -> None:
        self.gpus = sorted(gpus, key=attrgetter("index"))
        self.by_id = {key: g for g in self.gpus for key in (g.uuid, str(g.index))}
        self.holder = {uuid: lease.job_id for uuid, lease in leases.items()}
        self.free_at = {uuid: math.inf if x.ends_by is None else x.ends_by for uuid, x in leases.items()}
        self.phases = phases
        self.demands = demands
        self._queued: dict[int, str] | None = None
        self.cpu_total = cpu_slots_total
        self.cpu_used = cpu_slots_used
        self.now = now
        self.start: list[Placement] = []
        self.waiting: dict[int, str] = {}
        self.fail: dict[int, str] = {}
        self.reservation: tuple[Demand, tuple[GpuView, ...]] | None = None
        self.reserved: set[str] = set()
        self.shadow = math.inf
        self.never: dict[tuple[int, tuple[str, ...], int | None], str | None] = {}
        self.known: dict[_Shape, str] = {}
        """Shape -> why a job of that shape waits, valid until the box changes."""
        self.dependencies: dict[tuple[int, ...], tuple[str | None, str | None]] = {}

    def plan(self) -> Plan:
        held = self.reservation
        reservation = None
        if held is not None:
            reservation = Reservation(held[0].id, tuple(g.uuid for g in held[1]), self.shadow)
        return Plan(tuple(self.start), self.waiting, self.fail, reservation)

    def name(self, job_id: int) -> str:
        known = self.phases.get(job_id)
        return known[0] if known else self.queued().get(job_id, str(job_id))

    def queued(self) -> dict[int, str]:
        """Names of the queued jobs, built on first need: callers usually put every job in `phases`."""
        if self._queued is None:
            self._queued = {d.id: d.name for d in self.demands}
        return self._queued

    def shape(self, d: Demand) -> _Shape:
        in_time = d.timeout_s is not None and self.now + d.timeout_s <= self.shadow
        return d.gpus, d.gpu_ids, d.min_free_memory_mib, in_time

    def never_fits(self, d: Demand) -> str | None:
        request = (d.gpus, d.gpu_ids, d.min_free_memory_mib)
        if request not in self.never:
            self.never[request] = self.why_never(d)
        return self.never[request]

    def consider_dependent(self, d: Demand) -> None:
        """A job with dependencies or an outside block: a failed dependency fails it for good."""
        verdict = self.dependencies.get(d.after)
        if verdict is None:
            verdict = self.dependencies[d.after] = self.check_dependencies(d.after)
        failed, pending = verdict
        if failed is not None:
            self.fail[d.id] = failed
            return
        never = self.never_fits(d)
        if never is not None:
            self.waiting[d.id] = never
        elif d.blocked is not None:
            self.waiting[d.id] = d.blocked if pending is None else f"{pending}; {d.blocked}"
        elif pending is not None:
            self.waiting[d.id] = pending
        else:
            self.consider(d)

    def check_dependencies(self, after: tuple[int, ...]) -> tuple[str | None, str | None]:
        """(why it can never run, what it still waits for)."""
        pending = []
        for dep in after:
            known = self.phases.get(dep)
            if known is None and dep not in self.queued():
                return f"after job {dep}, which does not exist", None
            name, phase = known if known is not None else (self.queued()[dep], "queued")
            if phase == "failed":
                return f"after job {name}, which failed", None
            if phase == "cancelled":
                return f"after job {name}, which was cancelled", None
            if phase != "succeeded":
                pending.append(f"job {name} ({phase})")
        return None, "after " + ", ".join(pending) if pending else None

    def consider(self, d: Demand) -> None:
        shape = self.shape(d)
        reason = self.known.get(shape) or self.never_fits(d)
        if reason is not None:
            self.waiting[d.id] = reason
        elif d.gpus == 0:
            self.place_cpu(d, shape)
        else:
            self.place_gpu(d, shape)

    def why_never(self, d: Demand) -> str | None:
        """Why no state of this box could ever run `d`: it waits until the box or the job changes."""
        if d.gpus == 0:
            return None if self.cpu_total > 0 else "needs a CPU slot; this box has none (cpu_slots = 0)"
        if not self.gpus:
            return f"needs {_count(d.gpus)}; this box has none"
        need = d.min_free_memory_mib or 0
        if d.gpu_ids:
            for gid in d.gpu_ids:
                g = self.by_id.get(gid)
                if g is None:
                    return f"needs GPU {gid}; this box has no such GPU"
                if g.memory_total_mib < need:
                    return (
                        f"needs {need} MiB free on GPU {g.index}, which has {g.memory_total_mib} MiB in all"
                    )
            return None
        if d.gpus > len(self.gpus):
            return f"needs {_count(d.gpus)}; this box has {len(self.gpus)}"
        big = sum(g.memory_total_mib >= need for g in self.gpus)
        if big >= d.gpus:
            return None
        if big == 0:
            largest = max(g.memory_total_mib for g in self.gpus)
            return f"needs {need} MiB free on each GPU; the largest has {largest} MiB in all"
        have = "has" if big == 1 else "have"
        wanted = f"needs {_count(d.gpus)} with {need} MiB free each"
        return f"{wanted}; only {_count(big)} on this box {have} that much"

    def place_cpu(self, d: Demand, shape: _Shape) -> None:
        if self.cpu_used < self.cpu_total:
            self.cpu_used += 1
            self.start.append(Placement(d.id, ()))
        else:
            reason = f"needs a CPU slot, {self.cpu_used} of {self.cpu_total} in use"
            self.known[shape] = self.waiting[d.id] = reason

    def place_gpu(self, d: Demand, shape: _Shape) -> None:
        chosen = self.fit(d, in_time=shape[3])
        if chosen is not None:
            self.start.append(Placement(d.id, tuple(g.uuid for g in chosen)))
            ends = math.inf if d.timeout_s is None else self.now + d.timeout_s
            for g in chosen:
                self.holder[g.uuid], self.free_at[g.uuid] = d.id, ends
            self.known.clear()
            return
        reason = self.gpu_reason(d)
        held = self.reserve(d) if self.reservation is None else None
        if held is None:
            self.known[shape] = self.waiting[d.id] = reason
            return
        within = "" if self.shadow == math.inf else f", all free within {_duration(self.shadow - self.now)}"
        # A reservation is never of one GPU: a one-GPU job with an idle GPU it could use starts on it,
        # and one whose GPUs are all busy holds nothing.
        self.waiting[d.id] = f"{reason}; {_labels(held)} are held for it{within}"

    def fit(self, d: Demand, *, in_time: bool) -> list[GpuView] | None:
        """The GPUs `d` starts on now: unreserved ones first, reserved ones if it ends in time."""
        need = d.min_free_memory_mib or 0

        def usable(g: GpuView) -> bool:
            return (
                g.uuid not in self.holder
                and g.foreign_processes == 0
                and _free_mib(g) >= need
                and (in_time or g.uuid not in self.reserved)
            )

        if d.gpu_ids:
            chosen = [self.by_id[gid] for gid in d.gpu_ids]
            return chosen if all(usable(g) for g in chosen) else None
        chosen = [g for g in self.gpus if usable(g)]
        chosen.sort(key=lambda g: g.uuid in self.reserved)
        return sorted(chosen[: d.gpus], key=attrgetter("index")) if len(chosen) >= d.gpus else None

    def gpu_reason(self, d: Demand) -> str:
        need = d.min_free_memory_mib or 0
        if d.gpu_ids:
            return self.named_gpu_reason(d, need)
        free = [g for g in self.gpus if g.uuid not in self.holder and g.foreign_processes == 0]
        if len(free) < d.gpus:
            foreign = [g for g in self.gpus if g.uuid not in self.holder and g.foreign_processes]
            reason = f"needs {_count(d.gpus)}, {len(free)} free"
            return f"{reason} ({_foreign(foreign)})" if foreign else reason
        roomy = sum(_free_mib(g) >= need for g in free)
        if roomy == 0:
            return f"needs {need} MiB free on each GPU, best has {max(_free_mib(g) for g in free)}"
        if roomy < d.gpus:
            have = "has" if roomy == 1 else "have"
            wanted = f"needs {_count(d.gpus)} with {need} MiB free each"
            return f"{wanted}; only {_count(roomy)} {have} that much free"
        return self.behind_reservation()

    def named_gpu_reason(self, d: Demand, need: int) -> str:
        for gid in d.gpu_ids:
            g = self.by_id[gid]
            job = self.holder.get(g.uuid)
            if job is not None:
                return f"needs GPU {g.index}, used by job {self.name(job)}"
            if g.foreign_processes:
                return f"needs GPU {g.index}; {_foreign([g])}"
            if _free_mib(g) < need:
                return f"needs {need} MiB free on GPU {g.index}, which has {_free_mib(g)}"
        return self.behind_reservation()

    def behind_reservation(self) -> str:
        assert self.reservation is not None, "only a reservation blocks a job that passes every other check"
        d, held = self.reservation
        limit = "" if self.shadow == math.inf else f" of at most {_duration(self.shadow - self.now)}"
        return (
            f"queued behind job {d.name} (priority {d.priority}) which is reserving {_labels(held)}; "
            f"a job with a timeout{limit} may use them meanwhile"
        )

    def reserve(self, d: Demand) -> tuple[GpuView, ...] | None:
        """Hold for `d` the GPUs free soonest, unless what blocks it is not ours to wait out."""
        need = d.min_free_memory_mib or 0

        def ours_to_wait_for(g: GpuView) -> bool:
            held = g.uuid in self.holder
            return g.foreign_processes == 0 and g.memory_total_mib >= need and (held or _free_mib(g) >= need)

        if d.gpu_ids:
            chosen = [self.by_id[gid] for gid in d.gpu_ids]
        else:
            chosen = [g for g in self.gpus if ours_to_wait_for(g)]
            chosen.sort(key=lambda g: (g.uuid in self.holder, self.free_at.get(g.uuid, self.now)))
            chosen = chosen[: d.gpus]
        if len(chosen) < d.gpus or not all(ours_to_wait_for(g) for g in chosen):
            return None
        if all(g.uuid in self.holder for g in chosen):
            return None  # nothing idle to hold: ranked first, `d` is first to get each GPU that frees
        held = tuple(sorted(chosen, key=attrgetter("index")))
        self.reservation = (d, held)
        self.reserved.update(g.uuid for g in held)
        self.shadow = max(self.now, *(self.free_at.get(g.uuid, self.now) for g in held))
        self.known.clear()
        return held
