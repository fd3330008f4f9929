"""The retention rules (issue 18 item 1): the newest `keep_checkpoints`, the last of each attempt,
the best by `keep_best`, and anything a live job needs stay; incomplete checkpoints are never touched."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemon.core.events import ArtifactRecord
from daemon.core.state import Job, State
from daemon.runs.retention import best_step, plan, protected_paths
from tests.fold_world import job, run

OUT = "/s/runs/x-1/1/output"


def ckpt(step: int, *, complete: bool = True, out: str = OUT) -> ArtifactRecord:
    return ArtifactRecord(
        kind="adapter", path=f"{out}/checkpoint-{step}", bytes=step, step=step, complete=complete
    )


def spec_job(job_id: int = 1, spec: dict[str, Any] | None = None, **fields: Any) -> Job:
    made = job(job_id, **fields)
    return replace(made, spec={**made.spec, **(spec or {})})


def pruned_steps(
    state: State, default: int = 2, best: dict[tuple[int, int], int | None] | None = None
) -> list[int]:
    return sorted(int(p.path.rsplit("-", 1)[1]) for p in plan(state, default, best or {}))


def test_the_newest_are_kept_and_an_incomplete_save_is_never_touched() -> None:
    arts = [ckpt(s) for s in (1, 2, 3, 4)] + [ckpt(5, complete=False)]
    state = State(jobs={1: job(state="running", runs=[run(artifacts=arts)])})
    assert pruned_steps(state) == [1, 2]
    assert pruned_steps(state, default=0) == [], "0 keeps all"
    spec_keep = spec_job(state="succeeded", runs=[run(artifacts=arts)], spec={"keep_checkpoints": 1})
    assert pruned_steps(State(jobs={1: spec_keep})) == [1, 2, 3]
    event = plan(State(jobs={1: spec_keep}), 3, {})[0]
    assert (event.job_id, event.attempt, event.bytes, event.reason) == (1, 1, 3, "keep_checkpoints 1")


def test_the_best_and_each_attempts_last_are_kept_besides() -> None:
    first = run(1, artifacts=[ckpt(s) for s in (1, 2, 3)])
    second = run(2, artifacts=[ckpt(s, out="/s/runs/x-1/2/output") for s in (4, 5, 6)])
    spec = {"keep_checkpoints": 1, "keep_best": ["eval_loss", "min"]}
    state = State(jobs={1: spec_job(state="succeeded", runs=[first, second], spec=spec)})
    # attempt 1's best eval came at step 2 (held by checkpoint-2); its last is checkpoint-3
    kept = {p.path for p in plan(state, 3, {(1, 1): 2, (1, 2): None})}
    assert kept == {
        f"{OUT}/checkpoint-1",
        "/s/runs/x-1/2/output/checkpoint-4",
        "/s/runs/x-1/2/output/checkpoint-5",
    }


def test_what_a_live_job_names_or_resumes_from_stays() -> None:
    arts = [ckpt(s) for s in (1, 2, 3, 4)]
    named = spec_job(2, name="merge", state="queued", spec={"adapters": f"{OUT}/checkpoint-1"})
    resumed = job(3, name="again", state="queued", resume_from=f"{OUT}/checkpoint-2")
    state = State(jobs={1: job(state="succeeded", runs=[run(artifacts=arts)]), 2: named, 3: resumed})
    assert protected_paths(state) == {f"{OUT}/checkpoint-1", f"{OUT}/checkpoint-2"}
    assert pruned_steps(state) == []
    named.state = "succeeded"
    assert pruned_steps(state) == [1]


def test_best_step_reads_the_runs_log(tmp_path: Path) -> None:
    log = tmp_path / "logging.jsonl"
    rows = [
        {"loss": 2.0, "global_step/max_steps": "1/4"},
        {"eval_loss": 1.5, "eval_rouge-l": 20.0, "global_step/max_steps": "2/4"},
        {"eval_loss": 1.2, "eval_rouge-l": 10.0, "global_step/max_steps": "4/4"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert best_step(log, "eval_loss", "min") == 4
    assert best_step(log, "eval_rouge-l", "max") == 2
    assert best_step(log, "eval_bleu-4", "max") is None
    assert best_step(tmp_path / "missing.jsonl", "eval_loss", "min") is None
