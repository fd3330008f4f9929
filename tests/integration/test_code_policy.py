"""A dropped job runs no code of its choosing: with default settings a real daemon rejects each job
that would make swift import a file, reach outside the allowed folders or load a model folder's
remote code, files it in inbox/rejected/ with the reason, and nothing runs. `llmtraind check` says
the same; `[swift] allow_code = true` accepts the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon

pytestmark = pytest.mark.timeout(120)

SETTING = "set [swift] allow_code = true in llmtraind.toml to allow it"
JOB = "task_type: lora\nbase_model: {model}\ndataset: not_dropped_yet\ngpus: 0\n"


def hostile(tmp_path: Path) -> tuple[dict[str, tuple[str, str]], Path, Path]:
    """name -> (job text, words its error must hold); the plugin; the marker it would write."""
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "evil.Evil"}}))
    base = JOB.format(model=model)
    jobs = {
        "register": (base + f"swift: {{custom_register_path: {evil}}}\n", "swift.custom_register_path"),
        "plugins": (base + f"swift: {{external_plugins: [{evil}]}}\n", "swift.external_plugins"),
        "callbacks": (base + "swift: {callbacks: [evil.Callback]}\n", "swift.callbacks"),
        "envvars": (base + f"swift: {{model_kwargs: {{PYTHONPATH: {tmp_path}}}}}\n", "swift.model_kwargs"),
        "remote": (JOB.format(model=remote), "auto_map in config.json"),
    }
    return jobs, evil, marker


def test_hostile_jobs_are_rejected_with_the_key_and_nothing_runs(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    jobs, _, marker = hostile(tmp_path)
    d = daemon_factory(tmp_path / "d").start()
    for name, (text, _) in jobs.items():
        d.drop(f"{name}.yaml", text)
    outside = JOB.format(model=tmp_path / "model") + "swift: {deepspeed: /etc/llmtraind-ds.json}\n"
    d.drop("outside.yaml", outside)
    rejected = d.inbox / "rejected"
    names = [*jobs, "outside"]
    d.wait_for(
        "every hostile job rejected",
        lambda: all((rejected / f"{n}.yaml.error.txt").exists() for n in names),
    )
    for name, (_, words) in jobs.items():
        error = (rejected / f"{name}.yaml.error.txt").read_text()
        assert words in error and SETTING in error, error
        assert (rejected / f"{name}.yaml").exists()
    error = (rejected / "outside.yaml.error.txt").read_text()
    assert "swift.deepspeed" in error and "[swift] allowed_paths" in error, error
    assert d.get("/v1/jobs")[1]["jobs"] == []
    time.sleep(1)
    assert not marker.exists()


def test_check_says_the_same_and_allow_code_accepts(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    jobs, evil, marker = hostile(tmp_path)
    files = []
    for name, (text, _) in jobs.items():
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "check", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("LLMTRAIND_")},
    )
    assert result.returncode == 1
    for _, words in jobs.values():
        assert words in result.stderr
    assert result.stderr.count(SETTING) == len(jobs)

    d = daemon_factory(tmp_path / "d", extra_config="[swift]\nallow_code = true\n").start()
    d.drop("plugins.yaml", jobs["plugins"][0])
    d.drop("remote.yaml", jobs["remote"][0])
    d.wait_for("both jobs accepted", lambda: len(d.get("/v1/jobs")[1]["jobs"]) == 2)
    assert not (d.inbox / "rejected" / "plugins.yaml.error.txt").exists()
    assert not marker.exists() and evil.exists()
