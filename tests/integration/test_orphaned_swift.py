"""A supervisor killed with SIGKILL writes no exit.json (issue 12): the daemon, a child subreaper,
becomes swift's parent, waits for it and records swift's real exit status; cancelling such a swift
still stops it. When the daemon was down as the supervisor died, swift's status is lost to everyone:
the next daemon kills what is left of it and records the end as unknown. A real daemon, real
supervisors and the fake swift of tests/fakeswift.py."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_restart import make, until
from tests.integration.test_runs import finished, job, job_yaml, maybe_job, sft_rows

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def wrapper(tmp_path: Path) -> Path:
    return write_wrapper(tmp_path)


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat.rpartition(b")")[2].split()[1])


def child_of(pid: int, parent: int) -> Callable[[], bool]:
    return lambda: parent_of(pid) == parent


def held_run(d: Daemon, tmp_path: Path, name: str, exit_status: int = 0) -> tuple[Path, dict[str, Any]]:
    """Job `name` running on a fake swift that waits on its model's hold file; its supervisor.json."""
    model = fake_model(tmp_path / name, exit_status=exit_status)
    (model / "hold").write_text("")
    d.drop(f"{name}.yaml", job_yaml(model, "sft", dataset="chat", max_steps=2))
    d.wait_for(f"{name}'s supervisor recorded", lambda: (maybe_job(d, name).get("run") or {}).get("pid"), 60)
    run_dir = Path(job(d, name)["run"]["run_dir"])
    return model, json.loads((run_dir / "supervisor.json").read_text())


def test_a_swift_outliving_its_killed_supervisor_ends_with_its_own_exit_status(
    daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path
) -> None:
    d = make(daemon_factory, tmp_path, wrapper, cpu_slots=2)
    d.drop("chat.jsonl", sft_rows())
    model, info = held_run(d, tmp_path, "three", exit_status=3)
    _, other = held_run(d, tmp_path, "cancelled")
    assert d.proc is not None
    daemon_pid = d.proc.pid
    for supervisor in (info, other):
        os.kill(supervisor["pid"], signal.SIGKILL)
        until("swift to become the daemon's child", child_of(supervisor["child_pid"], daemon_pid), 10)
    assert job(d, "three")["state"] == "running", "a run whose swift lives has not ended"

    (model / "hold").unlink()
    three = finished(d, "three", 60)
    assert three["state"] == "failed" and three["run"]["exit"]["returncode"] == 3, three
    exit_json = json.loads((Path(three["run"]["run_dir"]) / "exit.json").read_text())
    assert exit_json["returncode"] == 3 and exit_json["stopped"] is None
    assert not Path(f"/proc/{info['child_pid']}").exists(), "swift was reaped, not left a zombie"
    assert not Path(f"/proc/{info['pid']}").exists(), "its supervisor was reaped too"

    assert d.cli("cancel", "cancelled").returncode == 0
    cancelled = finished(d, "cancelled", 60)
    assert cancelled["state"] == "cancelled" and cancelled["run"]["exit"]["stopped"] == "cancel", cancelled
    assert parent_of(other["child_pid"]) is None
    assert d.get("/healthz")[0] == 200


def test_a_swift_orphaned_while_the_daemon_was_down_is_killed_and_its_end_unknown(
    daemon_factory: type[Daemon], tmp_path: Path, wrapper: Path
) -> None:
    d = make(daemon_factory, tmp_path, wrapper)
    d.drop("chat.jsonl", sft_rows())
    _, info = held_run(d, tmp_path, "lost")
    d.kill()
    os.kill(info["pid"], signal.SIGKILL)
    until("the supervisor to die", lambda: parent_of(info["pid"]) in (None, 0) or _zombie(info["pid"]), 10)
    assert parent_of(info["child_pid"]) is not None and not _zombie(info["child_pid"]), "swift lives on"
    d.start()
    lost = finished(d, "lost", 60)
    assert lost["state"] == "failed", lost
    assert lost["run"]["exit"]["returncode"] is None
    assert "gone without recording an exit" in json.dumps(lost["run"]["exit"]), lost["run"]["exit"]
    until(
        "swift to be killed", lambda: parent_of(info["child_pid"]) is None or _zombie(info["child_pid"]), 10
    )


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat.rpartition(b")")[2].split()[0] in (b"Z", b"X")
