"""JobSpec + RunInputs -> argv and environment: golden commands for the seeds and every task type."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.jobs import CodePolicy, JobSpec, parse_job_file
from daemon.core.swift_args import bundled
from daemon.runs.swift.command import CommandError, RunInputs, SwiftCommand, build_command, format_value
from tests.seeds import SEED_LORA, SEED_PRETRAIN, SEED_RL, SEED_SFT, SEED_TRAINER_JSON

SWIFT = bundled()
PY = "/venv/bin/python"
OUT = Path("/state/runs/7")
PORT = 29517
CPU_ENV = {
    "PYTHONUNBUFFERED": "1",
    "PYTHONSAFEPATH": "1",
    "MASTER_PORT": "29517",
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
TAIL = ["--logging_steps", "1", "--report_to", "none", "--check_model", "false", "--use_hf", "true"]
"""What every offline training command ends with unless the job says otherwise."""

# The golden tests substitute local directories for the hub models the seeds name, since an offline
# daemon refuses hub ids. The trainer seed's own command line (3.x names), one flag per entry.
SEED_TRAINER_FLAGS = (
    "model train_type dataset torch_dtype num_train_epochs per_device_train_batch_size "
    "per_device_eval_batch_size learning_rate lora_rank lora_alpha target_modules "
    "gradient_accumulation_steps eval_steps save_steps save_total_limit logging_steps max_length "
    "output_dir system warmup_ratio dataloader_num_workers model_author model_name"
).split()


def parse(text: str, filename: str = "job.yaml", policy: CodePolicy | None = None) -> JobSpec:
    spec = parse_job_file(text.encode(), filename, max_bytes=1 << 20, swift_args=SWIFT, policy=policy)
    assert isinstance(spec, JobSpec)
    return spec


def data(*names: str, sample: int | None = None) -> tuple[tuple[Path, int | None], ...]:
    return tuple((Path(f"/state/datasets/{name}.jsonl"), sample) for name in names)


def inputs(**changes: Any) -> RunInputs:
    return dataclasses.replace(RunInputs(output_dir=OUT, python=PY, master_port=PORT), **changes)


def build(text: str, **changes: Any) -> SwiftCommand:
    return build_command(parse(text), inputs(**changes))


def assert_known_flags(command: SwiftCommand) -> None:
    """Every flag the builder writes exists in the installed ms-swift for that sub-command."""
    module = next(arg for arg in command.argv if arg.startswith("swift.cli."))
    names = command.flag_names()
    assert len(names) == len(set(names)), names
    assert set(names) <= SWIFT.names(module.removeprefix("swift.cli.")), set(names) - SWIFT.names(
        module.removeprefix("swift.cli.")
    )


# ---------------------------------------------------------------------------------------------
# The seeds


def test_seed_sft() -> None:
    command = build(SEED_SFT.replace("qwen-7b", "/models/qwen-7b"), datasets=data("sft_dataset"))
    assert command.argv == (
        PY, "-m", "swift.cli.sft",
        "--model", "/models/qwen-7b",
        "--tuner_type", "full",
        "--dataset", "/state/datasets/sft_dataset.jsonl",
        "--output_dir", "/state/runs/7",
        "--add_version", "false",
        "--max_length", "2048",
        "--num_train_epochs", "3.0",
        "--per_device_train_batch_size", "4",
        "--learning_rate", "2e-05",
        *TAIL,
    )  # fmt: skip
    assert command.env == CPU_ENV
    assert_known_flags(command)


def test_seed_rl_ppo() -> None:
    text = SEED_RL.replace("qwen-7b-sft", "/models/qwen-7b-sft").replace("qwen-7b-rm", "/models/qwen-7b-rm")
    command = build(text, datasets=data("rl_preference"))
    assert command.argv == (
        PY, "-m", "swift.cli.rlhf",
        "--model", "/models/qwen-7b-sft",
        "--tuner_type", "full",
        "--rlhf_type", "ppo",
        "--reward_model", "/models/qwen-7b-rm",
        "--dataset", "/state/datasets/rl_preference.jsonl",
        "--output_dir", "/state/runs/7",
        "--add_version", "false",
        "--num_ppo_epochs", "4",
        "--local_rollout_forward_batch_size", "16",
        *TAIL,
    )  # fmt: skip
    assert command.env == CPU_ENV
    assert_known_flags(command)


PPO_JOB = "task_type: rl\nalgorithm: ppo\npolicy_model: /m\nreward_model: /rm\ndataset: prefs\n"


def accumulation(command: SwiftCommand) -> str | None:
    argv = command.argv
    return (
        argv[argv.index("--gradient_accumulation_steps") + 1]
        if "--gradient_accumulation_steps" in argv
        else None
    )


def test_seed_rl_ppo_on_its_two_rows_takes_two_prompts_per_step() -> None:
    """swift's default accumulation (16 on one process) would make trl's PPO wait forever for a
    batch the seed's two-row file never fills."""
    text = SEED_RL.replace("qwen-7b-sft", "/models/qwen-7b-sft").replace("qwen-7b-rm", "/models/qwen-7b-rm")
    assert accumulation(build(text, datasets=data("rl_preference"), rows=2)) == "2"


@given(rows=st.integers(1, 64), batch=st.integers(1, 8), gpus=st.integers(1, 4), mini=st.integers(1, 3))
@settings(max_examples=200, deadline=None)
def test_ppo_left_to_swift_never_asks_for_more_prompts_than_the_data_gives(
    rows: int, batch: int, gpus: int, mini: int
) -> None:
    text = PPO_JOB + f"per_device_train_batch_size: {batch}\nswift: {{num_mini_batches: {mini}}}\n"
    uuids = tuple(f"GPU-{i}" for i in range(gpus))
    try:
        command = build(text, datasets=data("prefs"), rows=rows, gpu_uuids=uuids)
    except CommandError as e:
        assert batch * mini * gpus > rows, e
        assert "would wait forever" in str(e)
        return
    passed = accumulation(command)
    steps = int(passed) if passed is not None else -(-16 // (batch * gpus))
    assert batch * mini * gpus * steps <= rows


def test_ppo_with_accumulation_too_large_for_its_data_is_refused_naming_the_numbers() -> None:
    with pytest.raises(CommandError) as e:
        build(PPO_JOB + "gradient_accumulation_steps: 8\n", datasets=data("prefs"), rows=5)
    assert str(e.value) == (
        "ppo draws 8 prompts per step (per_device_train_batch_size 1 x gradient_accumulation_steps 8"
        " x num_mini_batches 1 x 1 process) and its datasets give 5; it would wait forever for a full"
        " batch: add rows, or lower gradient_accumulation_steps or per_device_train_batch_size"
    )


def test_ppo_with_unknown_rows_and_other_rlhf_types_are_left_alone() -> None:
    assert accumulation(build(PPO_JOB, datasets=data("prefs"))) is None
    dpo = PPO_JOB.replace("ppo", "dpo").replace("reward_model: /rm\n", "")
    assert accumulation(build(dpo, datasets=data("prefs"), rows=2)) is None


def test_seed_lora_is_8bit_qlora_with_derived_batch() -> None:
    """train_batch_size 64 with accumulation 4 on one device: 16 per device (64 = 16 x 1 x 4)."""
    command = build(SEED_LORA.replace("llama2-7b", "/models/llama2-7b"), datasets=data("lora_demo"))
    assert command.argv == (
        PY, "-m", "swift.cli.sft",
        "--model", "/models/llama2-7b",
        "--tuner_type", "lora",
        "--dataset", "/state/datasets/lora_demo.jsonl",
        "--output_dir", "/state/runs/7",
        "--add_version", "false",
        "--per_device_train_batch_size", "16",
        "--gradient_accumulation_steps", "4",
        "--lora_rank", "8",
        "--lora_alpha", "16",
        "--lora_dropout", "0.05",
        "--quant_method", "bnb",
        "--quant_bits", "8",
        *TAIL,
    )  # fmt: skip
    assert command.env == CPU_ENV
    assert_known_flags(command)


def test_seed_lora_on_two_gpus_runs_torchrun() -> None:
    gpus = ("GPU-aaaa", "GPU-bbbb")
    command = build(
        SEED_LORA.replace("llama2-7b", "/models/llama2-7b"), datasets=data("lora_demo"), gpu_uuids=gpus
    )
    assert command.argv[:9] == (
        PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "swift.cli.sft",
    )  # fmt: skip
    assert command.argv[command.argv.index("--per_device_train_batch_size") + 1] == "8"
    assert command.env == CPU_ENV | {
        "CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "NPROC_PER_NODE": "2",
    }
    assert "NPROC_PER_NODE" not in command.unset_env
    assert_known_flags(command)


def test_seed_pretrain() -> None:
    """global_batch_size 1024 with the default per-device batch of 1: accumulation 1024."""
    command = build(SEED_PRETRAIN.replace("llama2-7b", "/models/llama2-7b"), datasets=data("pretrain_corpus"))
    assert command.argv == (
        PY, "-m", "swift.cli.pt",
        "--model", "/models/llama2-7b",
        "--tuner_type", "full",
        "--dataset", "/state/datasets/pretrain_corpus.jsonl",
        "--output_dir", "/state/runs/7",
        "--add_version", "false",
        "--max_length", "4096",
        "--gradient_accumulation_steps", "1024",
        "--learning_rate", "0.0003",
        "--warmup_ratio", "0.01",
        *TAIL,
    )  # fmt: skip
    assert_known_flags(command)


TRAINER_ARGS = (
    "--output_dir", "/state/runs/7",
    "--add_version", "false",
    "--max_length", "2048",
    "--num_train_epochs", "1.0",
    "--per_device_train_batch_size", "1",
    "--per_device_eval_batch_size", "1",
    "--gradient_accumulation_steps", "16",
    "--learning_rate", "0.0001",
    "--warmup_ratio", "0.05",
    "--lora_rank", "8",
    "--lora_alpha", "32",
    "--target_modules", "all-linear",
    "--torch_dtype", "bfloat16",
    "--eval_steps", "50",
    "--save_steps", "50",
    "--save_total_limit", "2",
    "--logging_steps", "5",
    "--dataloader_num_workers", "4",
    "--system", "You are a helpful assistant.",
    "--model_author", "swift",
    "--model_name", "swift-robot",
    "--report_to", "none",
)  # fmt: skip


def test_seed_trainer_body_online_passes_hub_ids() -> None:
    """With [swift] offline = false the seed runs as written: hub model, hub datasets with #N."""
    command = build(SEED_TRAINER_JSON, offline=False, gpu_uuids=("GPU-aaaa",))
    assert command.argv == (
        PY, "-m", "swift.cli.sft",
        "--model", "Qwen/Qwen2.5-7B-Instruct",
        "--tuner_type", "lora",
        "--dataset", "AI-ModelScope/alpaca-gpt4-data-zh#500", "AI-ModelScope/alpaca-gpt4-data-en#500",
        *TRAINER_ARGS,
    )  # fmt: skip
    assert command.env == {
        "PYTHONUNBUFFERED": "1",
        "PYTHONSAFEPATH": "1",
        "MASTER_PORT": "29517",
        "CUDA_VISIBLE_DEVICES": "GPU-aaaa",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    assert_known_flags(command)


def test_seed_trainer_body_offline_with_local_copies() -> None:
    text = SEED_TRAINER_JSON.replace("Qwen/Qwen2.5-7B-Instruct", "/models/Qwen2.5-7B-Instruct")
    text = text.replace("AI-ModelScope/", "")
    files = data("alpaca-gpt4-data-zh", "alpaca-gpt4-data-en", sample=500)
    command = build_command(parse(text, "llm.json"), inputs(datasets=files, gpu_uuids=("GPU-aaaa",)))
    assert command.argv == (
        PY, "-m", "swift.cli.sft",
        "--model", "/models/Qwen2.5-7B-Instruct",
        "--tuner_type", "lora",
        "--dataset",
        "/state/datasets/alpaca-gpt4-data-zh.jsonl#500",
        "/state/datasets/alpaca-gpt4-data-en.jsonl#500",
        *TRAINER_ARGS,
        "--check_model", "false",
        "--use_hf", "true",
    )  # fmt: skip
    assert command.env == CPU_ENV | {"CUDA_VISIBLE_DEVICES": "GPU-aaaa", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert_known_flags(command)


def test_trainer_seed_command_in_4x_names() -> None:
    """Every flag of the seed's own `swift sft` line is there, with 3.x `--train_type` as `--tuner_type`."""
    command = build(SEED_TRAINER_JSON, offline=False)
    expected = {"tuner_type" if flag == "train_type" else flag for flag in SEED_TRAINER_FLAGS}
    assert expected <= set(command.flag_names())


def test_seed_with_hub_model_is_refused_offline() -> None:
    with pytest.raises(CommandError, match=r"model qwen-7b is a hub id and \[swift\] offline = true"):
        build(SEED_SFT, datasets=data("sft_dataset"))


def test_seed_with_hub_dataset_is_refused_offline() -> None:
    text = SEED_TRAINER_JSON.replace("Qwen/Qwen2.5-7B-Instruct", "/models/q")
    with pytest.raises(CommandError, match="dataset AI-ModelScope/alpaca-gpt4-data-zh is a hub id"):
        build(text)


# ---------------------------------------------------------------------------------------------
# Task types, tuners, rlhf types

BASE = "model: /m\ndataset: d\n"


@pytest.mark.parametrize(
    ("head", "module", "tuner"),
    [
        ("task_type: sft", "sft", "full"),
        ("task_type: sft\ntuner: lora", "sft", "lora"),
        ("task_type: lora", "sft", "lora"),
        ("task_type: pretrain", "pt", "full"),
        ("task_type: pretrain\ntuner: lora", "pt", "lora"),
    ],
)
def test_training_task_and_tuner(head: str, module: str, tuner: str) -> None:
    command = build(f"{head}\n{BASE}", datasets=data("d"))
    assert command.argv == (
        PY, "-m", f"swift.cli.{module}",
        "--model", "/m",
        "--tuner_type", tuner,
        "--dataset", "/state/datasets/d.jsonl",
        "--output_dir", "/state/runs/7",
        "--add_version", "false",
        *TAIL,
    )  # fmt: skip
    assert_known_flags(command)


def test_qlora_defaults_to_4bit_bnb() -> None:
    command = build(f"task_type: sft\ntuner: qlora\n{BASE}", datasets=data("d"))
    args = command.argv
    assert args[args.index("--tuner_type") + 1] == "lora"
    assert args[args.index("--quant_method") :][:4] == ("--quant_method", "bnb", "--quant_bits", "4")


def test_qlora_spec_without_quantisation_still_gets_it() -> None:
    spec = parse(f"task_type: lora\n{BASE}").model_copy(update={"tuner": "qlora"})
    args = build_command(spec, inputs(datasets=data("d"))).argv
    assert args[args.index("--quant_method") :][:4] == ("--quant_method", "bnb", "--quant_bits", "4")


@pytest.mark.parametrize("algorithm", [None, "dpo", "orpo", "simpo", "kto", "cpo", "rm", "grpo"])
def test_rlhf_type_is_always_explicit(algorithm: str | None) -> None:
    head = "task_type: rl\ntuner: lora" + (f"\nalgorithm: {algorithm}" if algorithm else "")
    command = build(f"{head}\n{BASE}", datasets=data("d"))
    assert command.argv[:9] == (
        PY, "-m", "swift.cli.rlhf", "--model", "/m", "--tuner_type", "lora", "--rlhf_type", algorithm or "dpo",
    )  # fmt: skip
    assert "--reward_model" not in command.argv
    assert_known_flags(command)


def test_grpo_with_reward_model_job() -> None:
    text = f"task_type: rl\nalgorithm: grpo\nreward_model: '@rm-job'\n{BASE}"
    command = build(text, datasets=data("d"), reward_model_dir=Path("/state/runs/3/checkpoint-50"))
    args = command.argv
    assert args[args.index("--reward_model") + 1] == "/state/runs/3/checkpoint-50"
    with pytest.raises(CommandError, match=r"reward_model @rm-job is another job's output"):
        build(text, datasets=data("d"))


def test_ppo_needs_a_reward_model() -> None:
    spec = parse(f"task_type: rl\n{BASE}").model_copy(update={"rlhf_type": "ppo"})
    with pytest.raises(CommandError, match="ppo needs a reward_model"):
        build_command(spec, inputs(datasets=data("d")))


def test_reward_model_outside_rlhf_is_refused() -> None:
    with pytest.raises(CommandError, match="only by rlhf"):
        build(f"task_type: sft\n{BASE}", datasets=data("d"), reward_model_dir=Path("/rm"))


def test_model_type_template_and_validation_data() -> None:
    text = f"task_type: sft\nmodel_type: qwen2\ntemplate: qwen\nval_dataset: [v#3]\n{BASE}"
    command = build(text, datasets=data("d"), val_datasets=data("v", sample=3))
    assert command.argv[3:16] == (
        "--model", "/m", "--model_type", "qwen2", "--template", "qwen", "--tuner_type", "full",
        "--dataset", "/state/datasets/d.jsonl", "--val_dataset", "/state/datasets/v.jsonl#3", "--output_dir",
    )  # fmt: skip


def test_export_merges_a_jobs_adapters() -> None:
    spec = parse("task_type: export\nadapters: '@sft-a'\n", "merge-a.yaml")
    command = build_command(spec, inputs(adapters_dir=Path("/state/runs/5/checkpoint-10")))
    assert command.argv == (
        PY, "-m", "swift.cli.export",
        "--adapters", "/state/runs/5/checkpoint-10",
        "--output_dir", "/state/runs/7/model",
        "--merge_lora", "true",
        "--use_hf", "true",
    )  # fmt: skip
    assert command.env == CPU_ENV
    assert_known_flags(command)


def test_export_of_an_unresolved_job_is_refused() -> None:
    with pytest.raises(CommandError, match=r"adapters @sft-a is another job's output and was not resolved"):
        build("task_type: export\nadapters: '@sft-a'\n")


def test_export_quantise_with_calibration_data() -> None:
    text = "task_type: export\nmodel: /m\nquant_method: awq\nquant_bits: 4\ndataset: calib#64\n"
    command = build(text, datasets=data("calib", sample=64), gpu_uuids=("GPU-a", "GPU-b"))
    assert command.argv == (
        PY, "-m", "swift.cli.export",
        "--model", "/m",
        "--dataset", "/state/datasets/calib.jsonl#64",
        "--output_dir", "/state/runs/7/model",
        "--quant_method", "awq",
        "--quant_bits", "4",
        "--use_hf", "true",
    )  # fmt: skip
    assert "NPROC_PER_NODE" not in command.env  # export is one process on every GPU it sees
    assert_known_flags(command)


def test_deploy() -> None:
    text = "task_type: deploy\nmodel: '@merge-a'\nport: 8001\nswift: {max_batch_size: 4}\n"
    command = build(text, model_dir=Path("/state/runs/8"), gpu_uuids=("GPU-a",))
    assert command.argv == (
        PY, "-m", "swift.cli.deploy",
        "--model", "/state/runs/8",
        "--host", "127.0.0.1",
        "--port", "8001",
        "--use_hf", "true",
        "--max_batch_size", "4",
    )  # fmt: skip
    assert_known_flags(command)


PUBLIC = CodePolicy(secret_env=("DEPLOY_KEY",), secret_files=("/etc/keys",), allow_public_deploy=True)


def test_deploy_host_from_the_job() -> None:
    spec = parse("task_type: deploy\nmodel: /m\nhost: 0.0.0.0\napi_key: {env: DEPLOY_KEY}\n", policy=PUBLIC)
    command = build_command(spec, inputs())
    assert command.argv[command.argv.index("--host") + 1] == "0.0.0.0"


def test_secrets_are_references_in_the_command() -> None:
    deploy = build_command(
        parse("task_type: deploy\nmodel: /m\napi_key: {env: DEPLOY_KEY}\n", policy=PUBLIC), inputs()
    )
    assert deploy.argv[deploy.argv.index("--api_key") + 1] == "${LLMTRAIND_SECRET_API_KEY}"
    assert deploy.secrets == {"LLMTRAIND_SECRET_API_KEY": "env:DEPLOY_KEY"}
    assert "--api_key '<secret env:DEPLOY_KEY>'" in deploy.render()
    assert "LLMTRAIND_SECRET" not in deploy.render()
    assert_known_flags(deploy)
    text = "task_type: sft\nmodel_name: /m\ndataset: d\nswift: {swanlab_token: {file: /etc/keys/swanlab}}\n"
    sft = build_command(parse(text, policy=PUBLIC), inputs(datasets=data("d")))
    assert "--swanlab_token" not in sft.argv, "swanlab reads SWANLAB_API_KEY: never on argv"
    assert sft.secrets == {"SWANLAB_API_KEY": "file:/etc/keys/swanlab"}
    assert "SWANLAB_API_KEY" not in sft.env
    assert "SWANLAB_API_KEY='<secret file:/etc/keys/swanlab>'" in sft.render()


# ---------------------------------------------------------------------------------------------
# Batch arithmetic


@pytest.mark.parametrize(
    ("keys", "gpus", "per_device", "accumulation"),
    [
        ("global_batch_size: 64", 1, None, "64"),
        ("global_batch_size: 64", 4, None, "16"),
        ("global_batch_size: 64\nper_device_train_batch_size: 4", 2, "4", "8"),
        ("global_batch_size: 10\nper_device_train_batch_size: 4", 1, "4", "3"),  # rounds up: 12 >= 10
        ("global_batch_size: 64\ngradient_accumulation_steps: 4", 2, "8", "4"),
        ("global_batch_size: 3\ngradient_accumulation_steps: 4", 1, "1", "4"),
        ("per_device_train_batch_size: 2\ngradient_accumulation_steps: 4", 2, "2", "4"),
    ],
)
def test_global_batch_size(keys: str, gpus: int, per_device: str | None, accumulation: str) -> None:
    uuids = tuple(f"GPU-{i}" for i in range(gpus))
    args = build(f"task_type: sft\n{keys}\n{BASE}", datasets=data("d"), gpu_uuids=uuids).argv
    found = args[args.index("--per_device_train_batch_size") + 1] if per_device else None
    assert found == per_device
    assert args[args.index("--gradient_accumulation_steps") + 1] == accumulation
    assert "--global_batch_size" not in args


def test_all_three_batch_sizes_keep_the_explicit_two() -> None:
    spec = parse(f"task_type: sft\nglobal_batch_size: 64\nper_device_train_batch_size: 2\n{BASE}")
    assert spec.train is not None
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"gradient_accumulation_steps": 5})})
    args = build_command(spec, inputs(datasets=data("d"))).argv
    assert args[args.index("--per_device_train_batch_size") :][:4] == (
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "5",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Flags, values, environment


def test_job_swift_args_override_and_come_last() -> None:
    text = f"task_type: sft\nlogging_steps: 5\nswift: {{report_to: [tensorboard, wandb], seed: 7}}\n{BASE}"
    args = build(text, datasets=data("d")).argv
    assert args[-5:] == ("--report_to", "tensorboard", "wandb", "--seed", "7")
    assert args.count("--report_to") == 1
    assert args[args.index("--logging_steps") + 1] == "5"


_OVERRIDABLE = ("report_to", "seed", "save_only_model", "lr_scheduler_type", "weight_decay", "beta")
_VALUES = st.one_of(
    st.integers(-5, 10**6),
    st.floats(min_value=-1e9, max_value=1e9),
    st.booleans(),
    st.text(alphabet="abxyz_ .=-", min_size=1, max_size=12),
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(_OVERRIDABLE), _VALUES, max_size=6))
def test_every_flag_appears_once_and_job_values_win(extra: dict[str, int | float | bool | str]) -> None:
    spec = parse(f"task_type: rl\ntuner: lora\n{BASE}").model_copy(update={"swift_args": extra})
    command = build_command(spec, inputs(datasets=data("d")))
    args = command.argv
    names = command.flag_names()
    assert len(names) == len(set(names))
    for name, value in extra.items():
        flag = next(arg for arg in args if arg == f"--{name}" or arg.startswith(f"--{name}="))
        shown = flag.partition("=")[2] or args[args.index(flag) + 1]
        assert shown == format_value(value)


def test_value_starting_with_a_dash_is_joined_to_its_flag() -> None:
    args = build(f"task_type: sft\nsystem: '-- be brief'\n{BASE}", datasets=data("d")).argv
    assert "--system=-- be brief" in args
    assert "--learning_rate" not in args
    spec = parse(f"task_type: sft\n{BASE}").model_copy(update={"swift_args": {"beta": -0.5, "seed": -1}})
    args = build_command(spec, inputs(datasets=data("d"))).argv
    assert args[-4:] == ("--beta", "-0.5", "--seed", "-1")  # argparse takes these as numbers
    spec = spec.model_copy(update={"swift_args": {"beta": -1e-5}})
    args = build_command(spec, inputs(datasets=data("d"))).argv
    assert args[-1] == "--beta=-1e-05"  # ... but not this one


def test_several_values_starting_with_a_dash_are_refused() -> None:
    spec = parse(f"task_type: sft\n{BASE}").model_copy(update={"swift_args": {"model_author": ["-a", "-b"]}})
    with pytest.raises(CommandError, match="cannot start with '-'"):
        build_command(spec, inputs(datasets=data("d")))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (2e-5, "2e-05"),
        (1.2345678e-5, "1.2345678e-05"),
        ("x y", "x y"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output_dir", Path("runs/7")),
        ("model_dir", Path("models/m")),
        ("adapters_dir", Path("ckpt")),
        ("cache_dir", Path("cache")),
        ("datasets", ((Path("d.jsonl"), None),)),
    ],
)
def test_relative_paths_are_refused(field: str, value: object) -> None:
    with pytest.raises(CommandError, match="is not absolute"):
        build(f"task_type: sft\n{BASE}", **{"datasets": data("d"), field: value})


def test_other_bad_inputs() -> None:
    text = f"task_type: sft\n{BASE}"
    with pytest.raises(CommandError, match="interpreter"):
        build(text, datasets=data("d"), python="")
    with pytest.raises(CommandError, match="not a TCP port"):
        build(text, datasets=data("d"), master_port=0)
    with pytest.raises(CommandError, match="1 local dataset"):
        build(text)
    with pytest.raises(CommandError, match="must be 1 or more"):
        build(text, datasets=data("d", sample=0))


def test_resume_from_a_checkpoint() -> None:
    checkpoint = Path("/state/runs/6/checkpoint-500")
    command = build(f"task_type: sft\n{BASE}", datasets=data("d"), resume_from=checkpoint)
    assert command.argv[-10:-8] == ("--resume_from_checkpoint", "/state/runs/6/checkpoint-500")
    assert_known_flags(command)
    with pytest.raises(CommandError, match="only training resumes"):
        build("task_type: deploy\nmodel: /m\n", resume_from=checkpoint)
    with pytest.raises(CommandError, match="is not absolute"):
        build(f"task_type: sft\n{BASE}", datasets=data("d"), resume_from=Path("ckpt"))


def test_flag_names_skip_the_launcher() -> None:
    text = f"task_type: sft\n{BASE}"
    command = build(text, datasets=data("d"), gpu_uuids=("GPU-a", "GPU-b"))
    assert command.flag_names()[:3] == ("model", "tuner_type", "dataset")
    assert "nproc_per_node" not in command.flag_names()


def test_resolved_model_dir_overrides_the_path() -> None:
    args = build(f"task_type: sft\n{BASE}", datasets=data("d"), model_dir=Path("/snap/m")).argv
    assert args[3:5] == ("--model", "/snap/m")


def test_environment_cache_and_merge() -> None:
    command = build(f"task_type: sft\n{BASE}", datasets=data("d"), cache_dir=Path("/state/cache"))
    assert command.env["MODELSCOPE_CACHE"] == "/state/cache/modelscope"
    assert command.env["MPLCONFIGDIR"] == "/state/cache/matplotlib"
    merged = command.environ(
        {"PATH": "/bin", "RAY_SWIFT_ARGS": "[]", "NPROC_PER_NODE": "8", "HF_HUB_OFFLINE": "0"}
    )
    assert merged["PATH"] == "/bin" and merged["HF_HUB_OFFLINE"] == "1"
    assert "RAY_SWIFT_ARGS" not in merged and "NPROC_PER_NODE" not in merged


def test_render_is_a_shell_line_for_people() -> None:
    command = build(f'task_type: sft\nsystem: "it\'s"\n{BASE}', datasets=data("d"))
    text = command.render()
    assert text.startswith("CUDA_VISIBLE_DEVICES='' HF_DATASETS_OFFLINE=1 ")
    assert shlex.split(text)[len(command.env) :] == list(command.argv)


def test_command_is_json_serialisable() -> None:
    command = build(f"task_type: sft\n{BASE}", datasets=data("d"))
    assert json.loads(json.dumps({"argv": command.argv, "env": command.env}))["argv"][0] == PY
