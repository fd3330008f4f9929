"""How an attempt ended -> the RunExited the daemon records (`outcome.exit_event`).

Pure: a RunEnd as the runner collects it, and the job as the log knows it. The decisions pinned
here are the ones a person sees: succeeded with which checkpoint/model, cancelled, failed with
what reason, and whether the job runs again by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.core.state import Job, Run
from daemon.runs.outcome import EVIDENCE_LINES, RunEnd, exit_event
from daemon.runs.swift.artifacts import Artifact

OUT = Path("/state/runs/1/1/output")

OOM_SHARED = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of "
    "23.65 GiB of which 11.06 MiB is free. Process 2839 has 6.38 GiB memory in use. Process 2907 has 17.24 GiB "
    "memory in use. Of the allocated memory 16.85 GiB is allocated by PyTorch."
)
"""Out of memory beside another process's allocations: it may fit next time, so it is transient."""
OOM_ALONE = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
    "of 79.15 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.08 GiB memory "
    "in use."
)
"""Out of memory with the GPU to itself: the same job fails the same way again."""
TRACE = ["Traceback (most recent call last):", '  File "/x/sft.py", line 20, in <module>']


def job(**fields: Any) -> Job:
    spec = fields.pop("spec", {})
    base: dict[str, Any] = {
        "id": 1,
        "name": "j",
        "project": "default",
        "filename": "j.yaml",
        "sha256": "0" * 64,
        "task": "sft",
        "tuner": "lora",
        "rlhf_type": None,
        "feeds": "lora",
        "datasets": ["d"],
        "priority": 0,
        "after": [],
        "gpus": None,
        "gpu_ids": [],
        "min_free_memory_mib": None,
        "spec": {"task": "sft", **spec},
        "submitted_ts": 0.0,
        "submitted_seq": 1,
    }
    return Job(**(base | fields))


def end(
    returncode: int | None,
    *,
    stopped: str | None = None,
    error: str | None = None,
    tail: list[str] | None = None,
    artifacts: list[Artifact] | None = None,
) -> RunEnd:
    return RunEnd(returncode, stopped, error, tail or [], artifacts or [], OUT, 12.5)


ADAPTERS = [
    Artifact(kind="adapter", path="checkpoint-2", bytes=10, step=2),
    Artifact(kind="adapter", path="checkpoint-3", bytes=10, step=3),
    Artifact(kind="adapter", path="checkpoint-4", bytes=10, step=4, complete=False),
    Artifact(kind="last_checkpoint_marker", path="last-checkpoint", bytes=0, step=3, target="checkpoint-3"),
    Artifact(kind="logging", path="logging.jsonl", bytes=100),
]
"""A LoRA run's output: checkpoint-4 was still being written when the run ended."""


# ---------------------------------------------------------------------------------------------
# Succeeded


def test_success_names_the_last_complete_checkpoint_absolutely() -> None:
    ev = exit_event(job(), 1, end(0, tail=["done"], artifacts=ADAPTERS))
    assert (ev.outcome, ev.returncode, ev.signal, ev.stopped, ev.failure, ev.retry) == (
        "succeeded",
        0,
        None,
        None,
        None,
        False,
    )
    assert ev.final_checkpoint == str(OUT / "checkpoint-3") and Path(ev.final_checkpoint).is_absolute()
    assert ev.final_model is None, "an adapter is not a model"
    assert (ev.job_id, ev.attempt, ev.duration_s, ev.log_tail) == (1, 1, 12.5, ["done"])


def test_success_of_full_training_names_its_checkpoint_as_the_model() -> None:
    full = [Artifact(kind="checkpoint", path="checkpoint-5", bytes=10, step=5)]
    ev = exit_event(job(tuner="full"), 2, end(0, artifacts=full))
    assert ev.final_checkpoint == ev.final_model == str(OUT / "checkpoint-5")


def test_success_of_an_export_names_the_merged_model() -> None:
    merged = [Artifact(kind="merged_model", path="model", bytes=10)]
    ev = exit_event(job(spec={"task": "export"}), 1, end(0, artifacts=merged))
    assert ev.final_model == str(OUT / "model") and ev.final_checkpoint is None


def test_success_without_checkpoints_names_none() -> None:
    ev = exit_event(job(), 1, end(0))
    assert ev.outcome == "succeeded" and ev.final_checkpoint is None and ev.final_model is None


# ---------------------------------------------------------------------------------------------
# Stopped by the daemon


def test_cancel_is_cancelled_and_never_retried() -> None:
    ev = exit_event(job(spec={"retries": 5}), 1, end(-15, stopped="cancel"))
    assert (ev.outcome, ev.retry, ev.stopped, ev.signal) == ("cancelled", False, "cancel", 15)
    assert ev.failure is not None and ev.failure.kind == "cancelled" and ev.failure.signal == "SIGTERM"
    assert ev.final_checkpoint is None


def test_timeout_fails_without_a_retry() -> None:
    ev = exit_event(job(spec={"retries": 3}), 1, end(-15, stopped="timeout"))
    assert (ev.outcome, ev.retry) == ("failed", False)
    assert ev.failure is not None and ev.failure.kind == "timeout" and "timeout" in ev.failure.reason


def test_a_run_stopped_at_shutdown_runs_again_whatever_its_retries() -> None:
    ev = exit_event(job(), 1, end(-15, stopped="shutdown"))
    assert (ev.outcome, ev.retry, ev.stopped) == ("failed", True, "shutdown")


# ---------------------------------------------------------------------------------------------
# Failed: transient failures run again, within the job's `retries`


def test_a_transient_failure_runs_again_within_retries() -> None:
    ev = exit_event(job(spec={"retries": 2}), 1, end(1, tail=[*TRACE, OOM_SHARED]))
    assert (ev.outcome, ev.retry, ev.returncode, ev.signal) == ("failed", True, 1, None)
    assert ev.failure is not None and (ev.failure.kind, ev.failure.transient) == ("out_of_memory", True)
    assert ev.failure.exception == OOM_SHARED


def test_a_lone_out_of_memory_runs_again_only_when_the_gpu_was_shared() -> None:
    """Without another process on the GPU the same job runs out of memory again: no retry."""
    tail = [*TRACE, OOM_ALONE]
    alone = exit_event(job(spec={"retries": 2}), 1, end(1, tail=tail))
    assert alone.failure is not None and alone.failure.kind == "out_of_memory" and alone.retry is False
    crowded = job(spec={"retries": 2})
    crowded.runs.append(
        Run(
            attempt=1,
            gpu_uuids=["GPU-a"],
            gpu_indices=[0],
            argv=[],
            env={},
            unset_env=[],
            command="swift sft",
            run_dir=str(OUT.parent),
            output_dir=str(OUT),
            log=str(OUT.parent / "j.log"),
            inputs={},
            resume_from=None,
            timeout_s=None,
            ends_by=None,
            placed_ts=0.0,
            gpu_shared=[0],  # GpuShared: a probe saw a foreign process on GPU 0 during the run
        )
    )
    shared = exit_event(crowded, 1, end(1, tail=tail))
    assert shared.retry is True and shared.failure is not None and shared.failure.transient


@pytest.mark.parametrize(("auto_retries", "retry"), [(0, True), (1, True), (2, False), (3, False)])
def test_retries_are_a_budget(auto_retries: int, retry: bool) -> None:
    ev = exit_event(job(spec={"retries": 2}, auto_retries=auto_retries), 3, end(1, tail=[OOM_SHARED]))
    assert (ev.outcome, ev.retry) == ("failed", retry)


def test_no_retries_by_default() -> None:
    ev = exit_event(job(), 1, end(1, tail=[OOM_SHARED]))
    assert ev.failure is not None and ev.failure.transient and ev.retry is False


def test_a_permanent_failure_is_not_retried() -> None:
    tail = [*TRACE, "ValueError: path: '/models/nope' not found"]
    ev = exit_event(job(spec={"retries": 2}), 1, end(1, tail=tail))
    assert ev.failure is not None and ev.failure.kind == "model_not_found" and ev.retry is False
    assert ev.failure.path == "/models/nope"


def test_killed_by_a_signal_records_it() -> None:
    ev = exit_event(job(), 1, end(-9))
    assert (ev.outcome, ev.signal) == ("failed", 9)
    assert ev.failure is not None and (ev.failure.kind, ev.failure.signal) == ("killed", "SIGKILL")


# ---------------------------------------------------------------------------------------------
# Unknown ends


def test_an_unknown_end_fails_with_the_runners_error_as_the_reason() -> None:
    error = "the run's supervisor (pid 4242) is gone without recording an exit"
    ev = exit_event(job(spec={"retries": 2}), 1, end(None, error=error))
    assert (ev.outcome, ev.returncode, ev.signal, ev.retry) == ("failed", None, None, False)
    assert ev.failure is not None and (ev.failure.kind, ev.failure.reason) == ("unknown", error)


def test_an_unknown_end_without_an_error_still_has_a_reason() -> None:
    ev = exit_event(job(), 1, end(None))
    assert ev.failure is not None and ev.failure.reason


def test_a_program_that_could_not_start_fails_with_the_supervisors_error() -> None:
    error = "llmtraind: cannot start /venv/bin/python: [Errno 2] No such file or directory"
    ev = exit_event(job(spec={"retries": 2}), 1, end(127, error=error, tail=[error]))
    assert ev.failure is not None and (ev.failure.kind, ev.failure.reason) == ("unknown", error)
    assert ev.retry is False


def test_only_the_end_of_the_log_is_kept_as_evidence() -> None:
    tail = [f"line {i}" for i in range(EVIDENCE_LINES + 10)]
    ev = exit_event(job(), 1, end(1, tail=tail))
    assert ev.log_tail == tail[-EVIDENCE_LINES:]
