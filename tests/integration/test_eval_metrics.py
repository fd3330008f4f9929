"""Evaluation metrics from a validation split through a real daemon and real swift on the tiny model
(issue 18 item 6): swift's eval records are kept as the run's metrics, and the API, /metrics and
`llmtraind show` report the last evaluation."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.integration.test_runs import RUNS, finished, job, job_yaml, sft_rows

pytestmark = [pytest.mark.extended, pytest.mark.timeout(300)]


@pytest.fixture
def daemon(daemon_factory: type[Daemon], tmp_path: Path) -> Daemon:
    return daemon_factory(tmp_path / "d", extra_config=RUNS).start()


def test_a_validation_split_gives_eval_loss_in_the_api_metrics_and_show(
    daemon: Daemon, tiny_model: Path
) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows(16))
    d.drop(
        "evals.yaml",
        job_yaml(
            tiny_model,
            "lora",
            dataset="chat",
            max_steps=4,
            eval_steps=2,
            save_steps=4,
            swift={"split_dataset_ratio": 0.25},
        ),
    )
    done = finished(d, "evals", 180)
    assert done["state"] == "succeeded", done["reason"]
    run = job(d, "evals")["run"]
    argv = run["argv"]
    assert argv[argv.index("--split_dataset_ratio") + 1] == "0.25"
    last = run["eval"]
    assert last is not None and last["kind"] == "eval" and last["step"] == 4, last
    assert last["loss"] is not None and last["raw"]["eval_loss"] == last["loss"]

    code, page = d.get("/v1/jobs/evals/metrics")
    assert code == 200
    evals = [m for m in page["metrics"] if m["kind"] == "eval"]
    assert [m["step"] for m in evals] == [2, 4], evals

    with urllib.request.urlopen(d.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    job_label, rest = f'job="{done["id"]}"', f'name="evals",project="{done["project"]}"'
    assert f'llmtraind_job_eval{{{job_label},metric="loss",{rest}}}' in text, text
    assert f"llmtraind_job_eval_step{{{job_label},{rest}}} 4.0" in text

    shown = d.cli("show", "evals", timeout=30)
    assert shown.returncode == 0 and "evaluation" in shown.stdout and "step 4: loss" in shown.stdout, (
        shown.stdout
    )
