"""The state as people and scripts see it: the JSON shapes of the API (and of the CLI's --json).

Pure functions of the folded state, so the API, the CLI and the tests agree on one shape.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, get_args

from daemon.core.events import JobProgress, Recorded
from daemon.core.state import LIVE, TERMINAL, Dataset, Job, JobState, Run, State, Validation

if TYPE_CHECKING:
    from daemon.core.gpus import GpuStatus

__all__ = [
    "JOB_STATES",
    "artifacts_view",
    "dataset_jobs_page",
    "dataset_view",
    "datasets_page",
    "gpu_summary",
    "gpus_view",
    "intake_view",
    "job_counts",
    "job_view",
    "job_ids_page",
    "page_states",
    "projects_page",
    "recorded_json",
    "run_view",
]

JOB_STATES: tuple[JobState, ...] = get_args(JobState)


def _progress(v: Validation) -> dict[str, Any]:
    percent = 100.0 * v.bytes_done / v.bytes_total if v.bytes_total else 0.0
    return {
        "bytes_done": v.bytes_done,
        "bytes_total": v.bytes_total,
        "rows_done": v.rows_done,
        "percent": round(percent, 1),
    }


def _validating_by_name(state: State) -> dict[str, Validation]:
    return {v.name: v for v in state.validating.values()}


def dataset_view(state: State, name: str) -> dict[str, Any] | None:
    """A dataset by any name it was dropped under; while a new drop of it is read, its progress."""
    return _dataset_entry(state, name, _validating_by_name(state).get(name))


def dataset_jobs_page(
    state: State, name: str, *, after: int = 0, limit: int
) -> tuple[list[dict[str, Any]], int | None] | None:
    """The jobs that read the dataset `name` means now (any attempt, or queued to read it), by id:
    those after `after`, at most `limit`, and the id to ask after next (None at the end); None when
    the name means no dataset."""
    sha = state.dataset_names.get(name)
    if sha is None:
        return None
    found: list[dict[str, Any]] = []
    for j in state.jobs.values():
        if j.id <= after:
            continue
        if sha not in j.inputs.values():
            for r in j.runs:
                if sha in r.inputs.values():
                    break
            else:
                continue
        if len(found) == limit:
            return found, found[-1]["id"]
        found.append({"id": j.id, "name": j.name, "state": j.state, "task_type": j.task})
    return found, None


def _dataset_entry(state: State, name: str, validating: Validation | None) -> dict[str, Any] | None:
    sha = state.dataset_names.get(name)
    if sha is None:
        if validating is None:
            return None
        return {"name": name, "state": "validating", "validation": _progress(validating)}
    return _dataset_json(name, state.datasets[sha], validating)


def _dataset_json(name: str, ds: Dataset, validating: Validation | None) -> dict[str, Any]:
    return {
        "name": name,
        "state": "validating" if validating else "ready",
        "validation": _progress(validating) if validating else None,
        "sha256": ds.sha256,
        "format": ds.format,
        "task_types": ds.task_types,
        "rlhf_types": ds.rlhf_types,
        "rows": ds.rows,
        "bytes": ds.bytes,
        "stats": ds.stats,
        "lora_hints": ds.lora_hints,
        "filename": ds.filename,
        "names": ds.names,
        "drops": ds.drops,
        "accepted_at": ds.accepted_ts,
    }


def datasets_page(state: State, *, after: str = "", limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Each dataset once, under its own name (or, once that name means other bytes, the first
    other name that still means it), with what `dataset_view` shows for that name; names still
    being read that mean no dataset yet come as their own entries. In name order, those after
    `after`, at most `limit`, and the name to ask after next (None at the end). One entry per name
    would repeat every dataset's names once for each of them."""
    validating = _validating_by_name(state)
    current: dict[str, list[str]] = {}
    for name, sha in state.dataset_names.items():
        current.setdefault(sha, []).append(name)
    listed = [
        ds.name if state.dataset_names.get(ds.name) == sha else min(current[sha])
        for sha, ds in state.datasets.items()
        if sha in current
    ]
    listed.extend(name for name in validating if name not in state.dataset_names)
    listed.sort()
    start = bisect_right(listed, after) if after else 0
    chosen = listed[start : start + limit]
    page = [view for name in chosen if (view := _listed_entry(state, name, current, validating)) is not None]
    return page, (chosen[-1] if chosen and start + limit < len(listed) else None)


def _listed_entry(
    state: State, name: str, current: dict[str, list[str]], validating: dict[str, Validation]
) -> dict[str, Any] | None:
    """A listed dataset reads as validating while any of its names is being read again."""
    sha = state.dataset_names.get(name)
    names = current.get(sha, [name]) if sha is not None else [name]
    reading = validating.get(name) or next((v for n in names if (v := validating.get(n))), None)
    return _dataset_entry(state, name, reading)


def _progress_json(run: Run | None) -> dict[str, Any] | None:
    p = run.progress if run is not None else None
    if p is None:
        return None
    return {"step": p.step, "max_steps": p.max_steps, "percent": p.percent, "eta_s": p.eta_s}


def _metrics_json(p: JobProgress | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return p.model_dump(exclude={"type", "job_id", "attempt", "raw"}) | {"raw": dict(p.raw)}


def _exit_json(run: Run) -> dict[str, Any] | None:
    ev = run.exit
    if ev is None:
        return None
    return {
        "outcome": ev.outcome,
        "returncode": ev.returncode,
        "signal": ev.signal,
        "stopped": ev.stopped,
        "failure": None if ev.failure is None else ev.failure.model_dump(),
        "log_tail": ev.log_tail,
        "duration_s": ev.duration_s,
        "retry": ev.retry,
    }


def run_view(run: Run) -> dict[str, Any]:
    return {
        "attempt": run.attempt,
        "gpus": run.gpu_indices,
        "gpu_uuids": run.gpu_uuids,
        "command": run.command,
        "argv": run.argv,
        "env": run.env,
        "run_dir": run.run_dir,
        "output_dir": run.output_dir,
        "log": run.log,
        "resume_from": run.resume_from,
        "timeout_s": run.timeout_s,
        "pid": run.pid,
        "placed": run.placed_ts,
        "started": run.started_ts,
        "ended": run.ended_ts,
        "progress": _progress_json(run),
        "metrics": _metrics_json(run.progress),
        "eval": _metrics_json(run.last_eval),
        "metrics_recorded": run.metrics_count,
        "gpu_shared": run.gpu_shared,
        "serving": _serving_json(run),
        "slurm": _slurm_json(run),
        "exit": _exit_json(run),
    }


def _slurm_json(run: Run) -> dict[str, Any] | None:
    """The Slurm job of an attempt handed to Slurm (`[executor] kind = "slurm"`), else None."""
    if run.slurm_job_id is None:
        return None
    return {
        "job_id": run.slurm_job_id,
        "state": run.slurm_state,
        "reason": run.slurm_reason,
        "nodes": run.slurm_nodes,
    }


def _serving_json(run: Run | None) -> dict[str, Any] | None:
    ev = run.serving if run is not None else None
    if ev is None:
        return None
    return {"url": ev.url, "openai_base": f"{ev.url}/v1", "models": ev.models}


def artifacts_view(job: Job) -> list[dict[str, Any]]:
    """Every attempt's artifacts, newest attempt first."""
    return [a.model_dump() | {"attempt": run.attempt} for run in reversed(job.runs) for a in run.artifacts]


def job_view(state: State, job: Job, *, detail: bool = False) -> dict[str, Any]:
    run = job.run
    body: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "reason": job.reason,
        "task_type": job.task,
        "tuner": job.tuner,
        "rlhf_type": job.rlhf_type,
        "project": job.project,
        "priority": job.priority,
        "gpus": job.gpus if run is None else len(run.gpu_uuids),
        "gpu_ids": job.gpu_ids if run is None else run.gpu_indices,
        "after": job.after,
        "datasets": job.inputs,
        "progress": _progress_json(run),
        "metrics": _metrics_json(run.progress if run is not None else None),
        "created": job.submitted_ts,
        "started": job.started_ts,
        "ended": job.ended_ts,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "final_checkpoint": job.final_checkpoint,
        "final_model": job.final_model,
        "serving": _serving_json(run) if job.state == "running" else None,
        "eval": _metrics_json(run.last_eval if run is not None else None),
        "best_eval": {
            metric: {"value": value, "step": step} for metric, (value, step) in job.best_eval.items()
        },
    }
    if detail:
        body["filename"] = job.filename
        body["sha256"] = job.sha256
        body["spec"] = job.spec
        body["run"] = None if run is None else run_view(run)
        body["runs"] = [run_view(r) for r in job.runs[:-1]]
        body["artifacts"] = artifacts_view(job)
    return body


def job_ids_page(
    state: State,
    *,
    job_states: Collection[str] | None = None,
    project: str | None = None,
    after: int = 0,
    before: int | None = None,
    limit: int,
) -> tuple[list[int], int | None]:
    """The ids of a page of jobs (of some states or one project, if asked), at most `limit`, and the
    cursor of the next page (None at the end): those after `after` oldest first, or, given `before`,
    those below it newest first (the status page lists finished jobs newest first, a page at a time,
    however many there are)."""
    ids: list[int] = []
    jobs = state.jobs.values() if before is None else reversed(state.jobs.values())
    for j in jobs:
        if (j.id >= before) if before is not None else (j.id <= after):
            continue
        if job_states is not None and j.state not in job_states:
            continue
        if project is not None and j.project != project:
            continue
        if len(ids) == limit:
            return ids, ids[-1]
        ids.append(j.id)
    return ids, None


def job_counts(state: State) -> dict[str, int]:
    counts = Counter(j.state for j in state.jobs.values())
    return {s: counts.get(s, 0) for s in JOB_STATES}


def projects_page(state: State, *, after: str = "", limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Projects by name: their job ids and counts per state; those after `after`, at most `limit`,
    and the name to ask after next (None at the end)."""
    groups: dict[str, list[Job]] = {}
    for job in state.jobs.values():
        if after and job.project <= after:
            continue
        group = groups.get(job.project)
        if group is None:
            groups[job.project] = group = []
        group.append(job)
    names = sorted(groups)
    page = [
        {
            "name": name,
            "jobs": [j.id for j in groups[name]],
            "counts": dict(Counter(j.state for j in groups[name])),
        }
        for name in names[:limit]
    ]
    return page, (names[limit - 1] if len(names) > limit else None)


def intake_view(state: State) -> dict[str, Any]:
    c = state.intake
    return {
        "datasets": c.datasets,
        "jobs": c.jobs,
        "controls": c.controls,
        "duplicates": c.duplicates,
        "rejected": c.rejected,
        "validating": len(state.validating),
    }


def recorded_json(rec: Recorded) -> dict[str, Any]:
    """One event as the API and the SSE feed show it."""
    return {
        "seq": rec.seq,
        "stream": rec.stream,
        "version": rec.version,
        "ts": rec.ts,
        "type": rec.event.type,
        "data": rec.event.model_dump(mode="json", exclude={"type"}),
    }


def gpus_view(
    state: State, gpus: Sequence[GpuStatus], session_of: Callable[[int], int | None]
) -> list[dict[str, Any]]:
    """The probed GPUs with our lease on each (the running job whose run holds it) and the processes
    on it; a process outside every run's session (`session_of(pid)`) is foreign."""
    leases: dict[str, Job] = {}
    sessions: set[int] = set()
    for job in state.jobs.values():
        if job.state != "running":
            continue
        run = job.run
        if run is not None:
            leases.update(dict.fromkeys(run.gpu_uuids, job))
            if run.session is not None:
                sessions.add(run.session)
    out = []
    for g in gpus:
        holder = leases.get(g.uuid)
        procs = [
            {"pid": p.pid, "used_mib": p.used_mib, "foreign": session_of(p.pid) not in sessions}
            for p in g.processes
        ]
        lease = None
        if holder is not None and holder.run is not None:
            lease = {"job": holder.id, "name": holder.name, "attempt": holder.run.attempt}
        out.append(
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "memory_total_mib": g.memory_total_mib,
                "memory_used_mib": g.memory_used_mib,
                "memory_free_mib": max(0, g.memory_total_mib - g.memory_used_mib),
                "utilization_pct": g.utilization_pct,
                "lease": lease,
                "processes": procs,
                "foreign_processes": sum(1 for p in procs if p["foreign"]),
            }
        )
    return out


def gpu_summary(view: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals of `gpus_view` for /v1/status."""
    n = len(view)
    return {
        "count": n,
        "memory_total_mib": sum(g["memory_total_mib"] for g in view),
        "memory_used_mib": sum(g["memory_used_mib"] for g in view),
        "utilization_pct": round(sum(g["utilization_pct"] for g in view) / n, 1) if n else 0.0,
        "leased": sum(1 for g in view if g["lease"] is not None),
        "foreign": sum(1 for g in view if g["foreign_processes"]),
        "free": sum(1 for g in view if g["lease"] is None and not g["foreign_processes"]),
    }


def page_states() -> dict[str, list[str]]:
    """The job states as the status page groups them: running, waiting (for the scheduler, or for a
    person to resume it), ended."""
    return {
        "running": ["running"],
        "waiting": [s for s in LIVE if s != "running"],
        "terminal": list(TERMINAL),
    }
