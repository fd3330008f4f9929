"""Runs outlive the daemon (reliability.md §4): kill -9, exits while it is down, reused pids,
reboots, and stopping with `on_stop`. Real processes throughout; real swift where a training
run is named, the fake of tests/fakeswift.py where only a run's length or ending matters."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.client import Api
from daemon.runs.loop import free_port
from daemon.runs.supervise import BOOT_ID_ENV
from tests.daemon_proc import Daemon, session_members
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_runs import finished, job, job_yaml, maybe_job, sft_rows, wait_state

pytestmark = pytest.mark.timeout(300)


def make(
    daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path, cpu_slots: int = 1, on_stop: str = "keep"
) -> Daemon:
    """A daemon whose `[swift] python` is the fake-or-real wrapper, with `cpu_slots` runs at once."""
    env = {"LLMTRAIND_GPUS_CPU_SLOTS": str(cpu_slots), "LLMTRAIND_DAEMON_ON_STOP": on_stop}
    return daemon_factory(tmp_path / "d", extra_config=config(wrapper), env=env).start()


def config(wrapper: Path) -> str:
    return f"""
[swift]
python = "{wrapper}"
[runs]
stop_grace_s = 3
poll_s = 0.2
schedule_s = 0.5
"""


def events_of(d: Daemon, name: str) -> list[dict[str, Any]]:
    code, body = d.get(f"/v1/jobs/{name}/events")
    assert code == 200
    return list(body["events"])


def run_session(d: Daemon, name: str, attempt: int = 1) -> int:
    body = job(d, name)
    (run,) = [r for r in [*body["runs"], body["run"]] if r is not None and r["attempt"] == attempt]
    info = Path(run["run_dir"]) / "supervisor.json"
    return int(json.loads(info.read_text())["sid"])


def until(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Poll while no daemon runs (Daemon.wait_for fails as soon as its daemon is dead)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def follow_log(d: Daemon, name: str, into: list[str]) -> None:
    """`llmtraind logs -f`'s way: SSE from offset 0, reconnecting with Last-Event-ID whenever the
    daemon is killed, until the daemon ends the stream after the finished job's last line."""
    api = Api(d.url)
    for event in api.stream(f"/v1/jobs/{name}/logs/stream?after=0", retries=400):
        if event.event == "message":
            into.append(event.data.replace("\n", "\r") + "\n")


def kill_session(sid: int) -> None:
    """What a power cut does to a run."""
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def wrapper(tmp_path: Path) -> Path:
    return write_wrapper(tmp_path)


def test_kill_9_twenty_times_while_runs_go_on(
    daemon_factory: type[Daemon], tmp_path: Path, tiny_model: Path, wrapper: Path
) -> None:
    """Two real swift runs and a long fake one; the daemon is killed 20 times at random moments
    and restarted. Every run is started once, ends succeeded once, leaves no process, and its
    metrics have no repeat and no gap."""
    d = make(daemon_factory, tmp_path, wrapper, cpu_slots=3)
    d.env["FAKE_STEP_S"] = "0.25"  # the runs inherit the daemon's environment
    d.env["LLMTRAIND_API_PORT"] = str(free_port())  # one address across restarts, for the SSE follower
    d.kill()
    d.start()
    d.drop("chat.jsonl", sft_rows())
    steps = {"alpha": 200, "beta": 200, "slow": 180}
    for name in ("alpha", "beta"):
        d.drop(
            f"{name}.yaml",
            job_yaml(tiny_model, "lora", name=name, dataset="chat", max_steps=200, save_steps=100),
        )
    d.drop("slow.yaml", job_yaml(fake_model(tmp_path / "f"), "sft", dataset="chat", max_steps=180))
    d.wait_for(
        "three runs started", lambda: all(maybe_job(d, n).get("state") == "running" for n in steps), 60
    )
    followed: list[str] = []
    follower = threading.Thread(target=follow_log, args=(d, "slow", followed), daemon=True)
    follower.start()
    rng = random.Random(4)
    for _ in range(20):
        time.sleep(rng.uniform(0.3, 2.0))
        d.kill()
        d.start()
    for name, count in steps.items():
        body = finished(d, name, 240)
        assert body["state"] == "succeeded", (name, body["reason"])
        types = [e["type"] for e in events_of(d, name)]
        assert types.count("JobStarted") == 1 and types.count("RunStarted") == 1, types
        assert types.count("RunExited") == 1, types
        assert session_members(run_session(d, name)) == []
        seen = [m["step"] for m in d.get(f"/v1/jobs/{name}/metrics")[1]["metrics"] if m["kind"] == "train"]
        assert seen == list(range(1, count + 1)), (name, seen)
    follower.join(60)
    log = Path(job(d, "slow")["run"]["log"]).read_text()
    assert "".join(followed) == log, "the log followed over SSE across 20 restarts has a gap or a repeat"
    starts = [e for e in d.get("/v1/events?limit=1000")[1]["events"] if e["type"] == "DaemonStarted"]
    assert len(starts) == 22


def test_an_exit_while_the_daemon_is_down_is_recorded_at_the_next_start(
    daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path
) -> None:
    d = make(daemon_factory, tmp_path, wrapper, cpu_slots=2)
    d.drop("chat.jsonl", sft_rows())
    d.drop("ok.yaml", job_yaml(fake_model(tmp_path / "a"), "sft", dataset="chat", max_steps=10))
    d.drop(
        "bad.yaml", job_yaml(fake_model(tmp_path / "b", exit_status=3), "sft", dataset="chat", max_steps=10)
    )
    d.wait_for(
        "both running", lambda: all(maybe_job(d, n).get("state") == "running" for n in ("ok", "bad")), 60
    )
    d.wait_for("supervisors recorded", lambda: all(job(d, n)["run"]["pid"] for n in ("ok", "bad")))
    sessions = [run_session(d, "ok"), run_session(d, "bad")]
    d.kill()
    until("the runs to end", lambda: not any(session_members(s) for s in sessions), 30)
    d.start()
    ok, bad = finished(d, "ok", 30), finished(d, "bad", 30)
    assert ok["state"] == "succeeded" and ok["run"]["exit"]["returncode"] == 0
    assert bad["state"] == "failed" and bad["run"]["exit"]["returncode"] == 3
    assert ok["progress"]["step"] == 10, "records written while no daemon watched are read"


def _spawn_with_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """A new, unrelated process that gets `pid` (as root, through ns_last_pid); None if it cannot."""
    for _ in range(20):
        try:
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        except OSError:
            return None
        proc = subprocess.Popen(["sleep", "60"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


def test_a_recorded_pid_that_now_names_another_process_is_never_signalled(
    daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path
) -> None:
    d = make(daemon_factory, tmp_path, wrapper)
    d.drop("chat.jsonl", sft_rows())
    d.drop("long.yaml", job_yaml(fake_model(tmp_path / "a"), "sft", dataset="chat", max_steps=5000))
    body = wait_state(d, "long", ("running",), 60)
    d.wait_for("the supervisor recorded", lambda: job(d, "long")["run"]["pid"] is not None)
    pid = job(d, "long")["run"]["pid"]
    sid = run_session(d, "long")
    d.kill()
    kill_session(sid)
    until("the run gone", lambda: not session_members(sid), 20)
    until(f"pid {pid} reaped", lambda: not Path(f"/proc/{pid}").exists(), 30)
    stranger = _spawn_with_pid(pid)
    if stranger is None:
        pytest.skip("cannot choose the next pid here (needs root and /proc/sys/kernel/ns_last_pid)")
    try:
        d.start()
        body = finished(d, "long", 30)
        assert body["state"] == "failed"
        assert f"pid {pid}" in body["reason"] and "gone" in body["reason"], body["reason"]
        time.sleep(0.5)
        assert stranger.poll() is None, "the unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_after_a_reboot_runs_resume_from_their_last_checkpoint(
    daemon_factory: type[Daemon], tmp_path: Path, tiny_model: Path, wrapper: Path
) -> None:
    """A different boot id at the next start stands in for a reboot: the real swift run that had
    saved checkpoint-N is interrupted and runs again with --resume_from_checkpoint; a run with no
    checkpoint fails, saying why."""
    d = make(daemon_factory, tmp_path, wrapper, cpu_slots=2)
    d.drop("chat.jsonl", sft_rows())
    d.drop("tune.yaml", job_yaml(tiny_model, "lora", dataset="chat", max_steps=400, save_steps=20))
    d.drop("nockpt.yaml", job_yaml(fake_model(tmp_path / "a"), "sft", dataset="chat", max_steps=5000))

    def saved() -> bool:
        found = d.get("/v1/jobs/tune/artifacts")[1]["artifacts"] if maybe_job(d, "tune") else []
        return any(a["kind"] == "adapter" and a["complete"] for a in found)

    d.wait_for("a checkpoint of tune", saved, 120)
    sessions = [run_session(d, name) for name in ("tune", "nockpt")]
    d.kill()
    for sid in sessions:
        kill_session(sid)
    d.env[BOOT_ID_ENV] = "another-boot"
    d.start()
    nockpt = finished(d, "nockpt", 30)
    assert (
        nockpt["state"] == "failed" and "rebooted" in nockpt["reason"] and "no checkpoint" in nockpt["reason"]
    )
    d.wait_for("attempt 2", lambda: job(d, "tune")["attempts"] == 2, 60)
    body = job(d, "tune")
    argv = body["run"]["argv"]
    resume = argv[argv.index("--resume_from_checkpoint") + 1]
    assert "/runs/" in resume and resume.rsplit("/", 2)[-2:][0] == "output" and "checkpoint-" in resume
    step = int(resume.rsplit("-", 1)[-1])
    body = finished(d, "tune", 240)
    assert body["state"] == "succeeded", body["reason"]
    second = [m["step"] for m in d.get("/v1/jobs/tune/metrics")[1]["metrics"] if m["attempt"] == 2]
    assert second and second[0] > step, (step, second[:3])
    types = [e["type"] for e in events_of(d, "tune")]
    assert types.count("RunInterrupted") == 1 and types.count("JobStarted") == 2


@pytest.mark.parametrize("on_stop", ["keep", "stop"])
def test_sigterm_leaves_runs_running_or_stops_them(
    daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path, on_stop: str
) -> None:
    d = make(daemon_factory, tmp_path, wrapper, on_stop=on_stop)
    d.drop("chat.jsonl", sft_rows())
    d.drop("long.yaml", job_yaml(fake_model(tmp_path / "a"), "sft", dataset="chat", max_steps=5000))
    wait_state(d, "long", ("running",), 60)
    d.wait_for("the supervisor recorded", lambda: job(d, "long")["run"]["pid"] is not None)
    sid = run_session(d, "long")
    began = time.monotonic()
    assert d.stop(timeout=15) == 0
    assert time.monotonic() - began < 10
    if on_stop == "keep":
        assert session_members(sid), "the run was stopped with the daemon"
        d.start()
        assert job(d, "long")["state"] == "running"
        assert d.cli("cancel", "long").returncode == 0
        assert finished(d, "long", 30)["state"] == "cancelled"
    else:
        until("the run stopped", lambda: not session_members(sid), 10)
        d.start()
        body = wait_state(d, "long", ("queued", "running"), 30)
        first = body["runs"][0] if body["runs"] else body["run"]
        assert first["exit"]["stopped"] == "shutdown", first["exit"]
