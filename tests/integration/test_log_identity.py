"""Losing the event log is never silent: a real daemon refuses a missing or empty log beside an
earlier history's runs, starts afresh only when told (`serve --new-log`) and then in folders of its
own, and stops recording once its state folder is deleted under it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_runs import finished, job_yaml, sft_rows

pytestmark = pytest.mark.timeout(180)


def refused(d: Daemon) -> str:
    """Start, expect exit 2, and return what this start logged."""
    before = len(d.log())
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(timeout=30) == 2, d.log()[before:]
    said = d.log()[before:]
    assert "Traceback" not in said, said
    return said


def fake_swift_daemon(daemon_factory: type[Daemon], tmp_path: Path) -> tuple[Daemon, Path]:
    """A started daemon whose swift is the fake one, and the fake model its jobs train."""
    wrapper = write_wrapper(tmp_path)
    model = fake_model(tmp_path / "f")
    d = daemon_factory(
        tmp_path / "d", extra_config=f'[swift]\npython = "{wrapper}"\n[runs]\npoll_s = 0.2\n'
    ).start()
    return d, model


def run_a_job(d: Daemon, model: Path, name: str) -> dict[str, object]:
    d.drop("chat.jsonl", sft_rows())
    d.drop(f"{name}.yaml", job_yaml(model, "sft", name=name, dataset="chat", max_steps=2))
    body = finished(d, name)
    assert body["state"] == "succeeded", body
    return body


def test_a_lost_log_beside_runs_refuses_to_start_until_new_log(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d, model = fake_swift_daemon(daemon_factory, tmp_path)
    old = run_a_job(d, model, "first")
    old_dir = Path(str(old["run"]["run_dir"]))  # type: ignore[index]
    assert old_dir.is_dir() and old_dir.parent.parent == d.state / "runs"
    assert d.stop() == 0
    db = d.state / "llmtraind.sqlite3"

    db.unlink()
    said = refused(d)
    assert f"refusing to start: there is no event log at {db}" in said
    assert "runs/" in said and "blobs/" in said and "llmtraind serve --new-log" in said
    assert "stay where they are" in said
    assert not db.exists(), "a refusal leaves the folder as it found it"

    db.write_bytes(b"")
    said = refused(d)
    assert f"the event log {db} is empty (0 bytes)" in said and "--new-log" in said
    assert db.stat().st_size == 0

    d.start(True, "--new-log")
    new = run_a_job(d, model, "second")
    assert new["id"] == 1 == old["id"]
    new_dir = Path(str(new["run"]["run_dir"]))  # type: ignore[index]
    assert new_dir != old_dir and new_dir.is_dir() and old_dir.is_dir()
    assert new["run"]["log"] != old["run"]["log"]  # type: ignore[index]
    assert d.stop() == 0
    d.start()
    assert d.get("/healthz")[0] == 200, "the new log is the state folder's now"
    assert d.stop() == 0


@pytest.mark.parametrize("deleted", ["state folder", "event log"])
def test_deleting_the_log_under_the_daemon_stops_it_taking_work(
    daemon_factory: type[Daemon], tmp_path: Path, deleted: str
) -> None:
    d = daemon_factory(tmp_path / "d", health_interval_s=0.5).start()
    assert d.get("/healthz")[0] == 200
    seq = d.get("/v1/status")[1]["last_seq"]
    path = d.state if deleted == "state folder" else d.state / "llmtraind.sqlite3"
    if deleted == "state folder":
        shutil.rmtree(path)
    else:
        path.unlink()
    deadline = time.monotonic() + 5
    d.wait_for("/healthz to say 503", lambda: d.get("/healthz")[0] == 503, 5)
    assert time.monotonic() <= deadline
    code, body = d.get("/healthz")
    assert code == 503 and not body["ok"]
    assert f"the {deleted} {path} was deleted under the daemon" in body["reason"], body
    drop = d.drop("late.jsonl", sft_rows())
    time.sleep(2)
    claims = list((d.inbox / ".processing").glob(f"*{drop.name}"))
    assert drop.exists() or claims, list(d.inbox.rglob("*"))
    assert d.get("/v1/status")[1]["last_seq"] == seq, "nothing recorded into the unlinked file"
    assert d.get("/v1/datasets")[1]["datasets"] in ([], {})
    assert d.get("/healthz")[0] == 503
