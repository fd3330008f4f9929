"""The state as people and scripts see it: the JSON shapes of the API (and of the CLI's --json).

Pure functions of the folded state, so the API, the CLI and the tests agree on one shape.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .state import Dataset, Job, State, Validation

__all__ = [
    "JOB_STATES",
    "dataset_view",
    "datasets_view",
    "intake_view",
    "job_counts",
    "job_view",
    "jobs_view",
    "projects_view",
]

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")


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


def datasets_view(state: State) -> list[dict[str, Any]]:
    validating = _validating_by_name(state)
    names = sorted(set(state.dataset_names) | set(validating))
    return [view for name in names if (view := _dataset_entry(state, name, validating.get(name))) is not None]


def job_view(state: State, job: Job, *, detail: bool = False) -> dict[str, Any]:
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
        "gpus": job.gpus,
        "gpu_ids": job.gpu_ids,
        "after": job.after,
        "datasets": job.inputs,
        "progress": None,
        "created": job.submitted_ts,
        "started": None,
        "ended": job.ended_ts,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
    }
    if detail:
        body["filename"] = job.filename
        body["sha256"] = job.sha256
        body["spec"] = job.spec
    return body


def jobs_view(
    state: State, *, job_state: str | None = None, project: str | None = None
) -> list[dict[str, Any]]:
    return [
        job_view(state, j)
        for j in state.jobs.values()
        if (job_state is None or j.state == job_state) and (project is None or j.project == project)
    ]


def job_counts(state: State) -> dict[str, int]:
    counts = Counter(j.state for j in state.jobs.values())
    return {s: counts.get(s, 0) for s in JOB_STATES}


def projects_view(state: State) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for job in state.jobs.values():
        entry = out.setdefault(job.project, {"name": job.project, "jobs": [], "counts": Counter()})
        entry["jobs"].append(job.id)
        entry["counts"][job.state] += 1
    for entry in out.values():
        entry["counts"] = dict(entry["counts"])
    return out


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
