"""Pause and resume through a real daemon and real swift on the tiny model (issue 18 item 3): the
pause saves a checkpoint at the next step and stops the run, the job holds `paused` without its
slot, and the resumed attempt continues past the paused step to max_steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.integration.test_resume import steps_logged
from tests.integration.test_runs import RUNS, finished, job, job_yaml, maybe_job, sft_rows, wait_state

pytestmark = [pytest.mark.extended, pytest.mark.timeout(300)]

MAX_STEPS = 24


@pytest.fixture
def daemon(daemon_factory: type[Daemon], tmp_path: Path) -> Daemon:
    return daemon_factory(tmp_path / "d", extra_config=RUNS).start()


def _step(body: dict[str, object]) -> int:
    progress = body.get("progress")
    return int(progress["step"]) if isinstance(progress, dict) and progress.get("step") else 0


def test_a_paused_run_saves_stops_and_resumes_past_the_paused_step(daemon: Daemon, tiny_model: Path) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    # no save_steps within max_steps: the only checkpoint before the end is the one the pause makes
    d.drop(
        "long.yaml",
        job_yaml(tiny_model, "lora", dataset="chat", max_steps=MAX_STEPS, save_steps=1000, logging_steps=1),
    )
    d.wait_for("two train steps", lambda: _step(maybe_job(d, "long")) >= 2, 150)
    paused_cli = d.cli("pause", "long", "--wait", "90", timeout=120)
    assert paused_cli.returncode == 0, paused_cli.stderr
    assert "is paused" in paused_cli.stdout, paused_cli.stdout

    body = job(d, "long")
    exit_ = body["run"]["exit"]
    assert body["state"] == "paused" and exit_["outcome"] == "paused", body
    assert exit_["stopped"] == "pause" and exit_["returncode"] == 0
    step = _step(body)
    assert 2 <= step < MAX_STEPS, step
    checkpoint = str(Path(body["run"]["output_dir"]) / f"checkpoint-{step}")
    assert Path(checkpoint, "trainer_state.json").is_file()
    assert f"checkpoint-{step}" in body["reason"] and "llmtraind resume long" in body["reason"]
    assert "llmtraind_pause" in body["run"]["argv"]

    refused = d.cli("pause", "long", timeout=30)
    assert refused.returncode == 1 and "only a running job can be paused" in refused.stderr

    resumed = d.cli("resume", "long", timeout=30)
    assert resumed.returncode == 0, resumed.stderr
    wait_state(d, "long", ("running", "succeeded"), 60)
    done = finished(d, "long", 150)
    assert done["state"] == "succeeded", done["reason"]
    run = job(d, "long")["run"]
    assert run["attempt"] == 2 and run["resume_from"] == checkpoint
    logged = steps_logged(Path(run["output_dir"]))
    assert logged and logged[0] == step + 1 and logged[-1] == MAX_STEPS, logged
