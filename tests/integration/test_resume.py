"""A retry continues from the last complete checkpoint of the cancelled attempt, through a real
daemon and real swift on the tiny model: its step count goes on from there and the job succeeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon
from tests.integration.test_runs import RUNS, finished, job, job_yaml, maybe_job, sft_rows, wait_state

pytestmark = [pytest.mark.timeout(300), pytest.mark.extended]

MAX_STEPS = 200
SAVE_STEPS = 10


@pytest.fixture
def daemon(daemon_factory: type[Daemon], tmp_path: Path) -> Daemon:
    return daemon_factory(tmp_path / "d", extra_config=RUNS).start()


def complete_checkpoints(body: dict[str, Any], attempt: int) -> dict[int, str]:
    """Step -> path of the complete checkpoints the API lists for `attempt`."""
    return {
        a["step"]: a["path"]
        for a in body.get("artifacts") or []
        if a["attempt"] == attempt and a["kind"] == "adapter" and a["complete"] and a["step"] is not None
    }


def steps_logged(output_dir: Path) -> list[int]:
    """The global steps of swift's train records in logging.jsonl ('global_step/max_steps': 'N/M')."""
    steps = []
    for line in (output_dir / "logging.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and "global_step/max_steps" in record:
            steps.append(int(record["global_step/max_steps"].split("/")[0]))
    return steps


def test_a_retry_after_a_cancel_continues_from_the_last_checkpoint(daemon: Daemon, tiny_model: Path) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop(
        "long.yaml",
        job_yaml(
            tiny_model, "lora", dataset="chat", max_steps=MAX_STEPS, save_steps=SAVE_STEPS, logging_steps=1
        ),
    )
    d.wait_for("a complete checkpoint", lambda: complete_checkpoints(maybe_job(d, "long"), 1), 150)
    d.drop("stop.yaml", "cancel: long\n")
    first = finished(d, "long", 60)
    assert first["state"] == "cancelled" and first["run"]["exit"]["stopped"] == "cancel"
    saved = complete_checkpoints(first, 1)
    linked = [
        a["step"] for a in first["artifacts"] if a["attempt"] == 1 and a["path"].endswith("/last-checkpoint")
    ]
    step = max(s for s in saved if not linked or s <= max(linked))  # past the link: maybe mid-save
    assert step < MAX_STEPS, "the cancel came too late to test a resume"

    d.drop("again.yaml", "retry: long\n")
    wait_state(d, "long", ("running", "succeeded"), 60)
    done = finished(d, "long", 150)
    assert done["state"] == "succeeded", done["reason"]
    body = job(d, "long")
    run = body["run"]
    assert body["attempts"] == 2 and run["attempt"] == 2
    assert run["resume_from"] == saved[step], "the newest complete checkpoint of attempt 1"
    argv = run["argv"]
    assert argv[argv.index("--resume_from_checkpoint") + 1] == saved[step]

    output = Path(run["output_dir"])
    logged = steps_logged(output)
    assert logged and logged[0] == step + 1 and logged[-1] == MAX_STEPS, logged
    again = complete_checkpoints(body, 2)
    assert min(again) > step and max(again) == MAX_STEPS, again
    state = json.loads((output / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    assert body["final_checkpoint"] == again[MAX_STEPS]
