"""A model folder that asks for code after its job was accepted (issue 12): the job waits in the
queue, its folder gains an `auto_map`, and when its turn comes the run is not started: the job
fails with the refusal intake would have given. A real daemon and the fake swift of
tests/fakeswift.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_restart import make
from tests.integration.test_runs import finished, job_yaml, maybe_job, sft_rows

pytestmark = pytest.mark.timeout(180)


def test_a_folder_changed_after_acceptance_is_refused_when_the_run_would_start(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = make(daemon_factory, tmp_path, write_wrapper(tmp_path), cpu_slots=1)
    d.drop("chat.jsonl", sft_rows())
    first = fake_model(tmp_path / "a")
    (first / "hold").write_text("")
    d.drop("first.yaml", job_yaml(first, "sft", dataset="chat", max_steps=2))
    d.wait_for("first running", lambda: maybe_job(d, "first").get("state") == "running", 60)
    second = fake_model(tmp_path / "b")
    d.drop("second.yaml", job_yaml(second, "sft", dataset="chat", max_steps=2))
    d.wait_for("second accepted and queued", lambda: maybe_job(d, "second").get("state") == "queued", 30)

    (second / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling_evil.Model"}}))
    (first / "hold").unlink()
    assert finished(d, "first", 60)["state"] == "succeeded"
    refused = finished(d, "second", 60)
    assert refused["state"] == "failed", refused
    assert f"model {str(second)!r} asks for remote code (auto_map in config.json)" in refused["reason"]
    assert "allow_code" in refused["reason"] and refused["run"] is None and refused["runs"] == []
    code, page = d.get("/v1/events?limit=1000")
    assert code == 200
    started = [e["data"]["job_id"] for e in page["events"] if e["type"] == "JobStarted"]
    assert started == [maybe_job(d, "first")["id"]], "the refused job never started"
