"""Checkpoint retention through a real daemon and real swift on the tiny model (issue 18 item 1): the
checkpoints on disk are the kept set, each deletion is an event, and a checkpoint another (queued)
job names survives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.integration.test_runs import RUNS, finished, job, job_yaml, sft_rows, wait_state

pytestmark = [pytest.mark.extended, pytest.mark.timeout(300)]


@pytest.fixture
def daemon(daemon_factory: type[Daemon], tmp_path: Path) -> Daemon:
    return daemon_factory(tmp_path / "d", extra_config=RUNS).start()


def test_only_the_kept_checkpoints_stay_on_disk(daemon: Daemon, tiny_model: Path) -> None:
    d = daemon
    log_id = (d.state / "log-id").read_text().strip()
    output = d.state / "runs" / f"{log_id[:8]}-1" / "1" / "output"
    named = output / "checkpoint-2"
    d.drop("chat.jsonl", sft_rows())
    d.drop(
        "keep.yaml",
        job_yaml(tiny_model, "lora", dataset="chat", max_steps=6, save_steps=1, keep_checkpoints=2),
    )
    wait_state(d, "keep", ("running", "succeeded"), 60)
    # a job that names one of keep's checkpoints by path, and waits (for a job never submitted)
    d.drop("merge.yaml", f"task_type: export\nadapters: {named}\nafter: [keep, never]\n")
    done = finished(d, "keep", 180)
    assert done["state"] == "succeeded", done["reason"]

    def pruned() -> list[str]:
        code, page = d.get("/v1/jobs/keep/events")
        assert code == 200
        return sorted(e["data"]["path"] for e in page["events"] if e["type"] == "CheckpointPruned")

    gone = d.wait_for("three deletions", lambda: pruned() if len(pruned()) >= 3 else None, 30)
    on_disk = sorted(p.name for p in output.glob("checkpoint-*"))
    assert on_disk == ["checkpoint-2", "checkpoint-5", "checkpoint-6"], on_disk
    assert gone == [str(output / f"checkpoint-{n}") for n in (1, 3, 4)]
    assert job(d, "keep")["final_checkpoint"] == str(output / "checkpoint-6")
    assert job(d, "merge")["state"] == "queued"
    code, listed_artifacts = d.get("/v1/jobs/keep/artifacts")
    assert code == 200 and sorted(p["path"] for p in listed_artifacts["pruned"]) == gone
    kept = sorted(a["path"] for a in listed_artifacts["artifacts"] if a["kind"] in ("adapter", "checkpoint"))
    assert kept == [str(output / f"checkpoint-{n}") for n in (2, 5, 6)], kept

    listed = d.cli("prune", "--dry-run", timeout=30)
    assert listed.returncode == 0 and listed.stdout.startswith("0 checkpoint(s)"), listed.stdout
