"""Which runs a waiting job preempts (issue 18 item 4): only preemptible runs of lower priority, the
lowest first, and only as many as with the free GPUs are enough; nothing while one is already pausing
for it."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_dispatch import GPU_BOX, SFT, Daemon, lora_job


def _running_low(tmp_path: Path, extra: str = "preemptible: true\n") -> Daemon:
    tmp_path.mkdir(exist_ok=True)
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("low.yaml", lora_job("low", f"gpus: 2\n{extra}"))
    assert [launch.job_id for launch in d.step(GPU_BOX).launches] == [1]
    return d


def test_a_higher_priority_job_preempts_the_preemptible_run_it_needs(tmp_path: Path) -> None:
    d = _running_low(tmp_path)
    d.drop("urgent.yaml", lora_job("urgent", "priority: 5\n"))
    (preempted,) = d.decide(GPU_BOX).preempted
    assert (preempted.job_id, preempted.attempt, preempted.by) == (1, 1, 2)
    assert (
        preempted.reason
        == "job urgent (priority 5) needs 2 GPU(s) that job low (priority 0, preemptible) holds"
    )
    d.record(preempted)
    assert d.decide(GPU_BOX).preempted == [], "it waits for the pause already asked"


def test_no_preemption_of_a_job_that_did_not_allow_it_or_for_a_lower_priority(tmp_path: Path) -> None:
    d = _running_low(tmp_path / "a", extra="")
    d.drop("urgent.yaml", lora_job("urgent", "priority: 5\n"))
    assert d.decide(GPU_BOX).preempted == []
    d = _running_low(tmp_path / "b", extra="preemptible: true\npriority: 5\n")
    d.drop("same.yaml", lora_job("same", "priority: 5\n"))
    assert d.decide(GPU_BOX).preempted == []
