"""Model folders checked again as a run is about to start: which argv values are model folders, and
the refusal a start gets when one now asks for code (the check is intake's own `remote_code`)."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.core.events import JobStarted
from daemon.core.jobs.trust import SETTING
from daemon.intake.validate import remote_code
from daemon.runs.model_code import model_folders, refuse_model_code


def started(job_id: int, *flags: str) -> JobStarted:
    return JobStarted(
        job_id=job_id,
        attempt=1,
        gpu_uuids=[],
        gpu_indices=[],
        argv=["/usr/bin/python", "-m", "swift.cli.sft", *flags],
        env={},
        command="swift sft",
        run_dir="/nonexistent",
        output_dir="/nonexistent",
        log="/nonexistent.log",
        inputs={},
    )


def test_model_folders_are_the_absolute_values_of_model_and_adapter_flags() -> None:
    argv = [
        "python",
        "-m",
        "swift.cli.rlhf",
        "--model",
        "/models/base",
        "--adapters",
        "/out/a1",
        "/out/a2",
        "--dataset",
        "/data/x.jsonl",
        "--ref_model=/models/ref",
        "--reward_model",
        "Qwen/Qwen2.5-0.5B",
        "--output_dir",
        "/out",
    ]
    assert model_folders(argv) == [
        ("model", "/models/base"),
        ("adapters", "/out/a1"),
        ("adapters", "/out/a2"),
        ("swift.ref_model", "/models/ref"),
    ]


def test_a_folder_that_now_asks_for_code_fails_its_job_with_intakes_refusal(tmp_path: Path) -> None:
    clean, coded = tmp_path / "clean", tmp_path / "coded"
    for folder in (clean, coded):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    (coded / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling.M"}}))
    starts = [started(1, "--model", str(clean)), started(2, "--model", str(clean), "--adapters", str(coded))]
    (failed,) = refuse_model_code(starts, remote_code)
    assert failed.job_id == 2
    assert failed.reason.startswith(f"adapters {str(coded)!r} asks for remote code (auto_map in config.json)")
    assert SETTING in failed.reason and "as the run was to start" in failed.reason


def test_a_missing_folder_or_a_hub_id_is_no_refusal(tmp_path: Path) -> None:
    starts = [started(1, "--model", str(tmp_path / "gone")), started(2, "--model", "Qwen/Qwen2.5-0.5B")]
    assert refuse_model_code(starts, remote_code) == []
