"""The tiny model builds the same bytes every time, and real ms-swift trains and merges it on a CPU.

The `swift` tests run `python -m swift.cli.*` exactly as `build_command` says, offline, on the
tiny model: about 10 s each, most of it swift's start-up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import tinymodel
from daemon.cli.tinymodel import build_tiny_model
from daemon.core.jobs import JobSpec, parse_job_file
from daemon.core.swift_args import bundled
from daemon.runs.swift.artifacts import final_checkpoint, final_model, scan_artifacts
from daemon.runs.swift.command import EXPORT_DIR, RunInputs, SwiftCommand, build_command
from daemon.runs.swift.failures import classify_failure
from daemon.runs.swift.progress import MetricsSampler, parse_metrics, parse_summary

needs_training_stack = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("torch", "transformers", "tokenizers")),
    reason="the train extra (torch, transformers) is not installed",
)
needs_swift = pytest.mark.skipif(
    importlib.util.find_spec("swift") is None, reason="ms-swift is not installed"
)
RUN_TIMEOUT_S = 100


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-qwen2")


# ---------------------------------------------------------------------------------------------
# The build


@needs_training_stack
def test_two_builds_are_identical(tiny: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    assert digests(again) == digests(tiny)
    assert set(digests(tiny)) == {
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }


@needs_training_stack
def test_the_model_is_the_reference_one(tiny: Path) -> None:
    config = json.loads((tiny / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["model_type"] == "qwen2"
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (448, 64, 2)
    assert config["dtype"] == "float32"
    assert (tiny / "model.safetensors").stat().st_size < 500_000


@needs_training_stack
def test_tokenizer_round_trips_offline(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = tinymodel.import_untyped("transformers").AutoTokenizer.from_pretrained(str(tiny))
    text = "What is 49 plus 97? wörld 你好"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


@needs_training_stack
def test_build_leaves_the_callers_random_state(tmp_path: Path) -> None:
    torch = tinymodel.import_untyped("torch")
    before = torch.random.get_rng_state()
    build_tiny_model(tmp_path / "m")
    assert torch.equal(torch.random.get_rng_state(), before)


def test_existing_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path / "m")
    assert tinymodel.main([str(tmp_path / "m")]) == 1
    assert tinymodel.main([]) == 2


def test_a_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tinymodel, "_write_model", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_tiny_model(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Real swift on the tiny model


def write_sft_data(path: Path, rows: int = 32) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            a, b = (i * 37) % 100, (i * 59) % 100
            messages = [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
            ]
            out.write(json.dumps({"messages": messages}) + "\n")
    return path


def spec(text: str, name: str) -> JobSpec:
    parsed = parse_job_file(text.encode(), f"{name}.yaml", max_bytes=1 << 16, swift_args=bundled())
    assert isinstance(parsed, JobSpec)
    return parsed


def run(command: SwiftCommand, cwd: Path) -> tuple[int, str]:
    """Run as the runner does: own session, stdout and stderr into one log, no shell."""
    log = cwd / "run.log"
    env = command.environ(os.environ) | {"HF_HOME": str(cwd.parent / "hf-home")}
    with log.open("wb") as sink:
        proc = subprocess.run(
            command.argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
    return proc.returncode, log.read_text(encoding="utf-8", errors="replace")


def assert_succeeded(returncode: int, log: str) -> None:
    if returncode != 0:
        failure = classify_failure(log, returncode=returncode)
        pytest.fail(f"swift failed ({failure.kind}): {failure.reason}\n" + "\n".join(log.splitlines()[-30:]))


@pytest.fixture(scope="module")
def lora_run(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 5-step LoRA SFT run of the tiny model: its output directory and log."""
    work = tmp_path_factory.mktemp("lora")
    text = (
        f"task_type: lora\nmodel: {tiny}\nmodel_type: qwen2\ntemplate: qwen\ndataset: sft\nmax_steps: 5\n"
        "gradient_accumulation_steps: 2\ndataloader_num_workers: 0\n"  # fewer samples per step, no worker
    )
    out = work / "run"
    out.mkdir()
    inputs = RunInputs(
        output_dir=out,
        python=sys.executable,
        master_port=29471,
        datasets=((write_sft_data(work / "sft.jsonl"), None),),
        cache_dir=work / "cache",
    )
    returncode, log = run(build_command(spec(text, "sft-a"), inputs), out)
    assert_succeeded(returncode, log)
    return out, log


@needs_swift
@pytest.mark.swift
def test_lora_sft_run_reports_progress_and_leaves_an_adapter(lora_run: tuple[Path, str]) -> None:
    out, log = lora_run
    lines = (out / "logging.jsonl").read_text().splitlines()
    steps = [m for line in lines if (m := parse_metrics(line)) is not None and m.kind == "train"]
    assert [m.step for m in steps] == [1, 2, 3, 4, 5]
    assert steps[-1].percent == 100.0 and steps[-1].eta_s == 0.0
    assert all(m.loss is not None and m.learning_rate is not None for m in steps)
    sampler = MetricsSampler()
    assert all(sampler.offer(m, now=float(m.step)) for m in steps)
    summary = parse_summary(lines[-1])
    assert summary is not None and summary.global_step == 5
    assert summary.last_model_checkpoint == str(out / "checkpoint-5")
    printed = [
        m.step for line in log.splitlines() if (m := parse_metrics(line)) is not None and m.kind == "train"
    ]
    assert printed == [1, 2, 3, 4, 5]  # the stdout fallback sees the same steps
    found = scan_artifacts(out)
    final = final_checkpoint(found)
    assert final is not None and (final.kind, final.path, final.step) == ("adapter", "checkpoint-5", 5)
    kinds = {a.path: a.kind for a in found}
    assert kinds["last-checkpoint"] == "last_checkpoint_marker" and kinds["args.json"] == "args"
    assert kinds["logging.jsonl"] == "logging" and "images" not in kinds  # --report_to none
    assert "modelscope.cn" not in log and "s3.amazonaws.com" not in log


@needs_swift
@pytest.mark.swift
def test_export_merges_the_adapter_into_a_prepared_run_directory(
    lora_run: tuple[Path, str], tmp_path: Path
) -> None:
    """The runner makes the run directory (for its log) before swift starts; export must accept it."""
    checkpoint = lora_run[0] / "checkpoint-5"
    out = tmp_path / "run"
    out.mkdir()
    inputs = RunInputs(output_dir=out, python=sys.executable, master_port=29472, adapters_dir=checkpoint)
    command = build_command(spec("task_type: export\nadapters: '@sft-a'\n", "merge-a"), inputs)
    returncode, log = run(command, out)
    assert_succeeded(returncode, log)
    assert "Successfully merged LoRA" in log
    model = final_model(scan_artifacts(out))
    assert model is not None and (model.kind, model.path) == ("merged_model", EXPORT_DIR)
    assert model.bytes > 400_000
    assert json.loads((out / EXPORT_DIR / "config.json").read_text())["model_type"] == "qwen2"
