"""Code and paths are the operator's decision: a job's `swift:` arguments that load Python, paths
outside the folders the config names, and model folders that ask for remote code are refused,
naming the key and the setting; `[swift] allow_code` and `allowed_paths` let them through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.core.config import LimitsConfig, SwiftConfig, load_config
from daemon.core.jobs import CodePolicy, JobFileError, JobProblem, JobSpec, parse_job_file
from daemon.core.pausing import PAUSE_PLUGIN
from daemon.core.swift_args import bundled
from daemon.intake.validate import check_file

SWIFT = bundled()
SFT = "task_type: sft\nmodel_name: /models/qwen\ndataset: sft_demo\n"
RL = "task_type: rl\nalgorithm: grpo\npolicy_model: /models/qwen\ndataset: rl_demo\n"
SETTING = "set [swift] allow_code = true in llmtraind.toml to allow it"
ALLOW = CodePolicy(allow_code=True)


def parse(text: str, policy: CodePolicy | None = None) -> JobSpec:
    result = parse_job_file(text.encode(), "job.yaml", max_bytes=1 << 20, swift_args=SWIFT, policy=policy)
    assert isinstance(result, JobSpec)
    return result


def refused(text: str, policy: CodePolicy | None = None) -> list[JobProblem]:
    with pytest.raises(JobFileError) as info:
        parse_job_file(text.encode(), "job.yaml", max_bytes=1 << 20, swift_args=SWIFT, policy=policy)
    return info.value.errors


CODE = [
    (SFT, "custom_register_path", "evil.py", "loads Python code"),
    (SFT, "external_plugins", ["/srv/plugins/p.py"], "loads Python code"),
    (SFT, "local_repo_path", "/srv/repo", "import path"),
    (RL, "vllm_engine_kwargs", {"worker_extension_cls": "evil.Ext"}, "vLLM"),
    (SFT, "callbacks", ["early_stop", "evil.callbacks.Cb"], "module path"),
    (SFT, "attn_impl", "kernels-community/flash-attn", "hub kernel"),
    (SFT, "model_kwargs", {"LD_LIBRARY_PATH": "/tmp/evil"}, "LD_LIBRARY_PATH"),
    (SFT, "model_kwargs", '{"PYTHONPATH": "/tmp/evil"}', "PYTHONPATH"),
    (SFT, "model_kwargs", "env.json", "file of environment variables"),
]


@pytest.mark.parametrize(
    ("job", "key", "value", "why"), CODE, ids=[f"{c[1]}-{i}" for i, c in enumerate(CODE)]
)
def test_an_argument_that_loads_code_is_refused_naming_the_key_and_the_setting(
    job: str, key: str, value: object, why: str
) -> None:
    text = job + "swift: " + json.dumps({key: value}) + "\n"
    [problem] = refused(text)
    assert problem.field == f"swift.{key}" and problem.line == job.count("\n") + 1
    assert problem.message.startswith(f"swift.{key} ") and problem.message.endswith(SETTING)
    assert why in problem.message
    spec = parse(text, ALLOW)
    assert key in spec.swift_args


def test_the_brief_s_message_word_for_word() -> None:
    [problem] = refused(SFT + "swift: {custom_register_path: evil.py}\n")
    assert problem.message == (
        "swift.custom_register_path loads Python code; set [swift] allow_code = true in llmtraind.toml "
        "to allow it"
    )


def test_trust_remote_code_is_refused_as_code_and_stays_unknown_to_this_ms_swift() -> None:
    [problem] = refused(SFT + "swift: {trust_remote_code: true}\n")
    assert problem.field == "swift.trust_remote_code" and SETTING in problem.message
    [problem] = refused(SFT + "swift: {trust_remote_code: true}\n", ALLOW)
    assert "has no argument `trust_remote_code`" in problem.message


@pytest.mark.parametrize(
    "block",
    [
        {"callbacks": ["early_stop", "lisa"]},
        {"attn_impl": "sdpa"},
        {"model_kwargs": {"MAX_PIXELS": 1003520, "fps": 2}},
        {"deepspeed": "zero2"},
        {"fsdp": "fsdp2"},
        {"rope_scaling": {"type": "linear", "factor": 2}},
        {"custom_dataset_info": "info/datasets.json"},
        {"new_special_tokens": ["<tool>", "</tool>"]},
    ],
)
def test_names_inline_json_and_paths_inside_the_run_are_accepted_by_default(block: dict[str, object]) -> None:
    spec = parse(SFT + "swift: " + json.dumps(block) + "\n")
    assert set(spec.swift_args) == set(block)


PATHS = [
    (SFT, "deepspeed", "/etc/llmtraind/ds_z3.json"),
    (SFT, "custom_dataset_info", "/srv/data/info.json"),
    (SFT, "rope_scaling", "/srv/conf/rope.json"),
    (SFT, "new_special_tokens", ["<x>", "/srv/conf/tokens.txt"]),
    (SFT, "system", "/srv/conf/system.txt"),
    (RL, "ref_model", "/srv/models/ref"),
]


@pytest.mark.parametrize(("job", "key", "value"), PATHS, ids=[p[1] for p in PATHS])
def test_a_path_outside_the_allowed_folders_is_refused_and_allowed_under_them(
    job: str, key: str, value: object
) -> None:
    text = job + "swift: " + json.dumps({key: value}) + "\n"
    [problem] = refused(text)
    assert problem.field == f"swift.{key}"
    assert "outside the folders swift may read (none are configured)" in problem.message
    assert "[swift] allowed_paths" in problem.message
    [problem] = refused(text, CodePolicy(allowed_paths=("/srv/other", "/etc/llmtraind/ds")))
    assert "(/srv/other, /etc/llmtraind/ds)" in problem.message
    parse(text, CodePolicy(allowed_paths=("/srv", "/etc/llmtraind")))


@pytest.mark.parametrize("value", ["../../etc/passwd.json", "conf/../../../x.json", "~/ds.json", "~root/x"])
def test_a_relative_path_may_not_leave_the_run_s_folder(value: str) -> None:
    [problem] = refused(SFT + "swift: " + json.dumps({"deepspeed": value}) + "\n", ALLOW)
    assert problem.field == "swift.deepspeed" and repr(value) in problem.message


def test_a_top_level_system_prompt_file_is_a_path_too() -> None:
    [problem] = refused(SFT + "system: /home/someone/prompt.txt\n")
    assert problem.field == "system" and "[swift] allowed_paths" in problem.message
    assert parse(SFT + "system: You are /no_think helpful\n").train is not None
    assert parse(SFT + "system: /srv/p.txt\n", CodePolicy(allowed_paths=("/srv",))).train is not None


def test_without_a_policy_nothing_loads_code() -> None:
    data = (SFT + "swift: {external_plugins: p.py}\n").encode()
    with pytest.raises(JobFileError):
        parse_job_file(data, "job.yaml", max_bytes=1 << 20, swift_args=SWIFT)


def model_folder(tmp_path: Path, **files: object) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    for name, body in files.items():
        (folder / f"{name}.json").write_text(json.dumps(body))
    return folder


def check_job(tmp_path: Path, text: str, swift: SwiftConfig | None = None) -> tuple[bool, str]:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    verdict = check_file(path, LimitsConfig(), SWIFT, swift=swift)
    return verdict.ok, verdict.problems


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"config": {"auto_map": {"AutoModelForCausalLM": "modeling_evil.Evil"}}}, "auto_map in config.json"),
        ({"tokenizer_config": {"auto_map": {"AutoTokenizer": ["tok.T", None]}}}, "tokenizer_config.json"),
        ({"args": {"external_plugins": ["/tmp/p.py"]}}, "external_plugins in its args.json"),
    ],
)
def test_a_model_folder_that_asks_for_remote_code_is_refused(
    tmp_path: Path, files: dict[str, object], why: str
) -> None:
    folder = model_folder(tmp_path, **files)
    text = f"task_type: lora\nbase_model: {folder}\ndataset: sft_demo\n"
    ok, problems = check_job(tmp_path, text)
    assert not ok
    assert f"model {str(folder)!r} " in problems and why in problems and SETTING in problems
    assert check_job(tmp_path, text, SwiftConfig(allow_code=True))[0]


def test_a_checkpoint_that_names_only_the_daemons_pause_plugin_is_accepted(tmp_path: Path) -> None:
    """Every training run loads the daemon's own pause plugin, so every checkpoint's args.json
    names it: a LoRA to merge is no code the job brought. Beside another plugin, it still is."""
    (tmp_path / "ours").mkdir()
    (tmp_path / "both").mkdir()
    ours = model_folder(tmp_path / "ours", args={"external_plugins": [str(PAUSE_PLUGIN)]})
    assert check_job(tmp_path, f"task_type: export\nadapters: {ours}\n")[0]
    both = model_folder(tmp_path / "both", args={"external_plugins": [str(PAUSE_PLUGIN), "/tmp/p.py"]})
    ok, problems = check_job(tmp_path, f"task_type: export\nadapters: {both}\n")
    assert not ok and "external_plugins in its args.json" in problems


def test_model_folders_named_under_swift_are_checked_as_well(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, config={"auto_map": {"AutoConfig": "c.C"}})
    text = RL + "swift: " + json.dumps({"ref_model": str(folder)}) + "\n"
    ok, problems = check_job(tmp_path, text, SwiftConfig(allowed_paths=(tmp_path,)))
    assert not ok and "swift.ref_model" in problems and "auto_map" in problems


def test_a_plain_model_folder_and_a_missing_one_are_accepted(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    assert check_job(tmp_path, f"task_type: lora\nbase_model: {folder}\ndataset: sft_demo\n")[0]
    assert check_job(tmp_path, f"task_type: lora\nbase_model: {tmp_path}/absent\ndataset: sft_demo\n")[0]


def test_the_config_keys_default_to_no_code_and_resolve_allowed_paths(tmp_path: Path) -> None:
    assert SwiftConfig().allow_code is False and SwiftConfig().allowed_paths == ()
    conf = tmp_path / "llmtraind.toml"
    conf.write_text('[swift]\nallow_code = true\nallowed_paths = ["conf", "/srv/ds"]\n')
    cfg = load_config(conf, environ={})
    assert cfg.swift.allow_code is True
    assert cfg.swift.allowed_paths == (tmp_path.resolve() / "conf", Path("/srv/ds"))
