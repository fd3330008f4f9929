"""How an attempt ended, for the ends test_outcome leaves open: a reboot under the run
(`outcome.interrupted_event`), and which ends are judged by the runner's error instead of the log."""

from __future__ import annotations

import pytest

from daemon.runs.outcome import exit_event, interrupted_event
from tests.unit.test_outcome import ADAPTERS, OOM_SHARED, OUT, end, job


@pytest.mark.parametrize("task", ["sft", "pretrain", "rlhf"])
def test_training_interrupted_by_a_reboot_resumes_from_its_last_complete_checkpoint(task: str) -> None:
    ev = interrupted_event(job(id=7, spec={"task": task}), 2, end(None, artifacts=ADAPTERS))
    assert (ev.job_id, ev.attempt, ev.resume_from) == (7, 2, str(OUT / "checkpoint-3"))
    assert ev.reason == "the machine rebooted during attempt 2"


def test_training_interrupted_before_its_first_checkpoint_has_nothing_to_resume() -> None:
    ev = interrupted_event(job(), 1, end(None))
    assert ev.resume_from is None and ev.reason == "the machine rebooted during attempt 1"


@pytest.mark.parametrize("task", ["export", "deploy"])
def test_a_merge_or_a_deployment_interrupted_by_a_reboot_starts_over(task: str) -> None:
    ev = interrupted_event(job(spec={"task": task}), 1, end(None, artifacts=ADAPTERS))
    assert ev.resume_from is None


def test_an_unknown_end_without_an_error_says_so() -> None:
    ev = exit_event(job(), 1, end(None))
    assert ev.failure is not None and ev.failure.reason == "the run's end is unknown"


def test_a_run_that_exited_by_itself_is_judged_by_its_log_even_with_a_runner_error() -> None:
    ev = exit_event(job(spec={"retries": 1}), 1, end(1, error="exit.json was rewritten", tail=[OOM_SHARED]))
    assert ev.failure is not None and (ev.failure.kind, ev.retry) == ("out_of_memory", True)


def test_a_run_exiting_127_without_a_runner_error_is_judged_by_its_log() -> None:
    ev = exit_event(job(), 1, end(127, tail=[OOM_SHARED]))
    assert ev.failure is not None and ev.failure.kind == "out_of_memory"
