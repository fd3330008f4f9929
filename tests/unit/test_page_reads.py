"""What the status page reads beside the job list: finished jobs newest first a page at a time, a
dataset's first rows (bounded however long its rows are) and the jobs that read it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from daemon.core.state import JobState, State
from daemon.http.dataset_routes import sample_rows
from daemon.http.openapi import SAMPLE_BYTES
from daemon.http.views import dataset_jobs_page, job_ids_page
from tests.unit.test_api_reads import dataset, job, run

pytestmark = pytest.mark.timeout(30)

CYCLE: tuple[JobState, ...] = ("succeeded", "failed", "running", "queued", "cancelled")


def many(n: int) -> State:
    state = State()
    for i in range(1, n + 1):
        state.jobs[i] = job(i, CYCLE[i % len(CYCLE)], float(i))
    return state


def test_finished_jobs_newest_first_a_page_at_a_time() -> None:
    state = many(23)
    ended = ("succeeded", "failed", "cancelled")
    want = [i for i in range(23, 0, -1) if CYCLE[i % len(CYCLE)] in ended]
    got: list[int] = []
    before: int | None = 2**62
    while before is not None:
        ids, before = job_ids_page(state, job_states=ended, before=before, limit=4)
        got.extend(ids)
    assert got == want
    assert job_ids_page(state, job_states=ended, before=want[-1], limit=4) == ([], None)
    assert job_ids_page(state, job_states=("running",), after=5, limit=2) == ([7, 12], 12)


def test_a_page_of_10000_jobs_is_cheap() -> None:
    """The page asks for 50 finished jobs and the waiting ones: a walk over the jobs, not their views."""
    state = many(10_000)
    start = time.perf_counter()
    ids, cursor = job_ids_page(state, job_states=("succeeded", "failed", "cancelled"), before=2**62, limit=50)
    waiting, _ = job_ids_page(state, job_states=("queued", "interrupted"), limit=100)
    took = time.perf_counter() - start
    assert len(ids) == 50 and ids[0] == 10_000 and cursor == ids[-1] and len(waiting) == 100
    assert took < 0.05, took


def test_the_jobs_that_read_a_dataset() -> None:
    state = many(6)
    ds = dataset("a" * 64, "chat", ["chat", "talk"])
    state.datasets[ds.sha256] = ds
    state.dataset_names.update({"chat": ds.sha256, "talk": ds.sha256})
    state.jobs[2].inputs = {"chat": ds.sha256}
    used = run("/x.log", [], 1.0, None)
    used.inputs = {"talk": ds.sha256}
    state.jobs[5].runs.append(used)
    assert dataset_jobs_page(state, "nope", limit=10) is None
    page, after = dataset_jobs_page(state, "talk", limit=1) or ([], None)
    assert [j["id"] for j in page] == [2] and after == 2
    page, after = dataset_jobs_page(state, "chat", after=2, limit=10) or ([], None)
    assert [(j["id"], j["name"]) for j in page] == [(5, "j5")] and after is None


def test_sample_rows_are_bounded_and_text_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"text": "<script>x</script>"}, {"text": "b"}]
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + "not json\n" + "y" * (SAMPLE_BYTES * 2) + "\n"
    )
    got = sample_rows(path, 10)
    assert got is not None
    assert [r["data"] for r in got[:2]] == rows
    assert got[2] == {"row": 3, "data": None, "text": "not json", "cut": False}
    assert got[3]["cut"] and got[3]["data"] is None and len(got[3]["text"]) < SAMPLE_BYTES
    assert len(got) == 4
    assert sample_rows(path, 1) == got[:1]
    assert sample_rows(tmp_path / "gone.jsonl", 5) is None
    (tmp_path / "e.jsonl").write_text("")
    assert sample_rows(tmp_path / "e.jsonl", 5) == []
