"""Logs written by released versions must replay forever (E5). Never edit a fixture: add a new one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from daemon.log.projector import load_state_at_path
from daemon.log.store import EventStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


async def load_fixture(name: str, db: Path) -> None:
    store = await EventStore.open(db)
    await store.close()
    conn = sqlite3.connect(db)
    with conn:
        for line in (FIXTURES / name).read_text().splitlines():
            row = json.loads(line)
            conn.execute(
                "INSERT INTO events (seq, stream, version, type, schema, idem_key, ts, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row["seq"],
                    row["stream"],
                    row["version"],
                    row["type"],
                    row["schema"],
                    row["idem_key"],
                    row["ts"],
                    json.dumps(row["data"]),
                ),
            )
    conn.close()


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("events_v*.jsonl")))
async def test_fixture_log_opens_and_replays(name: str, tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await load_fixture(name, db)
    store = await EventStore.open(db)
    assert len(await store.read(limit=1000)) == store.last_seq
    await store.close()
    state = load_state_at_path(db)
    assert state.last_seq == store.last_seq


async def test_v1_fixture_folds_to_what_v1_saw(tmp_path: Path) -> None:
    """0.1.0's log: start, clean stop, start, kill -9, start, clean stop."""
    db = tmp_path / "log.db"
    await load_fixture("events_v1.jsonl", db)
    state = load_state_at_path(db)
    assert (state.last_seq, state.daemon_starts, state.unclean_stops) == (5, 3, 1)
    assert state.daemon is not None and state.daemon.pid == 4999 and state.daemon.stopped_ts is not None


async def test_v2_fixture_folds_to_what_v2_saw(tmp_path: Path) -> None:
    """0.2.0's log: a job waiting for its dataset, the dataset, a duplicate, a rejection, cancel,
    retry, and a large dataset whose validation progress was recorded."""
    db = tmp_path / "log.db"
    await load_fixture("events_v2.jsonl", db)
    state = load_state_at_path(db)
    job = state.jobs[1]
    assert (job.name, job.state, job.reason, job.tuner) == ("train", "queued", "", "lora")
    assert set(state.dataset_names) == {"sft_demo", "again", "big"}
    assert state.dataset_names["sft_demo"] == state.dataset_names["again"]
    assert state.datasets[state.dataset_names["big"]].rows == 200_000
    assert state.validating == {}
    c = state.intake
    assert (c.datasets, c.jobs, c.controls, c.duplicates, c.rejected) == (2, 1, 2, 1, 1)


async def test_v3_fixture_folds_to_what_v3_saw(tmp_path: Path) -> None:
    """0.3.0's log: a LoRA run and its merge succeeded, a long run cancelled while training, a run
    that failed on a missing model directory; every run event type."""
    db = tmp_path / "log.db"
    await load_fixture("events_v3.jsonl", db)
    state = load_state_at_path(db)
    tune, merge, long, broken = (state.jobs[i] for i in (1, 2, 3, 4))
    assert tune.state == "succeeded" and tune.final_checkpoint is not None
    assert tune.final_checkpoint.endswith("checkpoint-3")
    assert (
        merge.state == "succeeded" and merge.final_model is not None and merge.final_model.endswith("/model")
    )
    assert long.state == "cancelled" and long.run is not None and long.run.exit is not None
    assert long.run.exit.stopped == "cancel"
    assert broken.state == "failed" and "/nonexistent/model" in broken.reason
    assert broken.run is not None and broken.run.exit is not None and broken.run.exit.failure is not None
    assert broken.run.exit.failure.kind == "model_not_found"
    run = tune.run
    assert run is not None and run.progress is not None and run.progress.percent == 100.0
