"""`llmtraind demo`: what it writes is accepted by intake as it stands, and what it prints and decides
while following is right. No daemon, no network: the pure parts only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.demo import DemoError, daemon_urls
from daemon.cli.demo_files import DPO, MERGE, PT, SFT, demo_datasets, demo_jobs, next_run
from daemon.cli.demo_follow import (
    Outcome,
    curl_hints,
    describe,
    job_line,
    line_key,
    outcomes,
    rejections,
    touched_jobs,
)
from daemon.cli.main import main
from daemon.core.config import LimitsConfig, load_config
from daemon.core.datasets import can_feed
from daemon.core.drops import FileVerdict
from daemon.core.jobs import JobSpec, ModelRef
from daemon.intake.decide import feeds
from daemon.intake.validate import check_file, local_swift_args

MODEL = Path("/srv/llmtraind/state/demo/tiny-qwen2")


def write(folder: Path, files: dict[str, bytes]) -> list[Path]:
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def checked(path: Path) -> FileVerdict:
    verdict = check_file(path, LimitsConfig(), local_swift_args())
    assert verdict.ok, verdict.problems
    return verdict


def spec_of(verdict: FileVerdict) -> JobSpec:
    assert isinstance(verdict.job, JobSpec)
    return verdict.job


# ---------------------------------------------------------------------------------------------
# What the demo writes


def test_datasets_are_fixed_and_of_the_three_formats(tmp_path: Path) -> None:
    files = demo_datasets()
    assert files == demo_datasets(), "a re-run must drop the same bytes: the daemon keeps one copy"
    formats = {}
    for path in write(tmp_path, files):
        report = checked(path).dataset
        assert report is not None and report.rows == 32
        formats[path.name] = report.format
    assert formats == {
        "demo_sft.jsonl": "sft_messages",
        "demo_dpo.jsonl": "preference",
        "demo_pt.jsonl": "pretrain_text",
    }


def test_preference_rows_are_in_the_original_form() -> None:
    row = json.loads(demo_datasets()["demo_dpo.jsonl"].splitlines()[0])
    assert set(row) == {"prompt", "chosen", "rejected"} and row["chosen"] != row["rejected"]


def test_jobs_pass_check_and_their_datasets_feed_them(tmp_path: Path) -> None:
    """The same code as intake and `llmtraind check`, including the dataset/task fit intake checks."""
    reports = {p.name: checked(p).dataset for p in write(tmp_path, demo_datasets())}
    plan = demo_jobs(MODEL, 3, 7)
    specs = {}
    for job, path in zip(plan, write(tmp_path, {j.filename: j.text.encode() for j in plan}), strict=True):
        spec = specs[job.name] = spec_of(checked(path))
        assert spec.name == job.name and spec.project == "demo" and spec.gpus is None
        for need in job.needs:
            report = reports[need]
            assert report is not None
            task = feeds(spec)
            assert task is not None and can_feed(report, task, spec.effective_rlhf_type) is None
    sft, merge, dpo, pt = (specs[f"{base}-3"] for base in (SFT, MERGE, DPO, PT))
    assert (sft.task, sft.tuner, dpo.task, dpo.effective_rlhf_type, dpo.tuner, pt.task, pt.tuner) == (
        "sft",
        "lora",
        "rlhf",
        "dpo",
        "lora",
        "pretrain",
        "full",
    )
    for spec in (sft, dpo, pt):
        assert spec.model == ModelRef(kind="path", ref=str(MODEL))
        assert (spec.model_type, spec.template) == ("qwen2", "qwen")
        assert spec.train is not None and (spec.train.max_steps, spec.train.save_steps) == (7, 5)
    assert merge.task == "export" and merge.export is not None and merge.export.merge_lora
    assert merge.adapters == ModelRef(kind="job", ref=f"{SFT}-3") and merge.after == (f"{SFT}-3",)


def test_the_check_command_accepts_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "llmtraind.toml").write_text("")
    plan = demo_jobs(MODEL, 1, 10)
    paths = write(tmp_path, {**demo_datasets(), **{j.filename: j.text.encode() for j in plan}})
    assert main(["check", "--config", str(tmp_path / "llmtraind.toml"), *map(str, paths)]) == 0
    assert capsys.readouterr().out.count(": ok: ") == 7


def test_a_model_path_with_spaces_survives_the_yaml(tmp_path: Path) -> None:
    model = Path("/data/my models/tiny: qwen2")
    (job,) = [j for j in demo_jobs(model, 1, 10) if j.name == f"{PT}-1"]
    (tmp_path / job.filename).write_text(job.text)
    assert spec_of(checked(tmp_path / job.filename)).model == ModelRef(kind="path", ref=str(model))


def test_next_run_counts_past_every_demo_job() -> None:
    assert next_run([]) == 1
    assert next_run(["demo-sft-lora-3", "demo-merge-7", "demo-pt-2", "first"]) == 8
    assert next_run(["demo-sft-lora", "demo-sft-lora-x", "other-9", "demo-sft-lora-2-b", "xdemo-pt-5"]) == 1


# ---------------------------------------------------------------------------------------------
# Following


def job(name: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": 1,
        "name": name,
        "state": state,
        "reason": None,
        "task_type": "sft",
        "progress": None,
        **extra,
    }


def test_describe_shows_what_the_job_has() -> None:
    running = job(
        "a",
        "running",
        progress={"step": 4, "max_steps": 10, "percent": 40.0, "eta_s": 3},
        metrics={"loss": "6.024"},
    )
    assert describe(running) == "40% step 4/10 loss 6.024"
    assert describe(job("a", "running", metrics={"loss": 6.037514})) == "loss 6.038"
    done = job(
        "a", "succeeded", progress={"step": 10, "max_steps": 10}, metrics={"kind": "summary", "loss": 6.1}
    )
    assert describe(done) == "100% step 10/10 mean loss 6.1"
    assert describe(job("a", "running", progress={"step": 2, "max_steps": 8})) == "25% step 2/8"
    assert (
        describe(job("a", "queued", reason="waiting for dataset demo_sft")) == "waiting for dataset demo_sft"
    )
    assert describe({"name": "a", "state": "queued"}) == ""
    assert describe(job("a", "running", progress={"step": None}, metrics={"lr": 1e-4})) == ""


def test_a_line_is_printed_again_only_when_state_reason_or_percent_change() -> None:
    at = {"step": 4, "max_steps": 100, "percent": 4.0, "eta_s": 30}
    base = line_key(job("a", "running", progress=at))
    assert line_key(job("a", "running", progress={**at, "eta_s": 20, "step": 4}, metrics={"loss": 1})) == base
    assert line_key(job("a", "running", progress={**at, "percent": 5.0})) != base
    assert line_key(job("a", "succeeded", progress=at)) != base


def test_job_line_colours_only_when_asked() -> None:
    plain = job_line("demo-pt-1", 15, "running", "40% step 4/10", color=False)
    assert plain == "demo-pt-1        running    40% step 4/10"
    assert "\033[" not in plain
    coloured = job_line("demo-pt-1", 15, "failed", "exit 1", color=True)
    assert "\033[31m" in coloured and coloured.endswith("\033[0m  exit 1")
    assert job_line("x", 1, "queued", "", color=False) == "x  queued"


def test_outcomes() -> None:
    plan = demo_jobs(MODEL, 1, 10)
    sft, merge, dpo, pt = (j.name for j in plan)
    running = {sft: job(sft, "running"), merge: job(merge, "queued"), dpo: job(dpo, "queued")}
    assert set(outcomes(plan, running, {}).values()) == {None}

    done = {j.name: job(j.name, "succeeded") for j in plan}
    assert all(o == Outcome("succeeded") for o in outcomes(plan, done, {}).values())

    failed = {**done, sft: job(sft, "failed", reason="exit 1: OOM"), merge: job(merge, "queued")}
    result = outcomes(plan, failed, {})
    assert result[sft] == Outcome("failed", "exit 1: OOM")
    assert result[merge] == Outcome("not run", f"{sft} failed")

    rejected = {f"{dpo}.yaml": "bad", "demo_pt.jsonl": "broken"}
    result = outcomes(plan, {sft: job(sft, "running"), merge: job(merge, "queued")}, rejected)
    assert result == {
        sft: None,
        merge: None,
        dpo: Outcome("rejected", "bad"),
        pt: Outcome("not run", "its dataset demo_pt.jsonl was rejected: broken"),
    }


def test_a_started_job_is_followed_even_if_its_dependency_failed() -> None:
    plan = demo_jobs(MODEL, 1, 10)
    sft, merge = plan[0].name, plan[1].name
    result = outcomes(plan, {sft: job(sft, "cancelled"), merge: job(merge, "running")}, {})
    assert result[sft] == Outcome("cancelled") and result[merge] is None


def test_rejections_pick_the_demo_files(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = [
        {
            "type": "FileRejected",
            "data": {"filename": "demo-pt-2.yaml", "summary": "no", "kept_as": "demo-pt-2-2.yaml"},
        },
        {
            "type": "FileRejected",
            "data": {"filename": "other.yaml", "summary": "no", "kept_as": "other.yaml"},
        },
        {"type": "JobSubmitted", "data": {"filename": "demo-dpo-2.yaml"}},
    ]
    found = rejections(events, ["demo-pt-2.yaml", "demo-dpo-2.yaml"], tmp_path)
    assert found == {"demo-pt-2.yaml": f"no (details: {tmp_path / 'demo-pt-2-2.yaml.error.txt'})"}


def test_curl_hints_never_show_the_token() -> None:
    lines = curl_hints("http://127.0.0.1:8470", 4, token=False)
    assert lines == [
        "curl -s http://127.0.0.1:8470/v1/status",
        "curl -s http://127.0.0.1:8470/v1/jobs",
        "curl -s http://127.0.0.1:8470/v1/jobs/demo-sft-lora-4/metrics",
        "curl -s http://127.0.0.1:8470/v1/jobs/demo-merge-4/artifacts",
    ]
    with_token = curl_hints("http://h:1", 4, token=True)
    assert all('Bearer $TOKEN"' in line for line in with_token[1:]) and len(with_token) == 5


def test_daemon_urls(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('[api]\nport = 9001\n[paths]\nstate = "st"\n')
    cfg = load_config(tmp_path / "c.toml", environ={})
    assert daemon_urls("http://x:1/", cfg) == ["http://x:1"]
    assert daemon_urls(None, cfg) == ["http://127.0.0.1:9001"]
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "daemon.json").write_text(json.dumps({"url": "http://127.0.0.1:5555", "pid": 1}))
    assert daemon_urls(None, cfg) == ["http://127.0.0.1:5555", "http://127.0.0.1:9001"]
    with pytest.raises(DemoError, match="not an http"):
        daemon_urls("file:///etc/passwd", cfg)


def test_steps_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--steps", "0"])
    assert info.value.code == 2 and "0 is not 1 or more" in capsys.readouterr().err


def test_an_event_touches_its_job_or_the_jobs_a_new_reason_names() -> None:
    assert touched_jobs({"stream": "job:7", "type": "JobProgress", "data": {}}) == {7}
    waiting = {"stream": "scheduler", "type": "JobsWaiting", "data": {"reasons": {"3": "a", "12": "b"}}}
    assert touched_jobs(waiting) == {3, 12}
    assert touched_jobs({"stream": "intake", "type": "FileRejected", "data": {"filename": "x"}}) == set()
