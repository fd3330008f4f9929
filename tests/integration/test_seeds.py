"""The two original designs' own examples, as written, through a real daemon on this CPU-only box.

The operator's config maps the model names the seeds use to local folders (`[models]`): the tiny
Qwen2, and for PPO's reward model the same network with a one-label scoring head, as a real reward
model has. Nothing else is changed: the datasets and jobs are the seeds' text. What can train here
trains to the end; what cannot (8-bit loading and bf16 need a GPU, hub datasets need the network) is
refused at intake with the reason and the fix, and `llmtraind check` says the same beforehand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon
from tests.seeds import (
    SEED_DATASETS,
    SEED_LORA,
    SEED_PRETRAIN,
    SEED_RL,
    SEED_SFT,
    SEED_TRAINER_JSON,
)

pytestmark = [pytest.mark.timeout(900), pytest.mark.swift, pytest.mark.extended]

RUNS = """
[runs]
stop_grace_s = 3
poll_s = 0.2
schedule_s = 0.5
"""
TRAINED = {"seed_sft.yaml": SEED_SFT, "seed_pretrain.yaml": SEED_PRETRAIN, "seed_rl.yaml": SEED_RL}
REFUSED = {
    # The Swift Trainer API's job is a JSON body; JSON is YAML, so it is dropped as it is.
    "seed_trainer.yaml": (
        SEED_TRAINER_JSON,
        (
            "dataset AI-ModelScope/alpaca-gpt4-data-zh is a hub id and [swift] offline = true",
            "GPU 0 is not on this box",
            "torch_dtype bfloat16 needs a GPU",
        ),
    ),
    "seed_lora.yaml": (SEED_LORA, ("needs the Python package bitsandbytes", "needs a GPU")),
}


def models_config(model: Path, reward_model: Path) -> str:
    names = ("qwen-7b", "qwen-7b-sft", "llama2-7b", "Qwen/Qwen2.5-7B-Instruct")
    lines = [f'"{name}" = "{model}"' for name in names] + [f'"qwen-7b-rm" = "{reward_model}"']
    return RUNS + "[models]\n" + "\n".join(lines) + "\n"


def job(d: Daemon, ref: str) -> dict[str, Any]:
    code, body = d.get(f"/v1/jobs/{ref}")
    return dict(body) if code == 200 else {}


def ended(d: Daemon, ref: str, timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = job(d, ref)
        return body if body.get("state") in ("succeeded", "failed", "cancelled") else None

    found: dict[str, Any] = d.wait_for(f"job {ref} to end", check, timeout)
    return found


def test_every_seed_example_trains_or_is_refused_with_the_fix(
    daemon_factory: type[Daemon], tmp_path: Path, tiny_model: Path, tiny_reward_model: Path
) -> None:
    d = daemon_factory(tmp_path / "d", extra_config=models_config(tiny_model, tiny_reward_model))
    files = tmp_path / "files"
    files.mkdir()
    for name, text in {**TRAINED, **{n: t for n, (t, _) in REFUSED.items()}}.items():
        (files / name).write_text(text)

    checked = d.cli("check", *sorted(str(p) for p in files.iterdir()))
    assert checked.returncode == 1, checked
    for name in TRAINED:
        assert f"{name}: ok: job {Path(name).stem}" in checked.stdout, checked.stdout
    for name, (_, reasons) in REFUSED.items():
        assert f"{name}: rejected" in checked.stderr, checked.stderr
        for reason in reasons:
            assert reason in checked.stderr, (reason, checked.stderr)

    d.start()
    for name, text in SEED_DATASETS.items():
        d.drop(name, text)
    for path in sorted(files.iterdir()):
        d.drop(path.name, path.read_bytes())

    for name, (_, reasons) in REFUSED.items():
        note = d.inbox / "rejected" / f"{name}.error.txt"
        text = d.wait_for(f"{name} refused", lambda n=note: n.is_file() and n.read_text())
        for reason in reasons:
            assert reason in text, (reason, text)
        assert "hint:" in text

    for ref in ("seed_sft", "seed_pretrain", "seed_rl"):
        body = ended(d, ref, 600)
        assert body["state"] == "succeeded", (ref, body["reason"], d.log()[-3000:])
        assert body["progress"]["percent"] == 100.0, body["progress"]
        assert body["final_model"] and Path(body["final_model"], "config.json").is_file()

    sft = job(d, "seed_sft")
    argv = sft["run"]["argv"]
    assert argv[argv.index("--model") + 1] == str(tiny_model)
    assert argv[argv.index("--model_type") + 1] == "qwen2"
    rl = job(d, "seed_rl")
    argv = rl["run"]["argv"]
    assert argv[argv.index("--rlhf_type") + 1] == "ppo"
    assert argv[argv.index("--reward_model") + 1] == str(tiny_reward_model)
    # Two prompts per step: the file has two rows, and swift's default would wait for sixteen.
    assert argv[argv.index("--gradient_accumulation_steps") + 1] == "2"
    assert any("kl_target" in note for note in rl["spec"]["notes"]), rl["spec"]
