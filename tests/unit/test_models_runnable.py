"""Whether a job can run on this box, decided at intake and by `check` alike: packages its options
need, the GPUs it names, what a CPU cannot do, hub data offline; and the seeds' own job files with
[models] mapping their model names to the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from daemon.core.config import LimitsConfig, SwiftConfig
from daemon.core.jobs import JobSpec, parse_job_file
from daemon.core.runnable import Package, device_problems, hub_dataset_problems, needed_packages
from daemon.core.swift_args import bundled
from daemon.intake.hardware import missing_packages, visible_gpus
from daemon.intake.models import registry
from daemon.intake.validate import Box, check_file
from tests.seeds import SEED_LORA, SEED_PRETRAIN, SEED_RL, SEED_SFT, SEED_TRAINER_JSON


def spec(text: str) -> JobSpec:
    parsed = parse_job_file(text.encode(), "j.yaml", max_bytes=1 << 20, swift_args=bundled())
    assert isinstance(parsed, JobSpec)
    return parsed


BASE = "task_type: lora\nmodel: /m\ndataset: d\n"


def test_options_name_the_packages_they_need() -> None:
    def modules(text: str) -> list[tuple[str, str, str]]:
        return [(p.module, p.pip, p.why) for p in needed_packages(spec(text))]

    (bnb,) = needed_packages(spec(BASE + "use_8bit: true\n"))
    assert bnb.key == "quant_method"

    assert modules(BASE) == []
    assert modules(BASE + "use_8bit: true\n") == [
        ("bitsandbytes", "bitsandbytes", "8-bit loading (use_8bit, quant_bits)")
    ]
    swift = "swift: {attn_impl: flash_attn, deepspeed: zero2, report_to: [wandb], use_liger_kernel: true}\n"
    assert modules(BASE + swift) == [
        ("flash_attn", "flash-attn", "attn_impl flash_attn"),
        ("deepspeed", "deepspeed", "deepspeed"),
        ("wandb", "wandb", "report_to wandb"),
        ("liger_kernel", "liger-kernel", "use_liger_kernel"),
    ]
    assert modules("task_type: deploy\nmodel: /m\ninfer_backend: vllm\n") == [
        ("vllm", "vllm", "infer_backend vllm")
    ]


def test_missing_packages_are_asked_of_the_interpreter_that_runs_swift() -> None:
    wanted = [Package("json", "json", "x", "k"), Package("no_such_module_here", "nope", "y", "k")]
    assert [p.module for p in missing_packages(wanted)] == ["no_such_module_here"]
    assert [p.module for p in missing_packages(wanted, "/usr/bin/python3")] == ["no_such_module_here"]


def test_gpus_named_and_what_a_cpu_cannot_do() -> None:
    on_cpu = device_problems(spec(BASE + "gpu_ids: [0, 3]\nswift: {torch_dtype: bfloat16}\n"), ["0", "GPU-a"])
    assert [(p.field, p.message) for p in on_cpu] == [("gpu_ids", "GPU 3 is not on this box (its GPUs: 0)")]
    (bf16,) = device_problems(spec(BASE + "swift: {torch_dtype: bfloat16}\n"), [])
    assert bf16.message == "torch_dtype bfloat16 needs a GPU, and this job would run on the CPU"
    assert bf16.hint.startswith("set torch_dtype: float32")
    assert device_problems(spec(BASE + "swift: {torch_dtype: float16}\n"), []) == []
    assert device_problems(spec(BASE + "swift: {torch_dtype: bfloat16}\n"), ["0"]) == []
    assert device_problems(spec(BASE + "gpus: 0\nswift: {bf16: true}\n"), ["0"])[0].field == "swift.bf16"
    (from_config,) = device_problems(spec(BASE), [], "bfloat16")
    assert from_config.message.startswith("the model's config.json says bfloat16")
    assert device_problems(spec(BASE + "swift: {torch_dtype: float32}\n"), [], "bfloat16") == []
    (qlora,) = device_problems(spec(BASE + "use_8bit: true\n"), [])
    assert qlora.message.startswith("8-bit loading (bitsandbytes")
    assert device_problems(spec(BASE + "gpu_ids: [7]\n"), None) == []


def test_hub_datasets_need_a_hub() -> None:
    job = spec("task_type: sft\nmodel: /m\ndataset: [local, AI-ModelScope/alpaca#5]\n")
    (p,) = hub_dataset_problems(job, offline=True)
    assert p.message == "dataset AI-ModelScope/alpaca is a hub id and [swift] offline = true"
    assert "drop the file into the inbox" in p.hint
    assert hub_dataset_problems(job, offline=False) == []


def test_visible_gpus_follow_the_devices_setting_and_the_test_fake(tmp_path: Path) -> None:
    fake = tmp_path / "gpus.json"
    fake.write_text('{"count": 2}')
    env = {"LLMTRAIND_TEST_FAKE_GPUS": str(fake)}
    assert visible_gpus("auto", env) == ("0", "GPU-fake-0000", "1", "GPU-fake-0001")
    assert visible_gpus([1], env) == ("1", "GPU-fake-0001")
    assert visible_gpus("none", env) == ()


def reward_model(tiny_model: Path, dest: Path) -> Path:
    """The tiny model as a reward model: a sequence-classification head over one label."""
    shutil.copytree(tiny_model, dest)
    config = json.loads((dest / "config.json").read_text())
    config |= {"architectures": ["Qwen2ForSequenceClassification"], "num_labels": 1}
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_the_seed_jobs_on_a_cpu_box_with_models_mapped(tmp_path: Path, tiny_model: Path) -> None:
    names = ("qwen-7b", "qwen-7b-sft", "llama2-7b", "Qwen/Qwen2.5-7B-Instruct")
    rm = reward_model(tiny_model, tmp_path / "rm")
    box = Box({name: tiny_model for name in names} | {"qwen-7b-rm": rm}, ())
    verdicts = {}
    for name, text in (
        ("sft.yaml", SEED_SFT),
        ("rl.yaml", SEED_RL),
        ("lora.yaml", SEED_LORA),
        ("pretrain.yaml", SEED_PRETRAIN),
        ("trainer.yaml", SEED_TRAINER_JSON),
    ):
        (tmp_path / name).write_text(text)
        verdicts[name] = check_file(tmp_path / name, LimitsConfig(), bundled(), swift=SwiftConfig(), box=box)
    ok = {name: v.job for name, v in verdicts.items() if v.ok}
    assert sorted(ok) == ["pretrain.yaml", "rl.yaml", "sft.yaml"]
    for job in ok.values():
        assert isinstance(job, JobSpec) and job.model is not None
        assert (job.model.ref, job.model_type, job.template) == (str(tiny_model.resolve()), "qwen2", "qwen")
    rl = ok["rl.yaml"]
    assert (
        isinstance(rl, JobSpec) and rl.reward_model is not None and rl.reward_model.ref == str(rm.resolve())
    )
    assert any(note.startswith("kl_target 0.1 not applied") for note in rl.notes)
    lora = verdicts["lora.yaml"].problems
    assert "needs a GPU, and this job would run on the CPU" in lora
    trainer = verdicts["trainer.yaml"].problems
    assert "GPU 0 is not on this box (its GPUs: none)" in trainer
    assert "dataset AI-ModelScope/alpaca-gpt4-data-zh is a hub id and [swift] offline = true" in trainer
    assert "torch_dtype bfloat16 needs a GPU" in trainer


def test_ppo_needs_a_reward_model_with_a_score_head(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "rl.yaml").write_text(SEED_RL)
    box = Box({"qwen-7b-sft": tiny_model, "qwen-7b-rm": tiny_model}, ())
    verdict = check_file(tmp_path / "rl.yaml", LimitsConfig(), bundled(), swift=SwiftConfig(), box=box)
    assert not verdict.ok
    assert (
        f"- reward_model: reward_model {tiny_model.resolve()}: its config.json says Qwen2ForCausalLM, a model "
        "without a score head; ms-swift's ppo needs a reward model" in verdict.problems
    )
    assert "such as the output of an rlhf job with algorithm: rm" in verdict.problems


def test_a_qwen_vl_model_type_needs_what_its_loader_imports(tmp_path: Path, tiny_model: Path) -> None:
    table = registry()
    assert table.packages["qwen2_vl"] == ("qwen_vl_utils", "torchvision")
    assert "qwen2" not in table.packages
    needed = needed_packages(spec(BASE + "model_type: qwen2_vl\n"), table.packages["qwen2_vl"])
    assert [(p.module, p.pip, p.why, p.key) for p in needed] == [
        ("qwen_vl_utils", "qwen-vl-utils", "model_type qwen2_vl", "model_type"),
        ("torchvision", "torchvision", "model_type qwen2_vl", "model_type"),
    ]
    job = tmp_path / "vlm.yaml"
    job.write_text(
        f"task_type: lora\nmodel: {tiny_model}\nmodel_type: qwen2_vl\ntemplate: qwen2_vl\ndataset: d\n"
    )
    plain = SwiftConfig.model_validate({"python": "/usr/bin/python3"})  # an interpreter without either
    verdict = check_file(job, LimitsConfig(), bundled(), swift=plain, box=Box({}, ()))
    assert not verdict.ok
    assert (
        "- model_type: model_type qwen2_vl needs the Python package qwen-vl-utils, which /usr/bin/python3 "
        "cannot import" in verdict.problems
    )
    assert "install it (/usr/bin/python3 -m pip install qwen-vl-utils)" in verdict.problems
