"""Job files in every accepted format -> JobSpec, and every way a file is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.cli.main import _parser
from daemon.core.jobs import (
    ControlRequest,
    DatasetRef,
    JobFileError,
    JobProblem,
    JobSpec,
    ManagementJobFile,
    ModelRef,
    TrainerJobFile,
    TrainParams,
    dataset_names,
    job_file_schema,
    parse_job_file,
    references,
)
from daemon.core.swift_args import SwiftArgs, bundled
from daemon.intake.submit import control_file
from tests.seeds import SEED_LORA, SEED_PRETRAIN, SEED_RL, SEED_SFT, SEED_TRAINER_JSON

SWIFT = bundled()
MAX = 1 << 20


def parse(text: str | bytes, filename: str = "job.yaml", swift: SwiftArgs = SWIFT) -> JobSpec:
    data = text.encode() if isinstance(text, str) else text
    result = parse_job_file(data, filename, max_bytes=MAX, swift_args=swift)
    assert isinstance(result, JobSpec)
    return result


def problems(text: str | bytes, filename: str = "job.yaml") -> list[JobProblem]:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(JobFileError) as info:
        parse_job_file(data, filename, max_bytes=MAX, swift_args=SWIFT)
    assert info.value.errors, "a rejection always says why"
    return info.value.errors


def only(text: str | bytes, filename: str = "job.yaml") -> JobProblem:
    found = problems(text, filename)
    assert len(found) == 1, found
    return found[0]


def train(spec: JobSpec) -> TrainParams:
    assert spec.train is not None
    return spec.train


# ---------------------------------------------------------------------------------------------
# The seeds


def test_seed_sft() -> None:
    spec = parse(SEED_SFT, "sft_qwen.yaml")
    assert (spec.name, spec.dialect, spec.task, spec.tuner) == ("sft_qwen", "management", "sft", "full")
    assert spec.model == ModelRef(kind="hub", ref="qwen-7b")
    assert spec.datasets == (DatasetRef(name="sft_dataset"),)
    assert train(spec).max_length == 2048
    assert train(spec).per_device_train_batch_size == 4
    assert train(spec).learning_rate == pytest.approx(2e-5)  # YAML 1.1 reads 2e-5 as a string
    assert train(spec).num_train_epochs == 3
    assert spec.swift_command == "sft"
    assert (spec.project, spec.priority, spec.after, spec.gpus, spec.retries) == ("default", 0, (), None, 0)


def test_seed_rl() -> None:
    spec = parse(SEED_RL)
    assert (spec.task, spec.rlhf_type, spec.swift_command) == ("rlhf", "ppo", "rlhf")
    assert spec.model == ModelRef(kind="hub", ref="qwen-7b-sft")
    assert spec.reward_model == ModelRef(kind="hub", ref="qwen-7b-rm")
    assert spec.datasets == (DatasetRef(name="rl_preference"),)
    assert train(spec).local_rollout_forward_batch_size == 16
    assert train(spec).num_ppo_epochs == 4
    assert any("kl_target" in note for note in spec.notes)


def test_seed_lora() -> None:
    spec = parse(SEED_LORA)
    assert (spec.task, spec.tuner) == ("sft", "qlora")
    assert spec.model == ModelRef(kind="hub", ref="llama2-7b")
    t = train(spec)
    assert (t.lora_rank, t.lora_alpha) == (8, 16)
    assert t.lora_dropout == pytest.approx(0.05)
    assert (t.global_batch_size, t.gradient_accumulation_steps) == (64, 4)
    assert (t.quant_method, t.quant_bits) == ("bnb", 8)


def test_seed_pretrain() -> None:
    spec = parse(SEED_PRETRAIN)
    assert (spec.task, spec.tuner, spec.swift_command) == ("pretrain", "full", "pt")
    t = train(spec)
    assert (t.max_length, t.global_batch_size) == (4096, 1024)
    assert t.learning_rate == pytest.approx(3e-4)
    assert t.warmup_ratio == pytest.approx(0.01)
    assert any("tokenizer" in note for note in spec.notes)


def _check_trainer_seed(spec: JobSpec) -> None:
    assert (spec.dialect, spec.task, spec.tuner) == ("trainer", "sft", "lora")
    assert spec.gpu_ids == (0,) and spec.gpus == 1
    assert spec.datasets == (
        DatasetRef(name="AI-ModelScope/alpaca-gpt4-data-zh", sample=500, hub=True),
        DatasetRef(name="AI-ModelScope/alpaca-gpt4-data-en", sample=500, hub=True),
    )
    assert dataset_names(spec) == set()
    assert spec.model == ModelRef(kind="hub", ref="Qwen/Qwen2.5-7B-Instruct")
    t = train(spec)
    assert t.num_train_epochs == 1
    assert (t.per_device_train_batch_size, t.per_device_eval_batch_size) == (1, 1)
    assert t.learning_rate == pytest.approx(1e-4)
    assert (t.lora_rank, t.lora_alpha, t.target_modules) == (8, 32, ("all-linear",))
    assert (t.gradient_accumulation_steps, t.eval_steps, t.save_steps) == (16, 50, 50)
    assert (t.save_total_limit, t.logging_steps, t.max_length) == (2, 5, 2048)
    assert t.warmup_ratio == pytest.approx(0.05)
    assert (t.dataloader_num_workers, t.torch_dtype) == (4, "bfloat16")
    assert t.system == "You are a helpful assistant."
    assert (t.model_author, t.model_name) == (("swift",), ("swift-robot",))
    assert any("output_dir" in note for note in spec.notes)


def test_seed_trainer_body_as_json() -> None:
    _check_trainer_seed(parse(SEED_TRAINER_JSON, "llm.json"))


def test_seed_trainer_body_as_yaml() -> None:
    text = yaml.safe_dump(json.loads(SEED_TRAINER_JSON), allow_unicode=True)
    assert parse(text, "llm.yaml") == parse(SEED_TRAINER_JSON, "llm.json")
    _check_trainer_seed(parse(text, "llm.yaml"))


def test_json_indented_with_tabs() -> None:
    text = SEED_TRAINER_JSON.replace("    ", "\t")
    _check_trainer_seed(parse(text, "llm.json"))


def test_trainer_batch_size_with_explicit_eval_batch() -> None:
    spec = parse('{"model_path": "/m", "datasets": "x", "batch_size": 4, "per_device_eval_batch_size": 8}')
    assert (train(spec).per_device_train_batch_size, train(spec).per_device_eval_batch_size) == (4, 8)


def test_spec_round_trips_through_json() -> None:
    for text in (SEED_SFT, SEED_RL, SEED_LORA, SEED_PRETRAIN, SEED_TRAINER_JSON):
        spec = parse(text)
        assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


# ---------------------------------------------------------------------------------------------
# Problems: field, line, hint


def test_management_error_names_field_and_line() -> None:
    problem = only(SEED_SFT.replace("learning_rate: 2e-5", "learning_rate: fast"))
    assert (problem.field, problem.line) == ("learning_rate", 6)


def test_trainer_error_names_field_and_line() -> None:
    problem = only(SEED_TRAINER_JSON.replace('"num_epochs": 1', '"num_epochs": -1'))
    assert (problem.field, problem.line) == ("num_epochs", 9)
    assert "greater than 0" in problem.message


def test_trainer_list_item_error_has_its_own_line() -> None:
    problem = only(SEED_TRAINER_JSON.replace("AI-ModelScope/alpaca-gpt4-data-en#500", "../x"))
    assert (problem.field, problem.line) == ("datasets.1", 5)


def test_export_error_names_field_and_line() -> None:
    problem = only("task_type: export\nadapters: '@a'\nquant_method: zip\n")
    assert (problem.field, problem.line) == ("quant_method", 3)
    assert "awq" in problem.message


def test_deploy_error_names_field_and_line() -> None:
    problem = only("task_type: deploy\nmodel: '@m'\n\nport: 70000\n")
    assert (problem.field, problem.line) == ("port", 4)


def test_unknown_key_did_you_mean() -> None:
    problem = only(SEED_SFT + "learning_rat: 1\n")
    assert (problem.field, problem.line) == ("learning_rat", 8)
    assert "`learning_rate`" in problem.hint


def test_synonym_hint() -> None:
    problem = only(SEED_TRAINER_JSON.replace('"num_epochs"', '"rlhf_type": "dpo", "num_epochs"'))
    assert problem.field == "rlhf_type"


def test_several_problems_at_once_in_file_order() -> None:
    text = SEED_SFT.replace("max_seq_length: 2048", "max_seq_lenght: 2048").replace("3\n", "many\n")
    found = problems(text + "priority: high\n")
    assert [p.field for p in found] == ["max_seq_lenght", "num_train_epochs", "priority"]
    assert [p.line for p in found] == [4, 7, 8]


def test_mixed_formats_say_which_key_belongs_where() -> None:
    problem = only(SEED_SFT + "model_path: /models/q\n")
    assert problem.field == "model_path"
    assert "Swift Trainer API" in problem.message and "task_type: sft" in problem.message


def test_unknown_task_type() -> None:
    problem = only(SEED_SFT.replace("task_type: sft", "task_type: SFT"))
    assert problem.field == "task_type" and "`sft`" in problem.hint


def test_format_cannot_be_told() -> None:
    assert only("model: /m\ndataset: x\n").field == "task_type"


def test_error_text_is_readable() -> None:
    with pytest.raises(JobFileError) as info:
        parse(SEED_SFT + "learning_rat: 1\n", "sft.yaml")
    text = str(info.value)
    assert text.splitlines()[0] == "sft.yaml: rejected, 1 problem"
    assert "line 8, learning_rat: unknown key" in text
    assert "hint: did you mean `learning_rate`?" in text


# ---------------------------------------------------------------------------------------------
# YAML safety


def test_alias_bomb_is_refused_before_expansion() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    started = time.perf_counter()
    problem = only("\n".join(lines))
    assert time.perf_counter() - started < 0.5
    assert "anchors" in problem.message and problem.line == 1


def test_single_anchor_is_refused() -> None:
    problem = only(SEED_SFT + "name: &n x\n")
    assert "anchors" in problem.message and problem.line == 8


def test_merge_key_is_refused() -> None:
    assert "<<" in only("task_type: sft\n<<: {model: /m}\ndataset: x\n").message


def test_deep_nesting_is_refused() -> None:
    assert "nested" in only(b"a: " + b"[" * 10000).message


def test_oversize_file() -> None:
    with pytest.raises(JobFileError, match="limit is 10"):
        parse_job_file(SEED_SFT.encode(), "a.yaml", max_bytes=10, swift_args=SWIFT)


def test_nul_byte() -> None:
    problem = only(SEED_SFT.encode() + b"x: \x00\n")
    assert "NUL" in problem.message and problem.line == 8


def test_nul_in_escaped_string() -> None:
    assert only(SEED_SFT + 'name: "a\\0b"\n').field == "name"


def test_byte_order_mark_is_fine() -> None:
    assert parse(b"\xef\xbb\xbf" + SEED_SFT.encode()) == parse(SEED_SFT)


def test_not_utf8() -> None:
    assert "UTF-8" in only(SEED_SFT.encode("utf-16")).message
    assert only(b"task_type: sft\nmodel: \xff\n").line == 2


@pytest.mark.parametrize("text", ["", "- a\n", "just text", "null", "[1, 2]"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    assert "mapping" in only(text).message


def test_duplicate_key() -> None:
    problem = only(SEED_SFT + "model_name: other\n")
    assert (problem.field, problem.line, problem.message) == ("model_name", 8, "key given twice")


def test_key_that_is_not_a_name() -> None:
    assert "not a name" in only(SEED_SFT + "yes: 1\n").message


def test_python_tags_are_refused() -> None:
    assert "YAML" in only(SEED_SFT + "x: !!python/object/apply:os.system ['true']\n").message


# ---------------------------------------------------------------------------------------------
# Datasets and models


@pytest.mark.parametrize("name", ["sft_demo", "sft_demo.jsonl", "datasets/sft_demo.jsonl", "sft_demo.txt"])
def test_dataset_names_resolve(name: str) -> None:
    spec = parse(f"task_type: sft\nmodel: /m\ndataset: {name}\n")
    assert spec.datasets == (DatasetRef(name="sft_demo"),)
    assert dataset_names(spec) == {"sft_demo"}


def test_dataset_sampling_and_lists() -> None:
    spec = parse("task_type: sft\nmodel: /m\ndataset: [a.jsonl#10, datasets/b]\nval_dataset: c\n")
    assert spec.datasets == (DatasetRef(name="a", sample=10), DatasetRef(name="b"))
    assert spec.val_datasets == (DatasetRef(name="c"),)
    assert dataset_names(spec) == {"a", "b", "c"}


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/shadow",
        "/etc/passwd",
        "a/../b",
        "./a.jsonl",
        "data/sft.jsonl",
        "datasets/sub/x.jsonl",
        "a\\\\b",
        "~/x.jsonl",
        "x.parquet",
        "x#0",
        "x#many",
        "''",
        "AI-ModelScope/a/b",
    ],
)
def test_dataset_paths_are_refused(name: str) -> None:
    problem = only(f"task_type: sft\nmodel: /m\ndataset: {name}\n")
    assert (problem.field, problem.line) == ("dataset", 3)


def test_dataset_is_required_for_training() -> None:
    assert only("task_type: sft\nmodel: /m\n").field == "dataset"


@pytest.mark.parametrize(
    ("text", "kind", "ref"),
    [
        ("/models/qwen", "path", "/models/qwen"),
        ("/models/qwen/", "path", "/models/qwen"),
        ("'@sft-a'", "job", "sft-a"),
        ("Qwen/Qwen2.5-7B-Instruct", "hub", "Qwen/Qwen2.5-7B-Instruct"),
        ("qwen-7b", "hub", "qwen-7b"),
    ],
)
def test_model_references(text: str, kind: str, ref: str) -> None:
    spec = parse(f"task_type: sft\nmodel: {text}\ndataset: x\n")
    assert spec.model == ModelRef.model_validate({"kind": kind, "ref": ref})


@pytest.mark.parametrize("text", ["models/a/b", "/models/../etc", "/a//b", "./m", "'@'", "'@a b'", "''"])
def test_bad_model_references(text: str) -> None:
    assert only(f"task_type: sft\nmodel: {text}\ndataset: x\n").field == "model"


def test_model_is_required_and_given_once() -> None:
    assert only("task_type: lora\ndataset: x\n").field == "base_model"
    problem = only("task_type: sft\nmodel: /a\nmodel_name: /b\ndataset: x\n")
    assert problem.field == "model" and "`model_name` and `model`" in problem.message


# ---------------------------------------------------------------------------------------------
# Export, deploy, references


def test_export_of_a_job_implies_after() -> None:
    spec = parse("task_type: export\nadapters: '@sft-a'\nafter: [prep]\n", "merge-a.yaml")
    assert (spec.task, spec.swift_command, spec.tuner) == ("export", "export", None)
    assert spec.adapters == ModelRef(kind="job", ref="sft-a")
    assert spec.export is not None and spec.export.merge_lora is True
    assert spec.after == ("prep", "sft-a")
    assert references(spec) == {"prep", "sft-a"}


def test_export_quantise_a_model() -> None:
    spec = parse("task_type: export\nmodel: /m\nquant_method: awq\nquant_bits: 4\ndataset: calib\n")
    assert spec.export is not None
    assert (spec.export.merge_lora, spec.export.quant_method, spec.export.quant_bits) == (False, "awq", 4)
    assert spec.datasets == (DatasetRef(name="calib"),)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("task_type: export\n", "task_type"),
        ("task_type: export\nmodel: /m\n", "task_type"),
        ("task_type: export\nmodel: /m\nmerge_lora: true\n", "merge_lora"),
        ("task_type: export\nmodel: /m\nquant_method: gptq\nquant_bits: 4\n", "quant_method"),
        ("task_type: export\nmodel: /m\nquant_method: awq\ndataset: c\n", "quant_method"),
        ("task_type: export\nmodel: /m\nquant_bits: 4\n", "quant_bits"),
    ],
)
def test_export_problems(text: str, field: str) -> None:
    assert field in [p.field for p in problems(text)]


def test_export_extra_swift_action_counts() -> None:
    spec = parse("task_type: export\nmodel: /m\nmerge_lora: false\nswift: {to_ollama: true}\n")
    assert spec.swift_args == {"to_ollama": True}


def test_deploy() -> None:
    spec = parse("task_type: deploy\nmodel: '@merge-a'\nport: '8001'\nswift: {max_batch_size: 4}\n")
    assert (spec.task, spec.swift_command, spec.after) == ("deploy", "deploy", ("merge-a",))
    assert spec.deploy is not None and spec.deploy.port == 8001
    assert spec.swift_args == {"max_batch_size": 4}


def test_deploy_needs_a_model() -> None:
    assert only("task_type: deploy\nport: 8000\n").field == "task_type"


def test_reward_model_job_reference_implies_after() -> None:
    spec = parse(SEED_RL.replace("reward_model: qwen-7b-rm", "reward_model: '@rm-train'"))
    assert spec.after == ("rm-train",)


def test_a_job_cannot_wait_for_itself() -> None:
    assert only("task_type: export\nadapters: '@me'\n", "me.yaml").field == "after"


# ---------------------------------------------------------------------------------------------
# Control requests


@pytest.mark.parametrize(
    ("text", "action", "job"),
    [
        ("cancel: sft-a\n", "cancel", "sft-a"),
        ("retry: '@sft-a'\n", "retry", "sft-a"),
        ("cancel: 42", "cancel", "42"),
        ("retry: {job: sft-a}\n", "retry", "sft-a"),
        ("retry:\n  job: 7\n  from: checkpoint\n", "retry", "7"),
    ],
)
def test_control_requests(text: str, action: str, job: str) -> None:
    result = parse_job_file(text.encode(), "c.yaml", max_bytes=MAX, swift_args=SWIFT)
    assert result == ControlRequest.model_validate({"action": action, "job": job})
    assert not result.from_scratch


def test_a_retry_can_ask_to_start_over() -> None:
    result = parse_job_file(
        b"retry: {job: sft-a, from: scratch}\n", "r.yaml", max_bytes=MAX, swift_args=SWIFT
    )
    assert result == ControlRequest(action="retry", job="sft-a", from_scratch=True)


@pytest.mark.parametrize("from_scratch", [False, True])
def test_the_clis_retry_file_says_where_to_start(from_scratch: bool) -> None:
    args = ["retry", "sft-a", *(["--from-scratch"] if from_scratch else [])]
    assert _parser().parse_args(args).from_scratch == from_scratch
    name, data = control_file("retry", "sft-a", from_scratch=from_scratch)
    result = parse_job_file(data, name, max_bytes=MAX, swift_args=SWIFT)
    assert result == ControlRequest(action="retry", job="sft-a", from_scratch=from_scratch)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("cancel: a\nreason: x\n", "reason"),
        ("cancel: a\nretry: a\n", "retry"),
        ("cancel: [a]\n", "cancel"),
        ("cancel: '../x'\n", "cancel"),
        ("cancel: a\ntask_type: sft\n", "task_type"),
        ("retry: {job: a, from: start}\n", "retry.from"),
        ("retry: {from: scratch}\n", "retry.job"),
        ("retry: {job: a, form: scratch}\n", "retry.form"),
        ("retry: [a]\n", "retry.job"),
    ],
)
def test_bad_control_requests(text: str, field: str) -> None:
    assert only(text).field == field


# ---------------------------------------------------------------------------------------------
# The swift: block


def test_swift_block_unknown_name_did_you_mean() -> None:
    problem = only(SEED_SFT + "swift:\n  lora_rnk: 4\n")
    assert (problem.field, problem.line) == ("swift.lora_rnk", 9)
    assert "`lora_rank`" in problem.hint and "4.6.0" in problem.message


def test_swift_block_is_checked_per_command() -> None:
    assert only(SEED_SFT + "swift: {num_ppo_epochs: 2}\n").field == "swift.num_ppo_epochs"
    spec = parse(SEED_RL.replace("update_epochs: 4\n", "") + "swift: {num_ppo_epochs: 2, cliprange: 0.3}\n")
    assert train(spec).num_ppo_epochs == 2
    assert spec.swift_args == {"cliprange": 0.3}


def test_swift_block_lifts_typed_values_and_passes_the_rest() -> None:
    text = (
        "task_type: lora\nbase_model: /m\ndataset: x\n"
        "swift:\n  learning-rate: '1e-4'\n  template: qwen\n  model_type: qwen2\n  max_steps: 10\n"
        "  lr_scheduler_type: linear\n  model_kwargs: {a: 1}\n  report_to: [none]\n  seed: 7\n"
    )
    spec = parse(text)
    assert train(spec).learning_rate == pytest.approx(1e-4)
    assert train(spec).max_steps == 10
    assert (spec.template, spec.model_type) == ("qwen", "qwen2")
    assert spec.swift_args == {
        "lr_scheduler_type": "linear",
        "model_kwargs": '{"a": 1}',
        "report_to": ["none"],
        "seed": 7,
    }


@pytest.mark.parametrize(
    "entry",
    [
        "output_dir: /tmp/x",
        "add_version: true",
        "model: /m",
        "dataset: x",
        "tuner_type: full",
        "hub_token: t",
    ],
)
def test_swift_block_refuses_what_the_job_or_daemon_sets(entry: str) -> None:
    problem = only(f"{SEED_SFT}swift:\n  {entry}\n")
    assert problem.field == "swift." + entry.split(":")[0]
    assert problem.hint


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("learning_rate: 1e-4", "swift.learning_rate"),
        ("max_steps: many", "swift.max_steps"),
        ("seed: null", "swift.seed"),
        ("seed: []", "swift.seed"),
        ("lora_rank: 4\n  lora-rank: 4", "swift.lora-rank"),
    ],
)
def test_swift_block_value_problems(entry: str, field: str) -> None:
    text = SEED_SFT.replace("task_type: sft", "task_type: lora").replace("model_name", "base_model")
    assert only(f"{text}swift:\n  {entry}\n").field == field


def test_missing_argument_in_installed_swift() -> None:
    sft = SWIFT.names("sft") - {"warmup_ratio"}
    older = SwiftArgs(version="4.0.0", commands={**SWIFT.commands, "sft": sft})
    with pytest.raises(JobFileError) as info:
        parse(SEED_TRAINER_JSON, swift=older)
    problem = info.value.errors[0]
    assert (problem.field, problem.line) == ("warmup_ratio", 21)
    assert "4.0.0" in problem.message


# ---------------------------------------------------------------------------------------------
# Tuners and rl


def test_lora_keys_need_lora() -> None:
    problem = only(SEED_SFT + "lora_r: 8\n")
    assert problem.field == "lora_r" and "tuner: lora" in problem.hint


def test_use_8bit_needs_lora() -> None:
    assert only(SEED_SFT + "use_8bit: true\n").field == "use_8bit"


def test_quantisation_contradictions() -> None:
    assert only(SEED_LORA + "quant_bits: 4\n").field == "use_8bit"
    assert only(SEED_LORA + "swift: {quant_bits: 4}\n").field == "swift.quant_bits"


def test_batch_sizes_leave_one_to_derive() -> None:
    problem = only(SEED_LORA + "per_device_train_batch_size: 16\n")
    assert problem.field == "train_batch_size" and "derives" in problem.hint


def test_tuner_override_and_qlora() -> None:
    assert parse(SEED_RL + "tuner: lora\n").tuner == "lora"
    spec = parse(SEED_SFT + "tuner: qlora\n")
    assert (spec.tuner, train(spec).quant_method, train(spec).quant_bits) == ("qlora", "bnb", 4)
    spec = parse(SEED_LORA.replace("use_8bit: true", "bnb_4bit_quant_type: nf4"))
    assert (spec.tuner, train(spec).quant_bits, train(spec).bnb_4bit_quant_type) == ("qlora", 4, "nf4")
    assert only(SEED_LORA + "bnb_4bit_quant_type: nf4\n").field == "bnb_4bit_quant_type"
    assert only(SEED_LORA + "tuner: full\n").field == "tuner"


def test_rl_rules() -> None:
    assert only(SEED_RL.replace("reward_model: qwen-7b-rm\n", "")).field == "algorithm"
    found = problems(SEED_RL.replace("algorithm: ppo", "algorithm: dpo"))
    assert [p.field for p in found] == ["reward_model", "rollout_batch_size", "update_epochs"]
    text = SEED_RL.replace("algorithm: ppo\n", "").replace("reward_model: qwen-7b-rm\n", "")
    assert {p.field for p in problems(text)} == {"rollout_batch_size", "update_epochs"}
    spec = parse(SEED_RL.replace("algorithm: ppo", "algorithm: grpo"))
    assert (train(spec).generation_batch_size, train(spec).num_iterations) == (16, 4)
    assert only(SEED_SFT + "algorithm: dpo\n").field == "algorithm"


def test_rl_without_algorithm_uses_swift_default() -> None:
    spec = parse("task_type: rl\npolicy_model: /m\ndataset: prefs\n")
    assert spec.rlhf_type is None and any("dpo" in note for note in spec.notes)


def test_aliases_of_one_setting_conflict() -> None:
    problem = only(SEED_SFT + "sequence_length: 10\n")
    assert problem.field == "sequence_length" and "max_length" in problem.message


# ---------------------------------------------------------------------------------------------
# Common keys


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2h", 7200),
        ("30m", 1800),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        (90, 90),
        ("45", 45),
        ("1.5h", 5400),
        (1.2, 2),
        ("1d", 86400),
        ("90s", 90),
    ],
)
def test_timeout(value: object, seconds: int) -> None:
    assert parse(SEED_SFT + f"timeout: {json.dumps(value)}\n").timeout_s == seconds


@pytest.mark.parametrize("value", ["2x", "0", "-5", "true", "''", "h", "400d", ".inf", "[1]"])
def test_bad_timeout(value: str) -> None:
    assert only(SEED_SFT + f"timeout: {value}\n").field == "timeout"


def test_common_keys() -> None:
    text = SEED_SFT + "name: q.1\nproject: demo\npriority: '5'\nafter: prep\ngpus: 2\nretries: 1\n"
    spec = parse(text + "min_free_memory_mib: 1000\ntemplate: qwen\nmodel_type: qwen2\n")
    assert (spec.name, spec.project, spec.priority, spec.after) == ("q.1", "demo", 5, ("prep",))
    assert (spec.gpus, spec.gpu_ids, spec.retries, spec.min_free_memory_mib) == (2, (), 1, 1000)
    assert (spec.template, spec.model_type) == ("qwen", "qwen2")


def test_gpu_ids() -> None:
    spec = parse(SEED_TRAINER_JSON.replace('"gpu_id": "0"', '"gpu_id": "0,1"'))
    assert (spec.gpus, spec.gpu_ids) == (2, (0, 1))
    assert parse(SEED_SFT + "gpu_ids: [GPU-5d3c, 1]\n").gpu_ids == ("GPU-5d3c", 1)
    assert parse(SEED_SFT + "gpus: 0\n").gpus == 0
    assert only(SEED_SFT + "gpus: 1\ngpu_ids: [0, 1]\n").field == "gpus"
    assert only(SEED_SFT + "gpu_ids: [0, 0]\n").field == "gpu_ids"
    assert only(SEED_TRAINER_JSON.replace('"gpu_id": "0"', '"gpu_id": "0", "gpu_ids": [1]')).field == "gpu_id"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("name: Big", "name"),
        ("project: 'a b'", "project"),
        ("priority: true", "priority"),
        ("retries: -1", "retries"),
        ("gpus: -1", "gpus"),
        ("after: ['../x']", "after.0"),
    ],
)
def test_bad_common_keys(entry: str, field: str) -> None:
    assert only(f"{SEED_SFT}{entry}\n").field == field


def test_default_name_from_file() -> None:
    assert parse(SEED_SFT, "inbox/My-Job.YML").name == "my-job"
    problem = only(SEED_SFT, "my job.yaml")
    assert problem.field == "name" and "name:" in problem.hint
    assert parse(SEED_SFT + "name: ok\n", "my job.yaml").name == "ok"


def test_numeric_strings_are_numbers() -> None:
    spec = parse(SEED_SFT.replace("4\n", "'4'\n").replace("2e-5", "'2.0e-5'"))
    assert train(spec).per_device_train_batch_size == 4
    assert train(spec).learning_rate == pytest.approx(2e-5)


# ---------------------------------------------------------------------------------------------
# Schema


def test_job_file_schema_is_the_union_of_the_formats() -> None:
    schema = job_file_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"ManagementJobFile", "TrainerJobFile", "ExportJobFile", "DeployJobFile"} <= set(schema["$defs"])
    assert len(schema["anyOf"]) == 8
    management = schema["$defs"]["ManagementJobFile"]
    assert management["additionalProperties"] is False
    assert set(ManagementJobFile.model_fields) == set(management["properties"])
    assert set(TrainerJobFile.model_fields) == set(schema["$defs"]["TrainerJobFile"]["properties"])
    json.dumps(schema)
    assert JobSpec.model_json_schema()["title"] == "JobSpec"


# ---------------------------------------------------------------------------------------------
# Fuzzing: nothing but JobFileError ever escapes

_KEYS = sorted(
    {
        *ManagementJobFile.model_fields,
        *TrainerJobFile.model_fields,
        "adapters",
        "merge_lora",
        "port",
        "cancel",
    }
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["sft", "rl", "lora", "export", "deploy", "@a", "/m", "x.jsonl", "2h", "0,1", "ppo"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_DOCS = st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=10), _VALUES, max_size=8)


def _outcome(data: bytes) -> JobSpec | ControlRequest | JobFileError:
    try:
        return parse_job_file(data, "fuzz.yaml", max_bytes=MAX, swift_args=SWIFT)
    except JobFileError as exc:
        return exc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_bytes(data: bytes) -> None:
    _outcome(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCS, st.sampled_from([None, "sft", "rl", "lora", "pretrain", "export", "deploy"]))
def test_fuzz_documents(doc: Mapping[str, Any], task_type: str | None) -> None:
    body = dict(doc) if task_type is None else {**doc, "task_type": task_type}
    result = _outcome(yaml.safe_dump(body, allow_unicode=True).encode())
    if isinstance(result, JobFileError):
        assert all(isinstance(p, JobProblem) for p in result.errors)
        assert str(result).startswith("fuzz.yaml: rejected")


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(TrainParams.model_fields)), _SCALARS, max_size=6))
def test_fuzz_swift_block(swift: Mapping[str, Any]) -> None:
    body = yaml.safe_load(SEED_LORA) | {"swift": dict(swift)}
    _outcome(yaml.safe_dump(body, allow_unicode=True).encode())
