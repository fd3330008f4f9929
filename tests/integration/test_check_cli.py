"""`llmtraind check FILE...`: the intake's validation, offline, with exit 1 on any error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SFT_ROW = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


def check(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "check", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_good_files_pass(tmp_path: Path) -> None:
    (tmp_path / "sft_dataset.jsonl").write_text(SFT_ROW * 3)
    (tmp_path / "pt.txt").write_text("one document\nanother document\n")
    (tmp_path / "job.yaml").write_text(
        "task_type: sft\nmodel_name: /models/qwen-7b\ndataset: datasets/sft_dataset.jsonl\n"
        "max_seq_length: 2048\nper_device_train_batch_size: 4\nlearning_rate: 2e-5\nnum_train_epochs: 3\n"
    )
    (tmp_path / "stop.yaml").write_text("cancel: job\n")
    result = check(*sorted(tmp_path.iterdir()))
    assert result.returncode == 0, result.stderr
    assert "job.yaml: ok: job job: sft" in result.stdout
    assert "sft_dataset.jsonl: ok: dataset sft_dataset: sft_messages, 3 rows" in result.stdout
    assert "pt.txt: ok: dataset pt: plain_text, 2 rows" in result.stdout
    assert "stop.yaml: ok: cancel job" in result.stdout


def test_errors_say_what_and_where_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        SFT_ROW + '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n'
    )
    job = tmp_path / "job.yaml"
    job.write_text("task_type: sft\nmodel_nme: /m\ndataset: ../../etc/shadow\n")
    result = check(bad, job)
    assert result.returncode == 1
    assert "- line 2, messages[1].role: two user messages in a row" in result.stderr
    assert (
        "- line 2, model_nme: unknown key `model_nme`" in result.stderr
        and "did you mean `model_name`" in result.stderr
    )
    assert "- line 3, dataset:" in result.stderr and "'..'" in result.stderr


def test_links_fifos_and_odd_files_are_refused_without_blocking(tmp_path: Path) -> None:
    link = tmp_path / "passwd.jsonl"
    link.symlink_to("/etc/passwd")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    other = tmp_path / "notes.md"
    other.write_text("x")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" + b"#" * 1_100_000)
    body = tmp_path / "body.json"
    body.write_text('{"model_path": "/m", "datasets": "x"}')
    result = check(link, fifo, folder, other, big, body)
    assert result.returncode == 1
    err = result.stderr
    assert "passwd.jsonl: rejected: cannot read it" in err
    assert "pipe.jsonl: rejected: cannot read it: not a regular file" in err
    assert "dir.yaml: rejected: cannot read it: not a regular file" in err
    assert "notes.md: rejected: unknown file type" in err
    assert "body.json: rejected: unknown file type" in err
    assert "a job written in JSON is YAML too: rename it to body.yaml" in err
    assert (
        "notes.md: rejected: unknown file type: datasets end in .jsonl or .txt, jobs in .yaml or .yml\n"
        in err
    )
    assert "big.yaml: rejected: 1100005 bytes is over the limit of 1048576" in err


def test_the_seed_jobs_as_this_box_would_take_them(tmp_path: Path, tiny_model: Path) -> None:
    from tests.seeds import SEED_LORA, SEED_RL, SEED_SFT
    from tests.unit.test_models_runnable import reward_model

    rm = reward_model(tiny_model, tmp_path / "rm").resolve()
    config = tmp_path / "llmtraind.toml"
    config.write_text(
        f'[gpus]\ndevices = "none"\n[models]\nqwen-7b-sft = {json.dumps(str(tiny_model))}\n'
        f"qwen-7b-rm = {json.dumps(str(rm))}\n"
    )
    for name, text in (("sft.yaml", SEED_SFT), ("rl.yaml", SEED_RL), ("lora.yaml", SEED_LORA)):
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "check",
            "--config",
            str(config),
            "rl.yaml",
            "sft.yaml",
            "lora.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    folder = tiny_model.resolve()
    assert (
        f"rl.yaml: ok: job rl: rlhf (full) on {folder}\n  model qwen-7b-sft -> {folder} ([models])\n"
        in result.stdout
    )
    assert f"  reward_model qwen-7b-rm -> {rm} ([models])\n" in result.stdout
    assert "  warning: kl_target 0.1 not applied: ms-swift 4.6 has no adaptive KL target" in result.stdout
    assert "- model: model qwen-7b: not a folder, not in [models]" in result.stderr
    assert '  hint: add `qwen-7b = "/path/to/the/model"` under [models] in llmtraind.toml' in result.stderr
    assert "lora.yaml: rejected, 3 problems\n- model: model llama2-7b: not a folder" in result.stderr
    assert "needs the Python package bitsandbytes" in result.stderr
    assert (
        "8-bit loading (bitsandbytes; use_8bit, quant_bits or bnb_4bit_quant_type) needs a GPU"
        in result.stderr
    )
