"""A job waiting for a dataset whose drop was rejected says so, through a real daemon: which file, when,
and where the reason is; once a good file of that name is accepted, it reads it. The good file is the
management API's own RL example (a pair row and a scored-responses row), and a real DPO run of one step
on the tiny model shows that ms-swift reads what it was converted to."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon
from tests.seeds import SEED_RL_DATA

pytestmark = [pytest.mark.timeout(240), pytest.mark.extended]

RUNS = """
[runs]
stop_grace_s = 3
poll_s = 0.2
schedule_s = 0.5
"""
SINGLE_RESPONSE = {"prompt": "Hello", "responses": [{"content": "Hi", "score": 1.0}]}


def dpo_job(model: Path) -> str:
    fields: dict[str, Any] = {
        "task_type": "rl",
        "algorithm": "dpo",
        "policy_model": str(model),
        "model_type": "qwen2",
        "template": "qwen",
        "dataset": "datasets/rl_preference.jsonl",
        "gradient_accumulation_steps": 1,
        "max_steps": 1,
    }
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items())


def job(d: Daemon, ref: str) -> dict[str, Any]:
    code, body = d.get(f"/v1/jobs/{ref}")
    return dict(body) if code == 200 else {}


def rejected_at(d: Daemon, filename: str) -> float:
    code, page = d.get("/v1/events?limit=1000")
    assert code == 200
    return float(
        next(
            e["ts"]
            for e in page["events"]
            if e["type"] == "FileRejected" and e["data"]["filename"] == filename
        )
    )


def test_a_job_waiting_for_a_rejected_dataset_says_so_until_a_good_one_comes(
    daemon_factory: type[Daemon], tmp_path: Path, tiny_model: Path
) -> None:
    d = daemon_factory(tmp_path / "d", extra_config=RUNS).start()
    d.drop("prefer.yaml", dpo_job(tiny_model))
    waiting = d.wait_for("the job, waiting", lambda: job(d, "prefer").get("reason"))
    assert waiting == "waiting for dataset rl_preference"

    d.drop("rl_preference.jsonl", SEED_RL_DATA + json.dumps(SINGLE_RESPONSE) + "\n")
    note = d.wait_for("the rejection in the reason", lambda: "rejected" in job(d, "prefer")["reason"])
    assert note
    at = time.strftime("%H:%M UTC", time.gmtime(rejected_at(d, "rl_preference.jsonl")))
    assert job(d, "prefer")["reason"] == (
        f"waiting for dataset rl_preference \u2014 rl_preference.jsonl was rejected at {at}, "
        "see inbox/rejected/rl_preference.jsonl.error.txt"
    )
    assert job(d, "prefer")["state"] == "queued"
    error = (d.inbox / "rejected" / "rl_preference.jsonl.error.txt").read_text()
    assert "line 3" in error and "needs at least 2 responses" in error

    d.drop("rl_preference.jsonl", SEED_RL_DATA)
    d.wait_for("the job to read the good file", lambda: "rejected" not in job(d, "prefer")["reason"])
    code, dataset = d.get("/v1/datasets/rl_preference")
    assert code == 200, dataset
    assert (dataset["format"], dataset["rows"]) == ("preference", 2)
    assert dataset["stats"]["preference"]["from_scored_responses"] == 1

    done = d.wait_for(
        "the DPO run to end",
        lambda: (j := job(d, "prefer"))["state"] in ("succeeded", "failed", "cancelled") and j,
        180,
    )
    assert done["state"] == "succeeded", (done["reason"], done["run"]["exit"])
    assert "--rlhf_type" in done["run"]["argv"]
