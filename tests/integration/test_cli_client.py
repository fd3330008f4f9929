"""`llmtraind status | jobs | show | logs [-f] | events [-f]` against a real daemon, as a person
types them: readable text by default, JSON with --json, one clear line when something is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, _env
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_runs import finished, job_yaml, sft_rows, wait_state

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def daemon(daemon_factory: type[Daemon], tmp_path: Path) -> Daemon:
    wrapper = write_wrapper(tmp_path, step_s=0.05)
    extra = f'[swift]\npython = "{wrapper}"\n[runs]\npoll_s = 0.2\nschedule_s = 0.5\n'
    return daemon_factory(tmp_path / "d", extra_config=extra).start()


def test_status_jobs_show_and_logs(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("quick.yaml", job_yaml(fake_model(tmp_path / "m"), "sft", dataset="chat", max_steps=20))
    body = finished(d, "quick", 60)
    assert body["state"] == "succeeded"

    status = d.cli("status")
    assert status.returncode == 0 and "1 succeeded" in status.stdout, status.stdout

    table = d.cli("jobs").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert "quick" in table[1] and "succeeded" in table[1] and "100%" in table[1]
    assert len(table) == 2, "into a pipe, a job is one whole line"
    assert json.loads(d.cli("jobs", "--json", "--state", "succeeded").stdout)[0]["name"] == "quick"
    assert json.loads(d.cli("jobs", "--json", "--state", "failed").stdout) == []

    show = d.cli("show", "quick").stdout
    assert "state            succeeded" in show and "swift.cli.sft" in show and "step 20/20" in show

    logs = d.cli("logs", "quick").stdout
    assert "fake step 1/20" in logs and "fake step 20/20" in logs and "==> llmtraind: job 1 attempt 1" in logs
    followed = d.cli("logs", "-f", "quick", timeout=30)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == [line for line in logs.splitlines()], "logs -f of a finished job"

    events = d.cli("events").stdout
    assert "JobStarted" in events and "RunExited" in events


def test_logs_follow_a_running_job_to_its_end(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("slow.yaml", job_yaml(fake_model(tmp_path / "m"), "sft", dataset="chat", max_steps=40))
    wait_state(d, "slow", ("running",), 60)
    follower = subprocess.run(
        [sys.executable, "-m", "daemon", "logs", "--config", str(d.config), "-f", "slow"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(d.env),
    )
    assert follower.returncode == 0, follower.stderr
    lines = [line for line in follower.stdout.splitlines() if line.startswith("fake step")]
    assert lines == [f"fake step {i}/40" for i in range(1, 41)]
    assert finished(d, "slow", 10)["state"] == "succeeded"


def test_errors_are_one_line_and_exit_1(daemon: Daemon) -> None:
    missing = daemon.cli("show", "nope")
    assert missing.returncode == 1 and missing.stderr.strip().startswith("llmtraind: /v1/jobs/nope: 404")
    gone = daemon.cli("status", "--url", "http://127.0.0.1:9")
    assert gone.returncode == 1 and "cannot reach the daemon" in gone.stderr


def test_cancel_waits_for_the_verdict(daemon: Daemon, tmp_path: Path) -> None:
    """A refused request exits 1 with the daemon's reason and its note says what was refused; an
    accepted one exits 0 once the job is cancelled."""
    unknown = daemon.cli("cancel", "nope", timeout=30)
    assert unknown.returncode == 1, (unknown.stdout, unknown.stderr)
    assert "cancel nope: refused: there is no job 'nope' to cancel" in unknown.stderr
    notes = list((daemon.inbox / "rejected").glob("cancel-nope-*.yaml.error.txt"))
    assert len(notes) == 1 and str(notes[0]) in unknown.stderr
    note = notes[0].read_text()
    assert "refused the request" in note and "cancel job 'nope'" in note and "Fix the file" not in note

    daemon.drop("later.yaml", job_yaml(fake_model(tmp_path / "m"), "sft", dataset="not_yet"))
    wait_state(daemon, "later", ("queued",), 30)
    cancel = daemon.cli("cancel", "later", timeout=30)
    assert cancel.returncode == 0, (cancel.stdout, cancel.stderr)
    assert cancel.stdout.startswith("cancel later: accepted; job 1 later is cancelled")
    assert wait_state(daemon, "later", ("cancelled",), 5)["state"] == "cancelled"

    again = daemon.cli("cancel", "later", "--json", timeout=30)
    assert again.returncode == 1
    verdict = json.loads(again.stdout)
    assert verdict["status"] == "refused" and "has already ended (cancelled)" in verdict["detail"]


def test_cancel_of_a_running_job_waits_until_its_run_has_stopped(daemon: Daemon, tmp_path: Path) -> None:
    daemon.drop("chat.jsonl", sft_rows())
    daemon.drop("long.yaml", job_yaml(fake_model(tmp_path / "m"), "sft", dataset="chat", max_steps=4000))
    wait_state(daemon, "long", ("running",), 60)
    cancel = daemon.cli("cancel", "long", timeout=30)
    assert cancel.returncode == 0, (cancel.stdout, cancel.stderr)
    assert cancel.stdout.startswith("cancel long: accepted; job 1 long is cancelled"), cancel.stdout
    retry = daemon.cli("retry", "long", "--json", timeout=30)
    assert retry.returncode == 0, (retry.stdout, retry.stderr)
    assert json.loads(retry.stdout)["job"]["state"] in ("queued", "running")


def test_a_control_request_nobody_answers_stays_in_the_inbox(daemon: Daemon) -> None:
    daemon.stop()
    silent = daemon.cli("retry", "later", "--wait", "1", timeout=30)
    assert silent.returncode == 3, (silent.stdout, silent.stderr)
    assert (
        "retry later: no verdict from the daemon (cannot reach the daemon" in silent.stderr
        and "stays in the inbox as" in silent.stderr
    )
    assert [p.name for p in daemon.inbox.glob("retry-later-*.yaml")] != []
