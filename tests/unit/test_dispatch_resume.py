"""Where a job's next attempt continues (`dispatch.decide` -> JobStarted.resume_from and
`--resume_from_checkpoint`), however the last attempt ended: a person's retry after a failure or a
cancel, a run the daemon stopped on its way down, one that saved nothing, a retry that starts over.
test_dispatch has the automatic retries and the reboot."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.core.config import LimitsConfig
from daemon.core.events import (
    ArtifactRecord,
    ArtifactsFound,
    FailureRecord,
    JobFailed,
    JobStarted,
    RetryRequested,
    RunInterrupted,
)
from daemon.core.swift_args import bundled
from daemon.intake.decide import Examined
from daemon.intake.decide import decide as intake
from daemon.intake.validate import check_file
from tests.unit.test_dispatch import SFT, Daemon, checkpoints, export_job, lora_job, value_of

BOOM = FailureRecord(kind="unknown", transient=False, reason="boom")


def trained(tmp_path: Path) -> tuple[Daemon, str]:
    """A LoRA job whose first attempt saved complete checkpoints; and the one to continue from."""
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    return d, checkpoints(d, d.start(1), "adapter")


def retry(d: Daemon, *, from_scratch: bool = False) -> JobStarted:
    d.record(RetryRequested(drop=f"r{d.seq}", job_id=1, source="retry.yaml", from_scratch=from_scratch))
    assert d.state.jobs[1].state == "queued"
    return d.start(1)


def resumes_from(started: JobStarted, checkpoint: str | None) -> None:
    assert started.resume_from == checkpoint
    if checkpoint is None:
        assert "--resume_from_checkpoint" not in started.argv
    else:
        assert value_of(started.argv, "--resume_from_checkpoint") == checkpoint


@pytest.mark.parametrize("ended", ["failed", "cancelled"])
def test_a_retry_continues_from_the_highest_complete_step_of_the_ended_attempt(
    tmp_path: Path, ended: str
) -> None:
    d, resume = trained(tmp_path)
    if ended == "failed":
        d.exited(1, "failed", failure=BOOM)
    else:
        stopped = FailureRecord(kind="cancelled", transient=False, reason="cancelled")
        d.exited(1, "cancelled", returncode=-15, stopped="cancel", failure=stopped)
    assert d.state.jobs[1].state == ended
    second = retry(d)
    assert second.attempt == 2 and second.output_dir != str(Path(resume).parent)
    resumes_from(second, resume)


def test_a_run_the_daemon_stopped_on_its_way_down_continues_when_it_is_back(tmp_path: Path) -> None:
    d, resume = trained(tmp_path)
    d.exited(1, "failed", returncode=-15, stopped="shutdown", retry=True, failure=BOOM)
    assert d.state.jobs[1].auto_retries == 0
    resumes_from(d.start(1), resume)


def test_a_checkpoint_past_swifts_last_checkpoint_link_may_still_be_mid_save(tmp_path: Path) -> None:
    """trainer_state.json is in checkpoint-6, but swift had not moved `last-checkpoint` to it."""
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    out = Path(d.start(1).output_dir)
    found = [
        ArtifactRecord(kind="adapter", path=str(out / "checkpoint-4"), bytes=1, step=4),
        ArtifactRecord(kind="adapter", path=str(out / "checkpoint-6"), bytes=1, step=6),
        ArtifactRecord(kind="last_checkpoint_marker", path=str(out / "last-checkpoint"), bytes=0, step=4),
    ]
    d.record(ArtifactsFound(job_id=1, attempt=1, artifacts=found))
    d.exited(1, "failed", failure=BOOM)
    resumes_from(retry(d), str(out / "checkpoint-4"))


def test_an_attempt_that_saved_nothing_passes_on_where_it_continued_from(tmp_path: Path) -> None:
    d, resume = trained(tmp_path)
    d.exited(1, "failed", failure=BOOM)
    resumes_from(retry(d), resume)
    d.exited(1, "failed", failure=BOOM)  # before its first save
    third = retry(d)
    assert third.attempt == 3
    resumes_from(third, resume)


def test_after_a_start_over_only_the_new_attempts_checkpoints_count(tmp_path: Path) -> None:
    d, _ = trained(tmp_path)
    d.exited(1, "failed", failure=BOOM)
    second = retry(d, from_scratch=True)
    resumes_from(second, None)
    assert not d.state.jobs[1].from_scratch, "asked once, for the next attempt only"
    d.exited(1, "failed", failure=BOOM)
    resumes_from(retry(d), None)  # not attempt 1's checkpoint-6: attempt 2 started over
    d.exited(1, "failed", failure=BOOM)
    d.record(
        ArtifactsFound(
            job_id=1,
            attempt=3,
            artifacts=[ArtifactRecord(kind="adapter", path="/elsewhere/checkpoint-1", bytes=1, step=1)],
        )
    )
    resumes_from(retry(d), "/elsewhere/checkpoint-1")


def test_a_job_that_never_saved_a_checkpoint_starts_over(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.start(1)
    d.exited(1, "failed", failure=BOOM)
    resumes_from(retry(d), None)


@pytest.mark.parametrize("from_scratch", [False, True])
def test_the_checkpoint_recorded_at_a_reboot_is_kept_unless_asked_to_start_over(
    tmp_path: Path, from_scratch: bool
) -> None:
    """Interrupted by a reboot, then failed before it ran again (say, its command could not be built)."""
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    saved = str(Path(d.start(1).output_dir) / "checkpoint-40")
    d.record(RunInterrupted(job_id=1, attempt=1, reason="the machine rebooted", resume_from=saved))
    d.record(JobFailed(job_id=1, reason="cannot build the swift command"))
    assert d.state.jobs[1].state == "failed"
    resumes_from(retry(d, from_scratch=from_scratch), None if from_scratch else saved)


def test_an_export_runs_again_from_the_start(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("e.yaml", export_job("e", "a"))
    d.step()
    d.exited(1, final_checkpoint=str(tmp_path / "checkpoint-3"))
    out = Path(d.start(2).output_dir)
    found = [ArtifactRecord(kind="checkpoint", path=str(out / "checkpoint-1"), bytes=1, step=1)]
    d.record(ArtifactsFound(job_id=2, attempt=1, artifacts=found))
    d.exited(2, "failed", failure=BOOM)
    d.record(RetryRequested(drop="r", job_id=2, source="retry.yaml"))
    again = d.start(2)
    assert again.attempt == 2
    resumes_from(again, None)


@pytest.mark.parametrize(
    ("text", "from_scratch"), [("retry: a\n", False), ("retry: {job: a, from: scratch}\n", True)]
)
def test_a_dropped_retry_file_says_where_to_start(tmp_path: Path, text: str, from_scratch: bool) -> None:
    d, resume = trained(tmp_path)
    d.exited(1, "failed", failure=BOOM)
    path = tmp_path / "retry.yaml"
    path.write_text(text)
    verdict = check_file(path, LimitsConfig(), bundled(), name=path.name)
    (part,) = intake(d.state, [Examined("r1", path.name, verdict.kind, verdict=verdict)], str)
    (new,) = part.events
    assert isinstance(new.event, RetryRequested) and new.event.from_scratch == from_scratch
    d.record(new.event)
    resumes_from(d.start(1), None if from_scratch else resume)
