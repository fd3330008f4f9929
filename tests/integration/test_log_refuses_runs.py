"""A run's truth is its process (issue 12): while the event log refuses writes, because another
process holds its write lock or because nothing can be written (the state disk is full), a run goes
on, keeps its slot, and its end is recorded once, correctly, when the log takes writes again;
/healthz says 503 meanwhile. A real daemon, real supervisors and the fake swift of tests/fakeswift.py."""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_restart import make
from tests.integration.test_runs import finished, job, job_yaml, maybe_job, sft_rows

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def wrapper(tmp_path: Path) -> Path:
    return write_wrapper(tmp_path)


def all_events(d: Daemon) -> list[dict[str, Any]]:
    code, page = d.get("/v1/events?limit=1000")
    assert code == 200
    return list(page["events"])


def one_slot_two_jobs(daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path, **first: Any) -> Daemon:
    """`first` running (its supervisor recorded) on the only CPU slot, `second` queued behind it."""
    d = make(daemon_factory, tmp_path, wrapper, cpu_slots=1)
    d.drop("chat.jsonl", sft_rows())
    d.drop("first.yaml", job_yaml(fake_model(tmp_path / "a"), "sft", dataset="chat", **first))
    d.wait_for("first's supervisor recorded", lambda: (maybe_job(d, "first").get("run") or {}).get("pid"), 60)
    d.drop("second.yaml", job_yaml(fake_model(tmp_path / "b"), "sft", dataset="chat", max_steps=3))
    d.wait_for("second queued", lambda: maybe_job(d, "second").get("state") == "queued", 30)
    return d


def second_waits(d: Daemon) -> None:
    assert job(d, "first")["state"] == "running"
    assert job(d, "second")["state"] == "queued", "no second job on the slot of a run that goes on"


def ended_once_then_second(d: Daemon, steps: int) -> None:
    """first succeeded, ended once, and second started only after first's RunExited."""
    first, second = finished(d, "first", 60), finished(d, "second", 60)
    assert first["state"] == "succeeded" and first["run"]["exit"]["returncode"] == 0, first
    assert first["progress"]["step"] == steps, "no record was lost"
    assert second["state"] == "succeeded", second
    events = all_events(d)
    of_first = [e for e in events if e["data"].get("job_id") == first["id"]]
    exits = [e for e in of_first if e["type"] == "RunExited"]
    assert len(exits) == 1 and exits[0]["data"]["outcome"] == "succeeded", exits
    assert not [e for e in of_first if e["type"] == "JobFailed"]
    assert [e["data"]["job_id"] for e in events if e["type"] == "JobStarted"] == [first["id"], second["id"]]
    (second_start,) = [
        e["seq"] for e in events if e["type"] == "JobStarted" and e["data"]["job_id"] == second["id"]
    ]
    assert second_start > exits[0]["seq"], "the slot passed on only once first's end was recorded"
    assert d.get("/healthz")[0] == 200


def test_a_write_lock_held_15_s_during_a_run_loses_nothing(
    daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path
) -> None:
    d = one_slot_two_jobs(daemon_factory, tmp_path, wrapper, max_steps=50)
    run_dir = Path(job(d, "first")["run"]["run_dir"])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys\n"
            "c=sqlite3.connect(sys.argv[1],isolation_level=None);c.execute('BEGIN IMMEDIATE');"
            "print('locked',flush=True);sys.stdin.read()",
            str(d.state / "llmtraind.sqlite3"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    locked_at = time.monotonic()
    try:
        d.wait_for("/healthz to say 503", lambda: d.get("/healthz")[0] == 503, 10)
        d.wait_for("first's process to end, with the lock held", (run_dir / "exit.json").exists, 12)
        while time.monotonic() - locked_at < 15:
            second_waits(d)
            code, body = d.get("/healthz")
            assert code == 503 and "locked" in body["reason"], body
            time.sleep(0.5)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    ended_once_then_second(d, 50)
    assert "cannot record" in d.log() and "recorded after all" in d.log()
    assert d.stop() == 0


def _limit_writes(pid: int, limit: int) -> None:
    """RLIMIT_FSIZE of a running process: at 0 every write to a file fails (EFBIG; Python ignores
    SIGXFSZ), as every write that needs a block fails on a full disk."""
    with contextlib.suppress(ProcessLookupError):  # a supervisor ends once its exit is written
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_a_full_state_disk_during_a_run_then_freed_loses_nothing(
    daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path
) -> None:
    """What a full state disk does to the daemon and to the run's supervisor, simulated for those two
    processes only: the kernel refuses each of their writes to a file (RLIMIT_FSIZE set to 0 with
    prlimit), so the daemon's appends to the log and the supervisor's exit.json fail as on a full
    disk. swift (the fake, started before) goes on and ends meanwhile, as a run writing to another
    disk would. Then the supervisor's disk is freed, then the daemon's."""
    d = one_slot_two_jobs(daemon_factory, tmp_path, wrapper, max_steps=3)
    hold = tmp_path / "a" / "fake-model" / "hold"
    hold.write_text("")
    first = job(d, "first")
    run_dir = Path(first["run"]["run_dir"])
    supervisor = int(json.loads((run_dir / "supervisor.json").read_text())["pid"])
    assert d.proc is not None
    daemon = d.proc.pid
    d.wait_for("first's three steps", lambda: (job(d, "first").get("progress") or {}).get("step") == 3, 30)
    _limit_writes(daemon, 0)
    _limit_writes(supervisor, 0)
    try:
        hold.unlink()  # swift ends: its supervisor cannot write exit.json
        time.sleep(3)
        assert not (run_dir / "exit.json").exists()
        second_waits(d)
        _limit_writes(supervisor, resource.RLIM_INFINITY)
        d.wait_for("exit.json, once its disk has room", (run_dir / "exit.json").exists, 20)
        d.wait_for("/healthz to say 503", lambda: d.get("/healthz")[0] == 503, 10)
        code, body = d.get("/healthz")
        assert code == 503 and "disk" in body["reason"], body
        time.sleep(2)
        second_waits(d)
        assert d.get("/healthz")[0] == 503
    finally:
        _limit_writes(daemon, resource.RLIM_INFINITY)
        _limit_writes(supervisor, resource.RLIM_INFINITY)
    ended_once_then_second(d, 3)
    assert d.stop() == 0
