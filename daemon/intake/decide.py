"""What a dropped file becomes: the pure decision between accepting, de-duplicating and rejecting.

The inbox adapter claims and reads files; this module turns what it found into events, given the
folded state. It decides a whole batch at once (one transaction in the log), so it keeps its own
overlay of what the batch has decided so far: two drops of the same bytes in one batch are still one
dataset and one duplicate, and a job name taken earlier in the batch is taken.

Every event is keyed `drop:<drop id>`. Redoing a claim after a crash therefore gets back the event
first recorded for it, whatever this module would decide now; the adapter acts on what the log holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from daemon.core.datasets import DatasetFormat, DatasetReport, can_feed
from daemon.core.drops import FileVerdict, dataset_name
from daemon.core.events import (
    CancelRequested,
    DatasetAccepted,
    DuplicateDropped,
    Event,
    FileKind,
    FileRejected,
    JobSubmitted,
    NewEvent,
    PauseRequested,
    ResumeRequested,
    RetryRequested,
)
from daemon.core.jobs import ControlRequest, JobSpec, dataset_names
from daemon.core.pausing import pausable
from daemon.core.state import LIVE, WAITING, Job, State
from daemon.core.streams import INTAKE_STREAM, Append, dataset_stream, drop_key, job_stream

__all__ = ["Examined", "JobIndex", "RejectName", "decide", "feeds"]

MAX_PROBLEMS_IN_EVENT = 8192
"""The error file keeps the whole explanation; the event keeps its start."""

RejectName = Callable[[str], str]
"""Picks a free name under inbox/rejected/ for a rejected file (it reserves what it returns)."""


@dataclass(frozen=True, slots=True)
class Examined:
    """One claimed file, as the adapter found it: either refused before reading, or a verdict."""

    drop: str
    filename: str
    kind: FileKind
    verdict: FileVerdict | None = None
    refused: str | None = None
    """Why the file was not read at all (a symlink, a FIFO, a name that is not UTF-8, …)."""


def feeds(spec: JobSpec) -> str | None:
    """The dataset task type (in `datasets.TaskType` terms) that a job reads."""
    if spec.task == "sft":
        return "lora" if spec.tuner in ("lora", "qlora") else "sft"
    if spec.task == "pretrain":
        return "pretrain"
    if spec.task == "rlhf":
        return "rl"
    return None


class JobIndex:
    """The two questions intake asks about the state's jobs on every batch with a job in it (which
    live job has these bytes; does a waiting job give this `after:` reference), indexed once and
    extended as jobs are submitted, instead of a scan of every job per batch. Job ids are given in
    order, so the jobs new since the last batch are those from the last `next_job_id` on; a job's
    bytes and references never change, only its state, which each answer reads afresh."""

    def __init__(self) -> None:
        self._state: State | None = None
        self._upto = 0
        self._by_sha: dict[str, list[int]] = {}
        self._by_ref: dict[str, list[int]] = {}

    def follow(self, state: State) -> JobIndex:
        """Index the jobs submitted since the last call (all of them, for another State object)."""
        if state is not self._state or state.next_job_id < self._upto:
            self._state, self._upto = state, 0
            self._by_sha.clear()
            self._by_ref.clear()
        jobs = state.jobs
        for job_id in range(self._upto, state.next_job_id):
            job = jobs.get(job_id)
            if job is not None:
                self._by_sha.setdefault(job.sha256, []).append(job_id)
                for ref in job.after:
                    self._by_ref.setdefault(ref, []).append(job_id)
        self._upto = state.next_job_id
        return self

    def live(self, state: State, sha: str) -> int | None:
        """The newest live job submitted from these bytes."""
        for job_id in reversed(self._by_sha.get(sha, ())):
            if state.jobs[job_id].state in LIVE:
                return job_id
        return None

    def awaited(self, state: State, ref: str) -> bool:
        """Whether a waiting job gives `ref` in its `after:`."""
        return any(state.jobs[job_id].state in WAITING for job_id in self._by_ref.get(ref, ()))


@dataclass
class _Overlay:
    """What earlier drops in this batch decided, on top of the folded state."""

    shas: dict[str, str] = field(default_factory=dict)
    """Dataset sha256 -> the name it was accepted under in this batch."""
    names: dict[str, str] = field(default_factory=dict)
    """Dataset name -> sha256 it points at after this batch."""
    reports: dict[str, DatasetReport] = field(default_factory=dict)
    """Dataset name -> the report of the content it points at after this batch."""
    live_shas: dict[str, int] = field(default_factory=dict)
    """Job file sha256 -> id, for the jobs submitted in this batch."""
    job_names: dict[str, int] = field(default_factory=dict)
    waits: dict[int, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    """Job id -> its name and `after:`, for jobs submitted in this batch."""
    awaited: set[str] = field(default_factory=set)
    """Every `after:` reference of a job submitted in this batch."""
    next_job_id: int = 0
    jobs: JobIndex = field(default_factory=JobIndex)

    def live_sha(self, state: State, sha: str) -> int | None:
        return self.live_shas[sha] if sha in self.live_shas else self.jobs.live(state, sha)

    def is_awaited(self, state: State, ref: str) -> bool:
        """Whether a waiting job names `ref` in `after:`: only a job named there can close a cycle."""
        return ref in self.awaited or self.jobs.awaited(state, ref)


def decide(
    state: State, batch: Sequence[Examined], reject_name: RejectName, jobs: JobIndex | None = None
) -> list[Append]:
    """One append per drop, in the batch's order. `jobs`, kept by the caller from batch to batch,
    spares indexing every job again for each batch."""
    overlay = _Overlay(next_job_id=state.next_job_id)
    if any(ex.kind == "job" for ex in batch):
        overlay.jobs = (jobs or JobIndex()).follow(state)
    return [_decide_one(state, overlay, ex, reject_name) for ex in batch]


def _one(stream: str, ex: Examined, event: Event, expected: int | None = None) -> Append:
    return Append(stream, [NewEvent(event, drop_key(ex.drop))], expected)


def _reject(ex: Examined, summary: str, problems: str, reject_name: RejectName) -> Append:
    sha = ex.verdict.sha256 if ex.verdict is not None else None
    if len(problems) > MAX_PROBLEMS_IN_EVENT:
        problems = problems[:MAX_PROBLEMS_IN_EVENT] + "\n... (the rest is in the .error.txt file)\n"
    event = FileRejected(
        drop=ex.drop,
        filename=ex.filename,
        kind=ex.kind,
        summary=summary,
        problems=problems,
        sha256=sha,
        kept_as=reject_name(ex.filename),
    )
    return _one(INTAKE_STREAM, ex, event)


def _decide_one(state: State, overlay: _Overlay, ex: Examined, reject_name: RejectName) -> Append:
    verdict = ex.verdict
    if ex.refused is not None or verdict is None:
        why = ex.refused or "it could not be read"
        return _reject(ex, why, f"{ex.filename}: rejected: {why}\n", reject_name)
    if not verdict.ok:
        summary = verdict.summary.removeprefix(f"{ex.filename}: ").removeprefix("rejected: ")
        return _reject(ex, summary, verdict.problems, reject_name)
    if verdict.dataset is not None and verdict.sha256 is not None:
        return _dataset(state, overlay, ex, verdict.dataset, verdict.sha256)
    if isinstance(verdict.job, JobSpec) and verdict.sha256 is not None:
        return _job(state, overlay, ex, verdict.job, verdict.sha256, reject_name)
    if isinstance(verdict.job, ControlRequest):
        return _control(state, overlay, ex, verdict.job, reject_name)
    return _reject(ex, verdict.summary, verdict.problems or verdict.summary + "\n", reject_name)


def _dataset(state: State, overlay: _Overlay, ex: Examined, report: DatasetReport, sha: str) -> Append:
    name = dataset_name(ex.filename)
    known = state.datasets.get(sha)
    first_name = known.name if known is not None else overlay.shas.get(sha)
    if first_name is not None:
        alias = name if overlay.names.get(name, state.dataset_names.get(name)) != sha else None
        if alias is not None:
            overlay.names[name] = sha
            overlay.reports[name] = report
        dup = DuplicateDropped(
            drop=ex.drop, filename=ex.filename, kind="dataset", sha256=sha, dataset=first_name, alias=alias
        )
        return _one(dataset_stream(sha), ex, dup)
    overlay.shas[sha] = name
    overlay.names[name] = sha
    overlay.reports[name] = report
    event = DatasetAccepted(
        drop=ex.drop,
        name=name,
        filename=ex.filename,
        sha256=sha,
        format=report.format or "",
        task_types=list(report.task_types),
        rlhf_types=list(report.rlhf_types),
        rows=report.rows,
        bytes=report.bytes,
        stats=report.stats.model_dump(mode="json"),
        lora_hints=report.lora_hints.model_dump(mode="json") if report.lora_hints else None,
    )
    return _one(dataset_stream(sha), ex, event)


def _live(state: State, overlay: _Overlay, name: str) -> int | None:
    if name in overlay.job_names:
        return overlay.job_names[name]
    job = state.live_job(name)
    return None if job is None else job.id


def _unfit_datasets(state: State, overlay: _Overlay, spec: JobSpec) -> list[str]:
    """A dataset already here whose format cannot feed the job: known now, so refused now."""
    task = feeds(spec)
    if task is None:
        return []
    out = []
    for name in sorted(dataset_names(spec)):
        report = overlay.reports.get(name)
        if report is not None:
            why = can_feed(report, task, spec.effective_rlhf_type)
        else:
            sha = state.dataset_names.get(name)
            if sha is None:
                continue
            ds = state.datasets[sha]
            why = can_feed(cast("DatasetFormat", ds.format), task, spec.effective_rlhf_type)
        if why is not None:
            out.append(f"dataset {name}: {why}")
    return out


def _job(
    state: State, overlay: _Overlay, ex: Examined, spec: JobSpec, sha: str, reject_name: RejectName
) -> Append:
    same = overlay.live_sha(state, sha)
    if same is not None:
        dup = DuplicateDropped(drop=ex.drop, filename=ex.filename, kind="job", sha256=sha, job_id=same)
        return _one(job_stream(same), ex, dup)
    taken = _live(state, overlay, spec.name)
    if taken is not None:
        job = state.jobs.get(taken)
        where = f"job {spec.name} (id {taken}) is {job.state if job else 'queued'}"
        why = f"a live job already has the name {spec.name}"
        text = (
            f"{ex.filename}: rejected: {why}: {where}\n"
            f"  hint: set another `name:` in the file, or cancel the live job first "
            f"(llmtraind cancel {spec.name})\n"
        )
        return _reject(ex, why, text, reject_name)
    unfit = _unfit_datasets(state, overlay, spec)
    if unfit:
        why = f"job {spec.name} ({spec.task}) cannot read its data: " + "; ".join(unfit)
        hint = "  hint: name a dataset of a fitting format, or change the job's task type\n"
        return _reject(ex, why, f"{ex.filename}: rejected: {why}\n{hint}", reject_name)
    job_id = overlay.next_job_id
    cycle = _cycle(state, overlay, job_id, spec)
    if cycle is not None:
        why = f"after: {' -> '.join(cycle)} is a cycle"
        hint = "  hint: remove one of these `after:` references; jobs that wait for each other never start\n"
        return _reject(ex, why, f"{ex.filename}: rejected: {why}\n{hint}", reject_name)
    overlay.next_job_id += 1
    overlay.live_shas[sha] = job_id
    overlay.job_names[spec.name] = job_id
    overlay.waits[job_id] = (spec.name, spec.after)
    overlay.awaited.update(spec.after)
    event = JobSubmitted(
        drop=ex.drop,
        id=job_id,
        name=spec.name,
        project=spec.project,
        filename=ex.filename,
        sha256=sha,
        task=spec.task,
        tuner=spec.tuner,
        rlhf_type=spec.effective_rlhf_type,
        feeds=feeds(spec),
        datasets=sorted(dataset_names(spec)),
        priority=spec.priority,
        after=list(spec.after),
        gpus=spec.gpus,
        gpu_ids=list(spec.gpu_ids),
        min_free_memory_mib=spec.min_free_memory_mib,
        spec=spec.model_dump(mode="json"),
    )
    return _one(job_stream(job_id), ex, event, expected=0)


def _cycle(state: State, overlay: _Overlay, job_id: int, spec: JobSpec) -> list[str] | None:
    """The names along a chain of `after:` that would lead from this job back to itself once it is
    submitted as `job_id`, or None. References resolve the way the scheduler resolves them (an id,
    else the newest job of that name, this one included); only waiting jobs wait for anything."""
    if not overlay.is_awaited(state, spec.name) and not overlay.is_awaited(state, str(job_id)):
        return None  # nothing waits for this job, so nothing it waits for can lead back to it

    def waits(ref: str) -> tuple[int, str, tuple[str, ...]] | None:
        if ref.isdigit() and int(ref) == job_id or ref == spec.name:
            return job_id, spec.name, spec.after
        known = int(ref) if ref.isdigit() and int(ref) in overlay.waits else overlay.job_names.get(ref)
        if known is not None:
            return known, *overlay.waits[known]
        job = state.find_job(ref)
        if job is None or job.state not in WAITING:
            return None
        return job.id, job.name, tuple(job.after)

    path = [spec.name]
    seen: set[int] = set()
    stack = [iter(spec.after)]
    while stack:
        ref = next(stack[-1], None)
        if ref is None:
            stack.pop()
            path.pop()
            continue
        found = waits(ref)
        if found is None or found[0] in seen:
            continue
        dep, name, further = found
        if dep == job_id:
            return [*path, name]
        seen.add(dep)
        path.append(name)
        stack.append(iter(further))
    return None


def _pause_refusal(action: str, ref: str, job_id: int, job_state: str, job: Job | None) -> str | None:
    """Why a pause or resume cannot be done now, or None."""
    name = f"job {ref} (id {job_id})"
    if action == "resume":
        return None if job_state == "paused" else f"{name} is {job_state}; only a paused job can be resumed"
    if job_state != "running" or job is None or job.run is None:
        return f"{name} is {job_state}; only a running job can be paused"
    if job.pause_requested is not None:
        return f"{name} is already pausing ({job.pause_requested} asked)"
    if not pausable(job.run.argv):
        return (
            f"{name} cannot pause: attempt {job.run.attempt} runs without llmtraind's pause callback "
            "(only training pauses, and not when its swift: block sets callbacks or external_plugins); "
            "cancel it instead, and retry it later from its last checkpoint"
        )
    return None


def _control(
    state: State, overlay: _Overlay, ex: Examined, req: ControlRequest, reject_name: RejectName
) -> Append:
    job = state.find_job(req.job)
    if job is None:
        in_batch = overlay.job_names.get(req.job)
        if in_batch is None:
            why = f"there is no job {req.job!r} to {req.action}"
            hint = "  hint: name a job by its id or name as `llmtraind jobs` lists it\n"
            return _reject(ex, why, f"{ex.filename}: rejected: {why}\n{hint}", reject_name)
        job_id, job_state = in_batch, "queued"
    else:
        job_id, job_state = job.id, job.state
    if req.action == "cancel":
        if job_state not in LIVE:
            why = f"job {req.job} (id {job_id}) has already ended ({job_state}); there is nothing to cancel"
            return _reject(ex, why, f"{ex.filename}: rejected: {why}\n", reject_name)
        event: Event = CancelRequested(drop=ex.drop, job_id=job_id, source=ex.filename)
    elif req.action in ("pause", "resume"):
        refused = _pause_refusal(req.action, req.job, job_id, job_state, job)
        if refused is not None:
            return _reject(ex, refused, f"{ex.filename}: rejected: {refused}\n", reject_name)
        kind = PauseRequested if req.action == "pause" else ResumeRequested
        event = kind(drop=ex.drop, job_id=job_id, source=ex.filename)
    else:
        if job_state not in ("failed", "cancelled"):
            why = f"job {req.job} (id {job_id}) is {job_state}; only a failed or cancelled job can be retried"
            return _reject(ex, why, f"{ex.filename}: rejected: {why}\n", reject_name)
        event = RetryRequested(drop=ex.drop, job_id=job_id, source=ex.filename, from_scratch=req.from_scratch)
    return _one(job_stream(job_id), ex, event)
