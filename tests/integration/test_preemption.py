"""Preemption through a real daemon on one scripted fake GPU with the fake swift (issue 18 item 4): a
higher-priority job that cannot be placed otherwise pauses the preemptible run (its checkpoint first),
starts on its GPU, and the paused job resumes by itself from that checkpoint once the GPU is free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.runs.gpus import FAKE_GPUS_ENV
from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_restart import config
from tests.integration.test_runs import finished, job_yaml, maybe_job, sft_rows

pytestmark = pytest.mark.timeout(120)


def test_a_higher_priority_job_preempts_and_the_preempted_one_resumes(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    gpus = tmp_path / "gpus.json"
    gpus.write_text(json.dumps({"count": 1, "processes": {}}))
    env = {FAKE_GPUS_ENV: str(gpus), "LLMTRAIND_GPUS_DEVICES": "auto", "LLMTRAIND_RUNS_GPU_PROBE_S": "0.2"}
    d = daemon_factory(
        tmp_path / "d", extra_config=config(write_wrapper(tmp_path, step_s=0.1)), env=env
    ).start()
    d.drop("chat.jsonl", sft_rows())
    model = fake_model(tmp_path / "m")
    d.drop("low.yaml", job_yaml(model, "sft", dataset="chat", max_steps=60, preemptible=True))
    d.wait_for(
        "low past step 3", lambda: ((maybe_job(d, "low").get("progress") or {}).get("step") or 0) >= 3, 30
    )
    d.drop("urgent.yaml", job_yaml(model, "sft", dataset="chat", max_steps=5, priority=10))

    assert finished(d, "urgent", 60)["state"] == "succeeded"
    low = finished(d, "low", 60)
    assert low["state"] == "succeeded" and low["attempts"] == 2, low

    code, page = d.get("/v1/events?limit=1000")
    assert code == 200
    names = {j["id"]: j["name"] for j in d.get("/v1/jobs")[1]["jobs"]}
    steps = [
        (e["type"], names[e["data"]["job_id"]], e["data"].get("outcome"))
        for e in page["events"]
        if e["type"] in ("JobStarted", "JobPreempted", "RunExited")
    ]
    assert steps == [
        ("JobStarted", "low", None),
        ("JobPreempted", "low", None),
        ("RunExited", "low", "paused"),
        ("JobStarted", "urgent", None),
        ("RunExited", "urgent", "succeeded"),
        ("JobStarted", "low", None),
        ("RunExited", "low", "succeeded"),
    ], steps
    preempted = next(e["data"] for e in page["events"] if e["type"] == "JobPreempted")
    assert (
        "job urgent (priority 10) needs 1 GPU(s) that job low (priority 0, preemptible) holds"
        == preempted["reason"]
    )
    second = next(
        e["data"]
        for e in page["events"]
        if e["type"] == "JobStarted" and names[e["data"]["job_id"]] == "low" and e["data"]["attempt"] == 2
    )
    assert second["resume_from"] and Path(second["resume_from"]).name.startswith("checkpoint-")
