"""Which complete checkpoints the retention rules delete: `keep_checkpoints` (per job, default
`[runs] keep_checkpoints`) and `keep_best`. The daemon prunes, not swift: swift's `save_total_limit`
deletes blindly, and with `load_best_model_at_end` its users lost their best checkpoint.

Never pruned: a checkpoint not yet complete (a save in progress), the newest complete one of each
attempt (a failed or cancelled run resumes from it), the best by `keep_best`, the one a live run
continues from, a job's final checkpoint while a live job names it (`@JOB`), and any path a live
job's spec names. Pure: the caller reads the metrics (`best_steps`) and does the deleting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from daemon.core.events import ArtifactRecord, CheckpointPruned
from daemon.core.state import LIVE, Job, State
from daemon.runs.swift.artifacts import final_checkpoint
from daemon.runs.swift.progress import parse_metrics

__all__ = ["best_step", "describe", "dumps", "keep_of", "plan", "protected_paths"]

_CHECKPOINTS = ("checkpoint", "adapter")


def keep_of(job: Job, default: int) -> int:
    value = job.spec.get("keep_checkpoints")
    return value if isinstance(value, int) else default


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def protected_paths(state: State) -> set[str]:
    """Checkpoints something still needs: what live runs continue from, the final checkpoints of
    jobs a live job names by `@JOB`, and every absolute path in a live job's spec."""
    keep: set[str] = set()
    for job in state.jobs.values():
        if job.state not in LIVE:
            continue
        if job.resume_from is not None:
            keep.add(job.resume_from)
        if job.run is not None and job.run.resume_from is not None:
            keep.add(job.run.resume_from)
        for text in _strings(job.spec):
            if text.startswith("/"):
                keep.add(text.rstrip("/"))
            elif text.startswith("@"):
                named = state.find_job(text[1:])
                if named is not None and named.final_checkpoint is not None:
                    keep.add(named.final_checkpoint)
    return keep


def best_step(logging_jsonl: Path, metric: str, mode: str) -> int | None:
    """The step of the best value of `metric` in a run's logging.jsonl (eval records carry eval_*
    names; `loss` is the train loss); None when it was never logged. Reads a file: call from a thread."""
    best: tuple[float, int] | None = None
    try:
        lines = logging_jsonl.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        record = parse_metrics(line)
        if record is None:
            continue
        value = record.raw.get(metric)
        if value is None or not math.isfinite(value):
            continue
        score = value if mode == "min" else -value
        if best is None or score < best[0]:
            best = (score, record.step)
    return None if best is None else best[1]


def _checkpoint_of_step(checkpoints: list[ArtifactRecord], step: int) -> ArtifactRecord | None:
    """The checkpoint that holds the weights evaluated at `step`: the newest saved at or before it."""
    before = [a for a in checkpoints if a.step is not None and a.step <= step]
    return max(before, key=lambda a: a.step or 0, default=None)


def plan(
    state: State, default_keep: int, best_steps: Mapping[tuple[int, int], int | None]
) -> list[CheckpointPruned]:
    """The deletions the rules call for now. `best_steps`: (job, attempt) -> the step of its best
    `keep_best` value, for the jobs that have that rule."""
    protected = protected_paths(state)
    out: list[CheckpointPruned] = []
    for job in state.jobs.values():
        keep = keep_of(job, default_keep)
        if keep <= 0 or not job.runs:
            continue
        best = job.spec.get("keep_best")
        done = [
            (run.attempt, a)
            for run in job.runs
            for a in run.artifacts
            if a.kind in _CHECKPOINTS and a.complete and a.step is not None
        ]
        if len(done) <= keep:
            continue
        kept: set[str] = set()
        for attempt in {attempt for attempt, _ in done}:
            mine = [a for n, a in done if n == attempt]
            kept.add(max(mine, key=lambda a: a.step or 0).path)
            linked = final_checkpoint(next(r for r in job.runs if r.attempt == attempt).artifacts)
            if linked is not None:  # what a retry resumes from, when the newest may be mid-save
                kept.add(linked.path)
            step = best_steps.get((job.id, attempt))
            found = None if step is None else _checkpoint_of_step(mine, step)
            if found is not None:
                kept.add(found.path)
        newest = sorted(done, key=lambda pair: (pair[0], pair[1].step or 0), reverse=True)
        kept.update(a.path for _, a in newest[:keep])
        for attempt, a in newest[keep:]:
            if a.path in kept or a.path in protected:
                continue
            reason = f"keep_checkpoints {keep}" + (f", keep_best {best[0]}" if isinstance(best, list) else "")
            out.append(
                CheckpointPruned(job_id=job.id, attempt=attempt, path=a.path, bytes=a.bytes, reason=reason)
            )
    return out


def describe(pruned: Iterable[CheckpointPruned]) -> str:
    """One line per deletion, for `llmtraind prune --dry-run`."""
    return "".join(
        f"job {p.job_id} attempt {p.attempt}: {p.path} ({p.bytes:,} bytes; {p.reason})\n" for p in pruned
    )


def dumps(pruned: Iterable[CheckpointPruned]) -> str:
    return json.dumps([p.model_dump(exclude={"type"}) for p in pruned], indent=2)
