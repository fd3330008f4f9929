"""Secrets never enter the log, through a real daemon: a job names its secrets by reference, the
run's process gets the values, and the recorded events, the API and the log file hold only the
references; a job file that holds a value is rejected without repeating it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model
from tests.integration.test_runs import finished, job_yaml, sft_rows

pytestmark = pytest.mark.timeout(120)

DEPLOY_VALUE = "deploy-value-8f3a2c"
SWANLAB_VALUE = "swanlab-value-71be04"
LITERAL_VALUE = "literal-value-c0ffee"


@pytest.fixture
def daemon(daemon_factory: type[Daemon], tmp_path: Path) -> Daemon:
    seen = tmp_path / "seen.txt"
    wrapper = tmp_path / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'{{ echo ===; printf \'%s\\n\' "$@"; echo "SWANLAB_API_KEY=${{SWANLAB_API_KEY:-}}";'
        f' echo "LEFT=${{LLMTRAIND_SECRET_API_KEY:-}}"; echo "RAY_SWIFT_ARGS=${{RAY_SWIFT_ARGS:-}}"; }} >> {seen}\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "swanlab.key").write_text(SWANLAB_VALUE + "\n")
    extra = (
        f'[swift]\npython = {json.dumps(str(wrapper))}\nsecret_env = ["DEPLOY_KEY"]\n'
        f"secret_files = [{json.dumps(str(secrets))}]\nallow_public_deploy = true\n"
        "[runs]\npoll_s = 0.2\nschedule_s = 0.5\n"
    )
    return daemon_factory(tmp_path / "d", extra_config=extra, env={"DEPLOY_KEY": DEPLOY_VALUE}).start()


def test_secrets_reach_the_run_and_only_references_are_recorded(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    key_file = tmp_path / "secrets" / "swanlab.key"
    d.drop("chat.jsonl", sft_rows())
    d.drop(
        "train.yaml",
        job_yaml(fake_model(tmp_path / "m"), "sft", dataset="chat")
        + f"swift: {{swanlab_token: {{file: {json.dumps(str(key_file))}}}, report_to: swanlab}}\n",
    )
    d.drop("serve.yaml", "task_type: deploy\nmodel: /models/m\nhost: 0.0.0.0\napi_key: {env: DEPLOY_KEY}\n")
    d.drop("leaky.yaml", f"task_type: deploy\nmodel: /models/m\napi_key: {LITERAL_VALUE}\n")
    finished(d, "train", 60)
    finished(d, "serve", 60)
    error = d.wait_for(
        "the leaky job rejected",
        lambda: (
            (d.inbox / "rejected" / "leaky.yaml.error.txt").exists()
            and (d.inbox / "rejected" / "leaky.yaml.error.txt").read_text()
        ),
    )
    assert "`api_key` is a secret" in error and LITERAL_VALUE not in error

    runs = (tmp_path / "seen.txt").read_text().split("===\n")[1:]
    serve = next(run for run in runs if "swift.cli.deploy" in run).splitlines()
    (given,) = [line.partition("=")[2] for line in serve if line.startswith("RAY_SWIFT_ARGS=")]
    args = json.loads(given)  # ms-swift reads its arguments there: no secret on a command line
    assert args[args.index("--api_key") + 1] == DEPLOY_VALUE and "LEFT=" in serve
    assert serve[serve.index("-m") + 1] == "swift.cli.deploy" and "--api_key" not in serve
    assert not [line for line in serve if DEPLOY_VALUE in line and not line.startswith("RAY_SWIFT_ARGS=")]
    train = next(run for run in runs if "swift.cli.sft" in run).splitlines()
    assert f"SWANLAB_API_KEY={SWANLAB_VALUE}" in train and "--swanlab_token" not in train

    shown = {
        path: json.dumps(d.get(path)[1])
        for path in ("/v1/jobs/serve", "/v1/jobs/train", "/v1/events?limit=1000", "/v1/state")
    }
    for path, text in shown.items():
        assert DEPLOY_VALUE not in text and SWANLAB_VALUE not in text and LITERAL_VALUE not in text, path
    events = d.get("/v1/events?limit=1000")[1]["events"]
    submitted = {e["data"]["spec"]["name"]: e["data"]["spec"] for e in events if e["type"] == "JobSubmitted"}
    assert submitted["serve"]["secrets"] == {"api_key": {"env": "DEPLOY_KEY", "file": None}}
    assert submitted["train"]["secrets"] == {"swanlab_token": {"env": None, "file": str(key_file)}}
    started = [e["data"] for e in events if e["type"] == "JobStarted"]
    assert {"LLMTRAIND_SECRET_API_KEY": "env:DEPLOY_KEY"} in [s["secrets"] for s in started]
    assert {"SWANLAB_API_KEY": f"file:{key_file}"} in [s["secrets"] for s in started]
    serve_job = d.get("/v1/jobs/serve")[1]
    assert "<secret env:DEPLOY_KEY>" in json.dumps(serve_job)

    on_disk = b"".join(p.read_bytes() for p in d.state.rglob("*") if p.is_file())
    on_disk += d.log().encode()
    assert DEPLOY_VALUE.encode() not in on_disk and SWANLAB_VALUE.encode() not in on_disk
    assert LITERAL_VALUE.encode() not in on_disk
    for private in (d.state, *d.state.glob("llmtraind.*")):
        assert private.stat().st_mode & 0o077 == 0, private
