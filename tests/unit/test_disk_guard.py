"""The disk guard's decision (issue 18 item 2): below `[runs] min_free_disk_gib` no run starts and the
jobs that could start wait with the reason; other waiting reasons stay as they are."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from daemon.core.disk import GIB, dataset_shortage, disk_shortage, disk_view
from tests.unit.test_dispatch import CPU_BOX, SFT, Daemon, lora_job


def test_the_reason_names_the_free_space_the_folder_and_the_need() -> None:
    assert disk_shortage(int(3.2 * GIB), 10, "/var/lib/llmtraind") == (
        "disk: 3.2 GiB free under /var/lib/llmtraind, runs need 10"
    )
    assert disk_shortage(11 * GIB, 10, "/s") is None
    assert disk_shortage(0, 0, "/s") is None, "0 turns the guard off"
    assert disk_shortage(GIB, 2.5, "/s") == "disk: 1.0 GiB free under /s, runs need 2.5"
    view = disk_view(GIB, 100 * GIB, 2, "/s")
    assert view == {
        "path": "/s",
        "free_bytes": GIB,
        "total_bytes": 100 * GIB,
        "min_free_bytes": 2 * GIB,
        "ok": False,
        "reason": "disk: 1.0 GiB free under /s, runs need 2",
    }


def test_below_the_limit_the_jobs_that_could_start_wait_with_the_disk_reason(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("b.yaml", lora_job("b"))
    short = "disk: 3.2 GiB free under /s, runs need 10"
    decided = d.step(replace(CPU_BOX, disk_short=short))
    assert decided.launches == [] and decided.waiting is not None
    assert decided.waiting.reasons["1"] == short, "it could start but for the disk"
    assert "CPU slot" in decided.waiting.reasons["2"], "its own reason stays"
    assert d.state.jobs[1].reason == short
    assert [launch.job_id for launch in d.step().launches] == [1], "room again: it starts"


def test_a_dataset_that_would_leave_too_little_is_refused() -> None:
    assert dataset_shortage(12 * GIB, GIB, 10, "/s") is None, "12 - 2 x 1 leaves the 10 runs need"
    why = dataset_shortage(11 * GIB, GIB, 10, "/s")
    assert why == (
        "disk: 11.0 GiB free under /s; this dataset (1.00 GiB, stored twice: as dropped and converted) "
        "would leave 9.0 GiB, and runs need 10 ([runs] min_free_disk_gib); free space, then drop it again"
    )
    assert dataset_shortage(0, GIB, 0, "/s") is None
