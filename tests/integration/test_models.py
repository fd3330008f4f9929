"""A job naming a model the way the seeds do (`qwen-7b`) runs on this box once [models] maps the
name: the daemon records the folder it became and the model_type/template it inferred, `show`
says so, and a name mapped nowhere is refused at intake with the line to add."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon_proc import Daemon
from tests.seeds import SEED_SFT


def test_a_seed_job_naming_qwen_7b_is_accepted_with_its_folder_recorded(
    daemon_factory: type[Daemon], tmp_path: Path, tiny_model: Path
) -> None:
    config = f"[models]\nqwen-7b = {json.dumps(str(tiny_model))}\n"
    d = daemon_factory(tmp_path / "d", extra_config=config).start()
    d.drop("sft.yaml", SEED_SFT)
    d.drop("other.yaml", "task_type: sft\nmodel_name: llama2-7b\ndataset: sft_dataset\n")
    error = d.inbox / "rejected" / "other.yaml.error.txt"
    d.wait_for("the unmapped job rejected", error.exists)
    assert "model llama2-7b: not a folder, not in [models]" in error.read_text()
    assert 'add `llama2-7b = "/path/to/the/model"` under [models] in llmtraind.toml' in error.read_text()
    status, job = d.wait_for(
        "the seed job recorded", lambda: d.get("/v1/jobs/sft")[0] == 200 and d.get("/v1/jobs/sft")
    )
    spec = job["spec"]
    folder = str(tiny_model.resolve())
    assert (spec["model"], spec["model_type"], spec["template"]) == (
        {"kind": "path", "ref": folder},
        "qwen2",
        "qwen",
    )
    assert spec["resolved"][0] == {"key": "model", "given": "qwen-7b", "value": folder, "source": "[models]"}
    shown = d.cli("show", "sft")
    assert shown.returncode == 0, shown.stderr
    assert f"model qwen-7b -> {folder} ([models])" in shown.stdout
    assert "model_type qwen2 (config.json: Qwen2ForCausalLM, model_type qwen2)" in shown.stdout
