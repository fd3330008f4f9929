"""Secrets never enter the log: a job file that holds a secret's value is refused naming the key and
how to name it by reference instead; references to variables and files the operator listed are
kept as references; a deploy job binding beyond loopback needs an api_key and the operator's say."""

from __future__ import annotations

import json

import pytest

from daemon.core.jobs import CodePolicy, JobFileError, JobProblem, JobSpec, parse_job_file
from daemon.core.jobs.secrets import SecretRef, is_secret_name
from daemon.core.swift_args import bundled

SWIFT = bundled()
SFT = "task_type: sft\nmodel_name: /models/qwen\ndataset: sft_demo\n"
DEPLOY = "task_type: deploy\nmodel: /models/qwen\n"
POLICY = CodePolicy(secret_env=("SWANLAB_KEY", "DEPLOY_KEY"), secret_files=("/etc/llmtraind/secrets",))
VALUE = "sk-very-secret-0123456789"


def parse(text: str, policy: CodePolicy = POLICY) -> JobSpec:
    result = parse_job_file(text.encode(), "job.yaml", max_bytes=1 << 20, swift_args=SWIFT, policy=policy)
    assert isinstance(result, JobSpec)
    return result


def refused(text: str, policy: CodePolicy = POLICY) -> list[JobProblem]:
    with pytest.raises(JobFileError) as info:
        parse_job_file(text.encode(), "job.yaml", max_bytes=1 << 20, swift_args=SWIFT, policy=policy)
    assert VALUE not in str(info.value)
    return info.value.errors


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "hub_token",
        "swanlab_token",
        "swanlab_secret",
        "swanlab_webhook_url",
        "wandb_api_key",
        "smtp_password",
        "HF_TOKEN",
        "aws-secret-access-key",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["max_new_tokens", "reft_layer_key", "teacher_tag_key", "new_special_tokens", "swanlab_project"]
)
def test_not_secret_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("job", "key"),
    [
        (SFT, "swanlab_token"),
        (SFT, "swanlab_secret"),
        (SFT, "hub_token"),
        (SFT, "swanlab_webhook_url"),
        (DEPLOY, "api_key"),
    ],
)
def test_a_secret_value_under_swift_is_refused_naming_the_key_and_the_reference(job: str, key: str) -> None:
    [problem] = refused(job + "swift: " + json.dumps({key: VALUE}) + "\n")
    assert problem.field == f"swift.{key}"
    assert f"`{key}` is a secret" in problem.message
    assert "{env: NAME}" in problem.hint and "[swift] secret_env" in problem.hint
    assert "{file: /path}" in problem.hint and "[swift] secret_files" in problem.hint


@pytest.mark.parametrize(
    ("job", "key"), [(SFT, "swanlab_token"), (SFT, "wandb_api_key"), (DEPLOY, "hf_token")]
)
def test_a_secret_at_the_top_of_a_file_is_refused(job: str, key: str) -> None:
    [problem] = refused(job + f"{key}: {VALUE}\n")
    assert problem.field == key and "is a secret" in problem.message and "{env: NAME}" in problem.hint


def test_a_deploy_api_key_value_at_the_top_is_refused() -> None:
    [problem] = refused(DEPLOY + f"api_key: {VALUE}\n")
    assert problem.field == "api_key" and "`api_key` is a secret" in problem.message


def test_references_are_kept_as_references() -> None:
    spec = parse(SFT + "swift:\n  swanlab_token: {env: SWANLAB_KEY}\n  report_to: swanlab\n")
    assert spec.secrets == {"swanlab_token": SecretRef(env="SWANLAB_KEY")}
    assert "swanlab_token" not in spec.swift_args
    spec = parse(DEPLOY + "api_key: {file: /etc/llmtraind/secrets/deploy.key}\n")
    assert spec.secrets == {"api_key": SecretRef(file="/etc/llmtraind/secrets/deploy.key")}
    assert spec.secrets["api_key"].text() == "file:/etc/llmtraind/secrets/deploy.key"
    spec = parse(DEPLOY + "swift:\n  api_key: {env: DEPLOY_KEY}\n")
    assert spec.secrets == {"api_key": SecretRef(env="DEPLOY_KEY")}
    assert json.loads(spec.model_dump_json())["secrets"] == {"api_key": {"env": "DEPLOY_KEY", "file": None}}


@pytest.mark.parametrize(
    ("value", "says", "hint"),
    [
        ("{env: OTHER}", "OTHER, which jobs may not read", "add OTHER to [swift] secret_env"),
        ("{env: 'a b'}", "must name an environment variable", "{env: NAME}"),
        ("{file: /etc/shadow}", "outside the folders secrets may be read from", "[swift] secret_files"),
        ("{file: /etc/llmtraind/secrets/../../shadow}", "'..'", "name the file"),
        ("{file: relative.key}", "must be an absolute path", "{file: /path}"),
        ("{env: A, file: /etc/llmtraind/secrets/k}", "is a secret", "{env: NAME}"),
        ("{path: /x}", "is a secret", "{env: NAME}"),
    ],
)
def test_bad_references_are_refused(value: str, says: str, hint: str) -> None:
    [problem] = refused(SFT + f"swift:\n  swanlab_token: {value}\n")
    assert problem.field == "swift.swanlab_token" and says in problem.message and hint in problem.hint


def test_no_lists_no_references() -> None:
    [problem] = refused(SFT + "swift:\n  swanlab_token: {env: SWANLAB_KEY}\n", CodePolicy())
    assert "none are listed" in problem.message


def test_a_secret_swift_does_not_have_is_refused_as_unknown() -> None:
    [problem] = refused(SFT + "swift:\n  api_key: {env: DEPLOY_KEY}\n")
    assert problem.field == "swift.api_key" and "has no argument `api_key`" in problem.message


def test_the_api_key_given_twice() -> None:
    [problem] = refused(DEPLOY + "api_key: {env: DEPLOY_KEY}\nswift:\n  api_key: {env: DEPLOY_KEY}\n")
    assert problem.field == "api_key" and "twice" in problem.message


PUBLIC = CodePolicy(secret_env=("DEPLOY_KEY",), allow_public_deploy=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_a_loopback_deploy_needs_nothing(host: str) -> None:
    assert parse(DEPLOY + f"host: '{host}'\n", CodePolicy()).deploy is not None


@pytest.mark.parametrize(
    ("policy", "extra", "missing"),
    [
        (
            CodePolicy(secret_env=("DEPLOY_KEY",)),
            "",
            "[swift] allow_public_deploy is false and the job gives no api_key",
        ),
        (
            CodePolicy(secret_env=("DEPLOY_KEY",)),
            "api_key: {env: DEPLOY_KEY}\n",
            "; [swift] allow_public_deploy is false",
        ),
        (PUBLIC, "", "; the job gives no api_key"),
    ],
)
def test_a_public_deploy_needs_a_key_and_the_permission(policy: CodePolicy, extra: str, missing: str) -> None:
    [problem] = refused(DEPLOY + "host: 0.0.0.0\n" + extra, policy)
    assert problem.field == "host"
    assert "'0.0.0.0' is not a loopback address" in problem.message
    assert "api_key" in problem.message and "[swift] allow_public_deploy = true" in problem.message
    assert problem.message.endswith(missing)


def test_a_public_deploy_with_both_is_accepted() -> None:
    spec = parse(DEPLOY + "swift:\n  host: 0.0.0.0\napi_key: {env: DEPLOY_KEY}\n", PUBLIC)
    assert spec.deploy is not None and spec.deploy.host == "0.0.0.0"
    assert spec.secrets == {"api_key": SecretRef(env="DEPLOY_KEY")}
