"""Hang detection through a real daemon with the fake swift that stops logging (issue 18 item 5):
the run's stacks are dumped into its folder (py-spy when installed, else /proc), it is stopped,
classified `hung` (transient), and retried while `retries` allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_runs import finished, job_yaml, sft_rows

pytestmark = pytest.mark.timeout(120)


def test_a_run_whose_step_stops_is_dumped_stopped_classified_and_retried(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    wrapper = write_wrapper(tmp_path, step_s=0.05)
    extra = (
        f'[swift]\npython = "{wrapper}"\n[runs]\npoll_s = 0.2\nschedule_s = 0.5\nstop_grace_s = 2\n'
        "hang_factor = 3\nhang_min_s = 1.5\n"
    )
    d = daemon_factory(tmp_path / "d", extra_config=extra).start()
    model = fake_model(tmp_path / "m")
    (model / "hang_at_4").touch()
    d.drop("chat.jsonl", sft_rows())
    d.drop("stuck.yaml", job_yaml(model, "sft", dataset="chat", max_steps=20, retries=1))
    body = finished(d, "stuck", 60)
    assert body["state"] == "failed" and body["attempts"] == 2, body

    code, page = d.get("/v1/jobs/stuck/events")
    assert code == 200
    exits = [e["data"] for e in page["events"] if e["type"] == "RunExited"]
    assert [(e["stopped"], e["failure"]["kind"], e["retry"]) for e in exits] == [
        ("hang", "hung", True),
        ("hang", "hung", False),
    ]
    reason = exits[0]["failure"]["reason"]
    assert (
        reason.startswith("hung: no step for ") and "after step 4/20" in reason and "hang_min_s 1.5" in reason
    )
    assert exits[0]["failure"]["transient"] is True
    dumps = sorted((d.state / "runs").glob("*/1/hang-*.txt"))
    assert len(dumps) == 1, dumps
    text = dumps[0].read_text()
    assert text.startswith("llmtraind: hung: no step") and "=== pid " in text
    assert "py-spy" in text.splitlines()[1] or "/proc" in text.splitlines()[1]
    assert str(dumps[0]) in reason
