"""The disk guard through a real daemon (issue 18 item 2), with a threshold above the free space: no
run starts, the job says why, /healthz, /v1/status and /metrics show the free space, a dataset that
would cross the limit is rejected and kept; lowered by a reload, the job runs (fake swift)."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_runs import finished, job_yaml, sft_rows

pytestmark = pytest.mark.timeout(120)

HUGE = 10_000_000  # GiB: more than any disk here has free
GIB = 1024**3


def _limit(d: Daemon, gib: int) -> None:
    """Set [runs] min_free_disk_gib by a reload, and wait until the daemon applies it."""
    text = d.config.read_text()
    for old in (f"min_free_disk_gib = {HUGE}", "min_free_disk_gib = 0"):
        text = text.replace(old, f"min_free_disk_gib = {gib}")
    d.config.write_text(text)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(
        f"min_free_disk_gib {gib}", lambda: d.get("/v1/status")[1]["disk"]["min_free_bytes"] == gib * GIB, 15
    )


def test_no_run_starts_below_min_free_disk(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    wrapper = write_wrapper(tmp_path, step_s=0.02)
    extra = f'[swift]\npython = "{wrapper}"\n[runs]\npoll_s = 0.2\nschedule_s = 0.5\nmin_free_disk_gib = 0\n'
    d = daemon_factory(tmp_path / "d", extra_config=extra).start()
    d.drop("chat.jsonl", sft_rows())
    d.wait_for("chat accepted", lambda: d.get("/v1/datasets/chat")[0] == 200, 30)
    _limit(d, HUGE)
    d.drop("small.yaml", job_yaml(fake_model(tmp_path / "m"), "sft", dataset="chat", max_steps=3))

    def waiting() -> dict[str, object] | None:
        code, body = d.get("/v1/jobs/small")
        return body if code == 200 and str(body.get("reason", "")).startswith("disk: ") else None

    body = d.wait_for("the disk reason", waiting, 30)
    assert body["state"] == "queued"
    assert f"GiB free under {d.state}, runs need {HUGE}" in body["reason"], body["reason"]

    code, health = d.get("/healthz")
    assert code == 200 and health["disk"]["ok"] is False and health["disk"]["free_bytes"] > 0
    code, status = d.get("/v1/status")
    assert code == 200 and status["disk"]["min_free_bytes"] == HUGE * GIB
    with urllib.request.urlopen(d.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "llmtraind_state_disk_free_bytes " in text and "llmtraind_state_disk_min_free_bytes " in text

    d.drop("more.jsonl", sft_rows(4))
    note = d.inbox / "rejected" / "more.jsonl.error.txt"
    d.wait_for("more.jsonl rejected", note.exists, 30)
    assert "stored twice" in note.read_text() and (d.inbox / "rejected" / "more.jsonl").exists()

    _limit(d, 0)
    assert finished(d, "small", 60)["state"] == "succeeded"
