"""The ends of an attempt that itself continued from an earlier attempt's checkpoint
(`outcome.exit_event`, `outcome.interrupted_event`): what it leaves for the next attempt and for
`@JOB` references when it saved nothing of its own."""

from __future__ import annotations

from daemon.core.events import ArtifactRecord
from daemon.core.state import Run
from daemon.runs.outcome import exit_event, interrupted_event
from daemon.runs.swift.artifacts import Artifact
from tests.fold_world import run
from tests.unit.test_outcome import ADAPTERS, OUT, end, job

EARLIER = "/s/runs/1/1/output/checkpoint-30"


def resumed(kind: str = "adapter") -> list[Run]:
    """Attempt 1 saved checkpoint-30 (an adapter, or a full model); attempt 2 continued from it."""
    first = run(1, artifacts=[ArtifactRecord(kind=kind, path=EARLIER, bytes=1, step=30)])
    return [first, run(2, resume_from=EARLIER)]


def test_a_resumed_attempt_interrupted_before_its_first_save_resumes_where_it_did() -> None:
    ev = interrupted_event(job(runs=resumed()), 2, end(None))
    assert ev.resume_from == EARLIER


def test_a_resumed_attempt_interrupted_after_a_save_resumes_from_its_own() -> None:
    ev = interrupted_event(job(runs=resumed()), 2, end(None, artifacts=ADAPTERS))
    assert ev.resume_from == str(OUT / "checkpoint-3")


def test_an_attempt_that_resumed_at_the_last_step_succeeds_with_that_checkpoint() -> None:
    """Resumed from the final step's checkpoint, the trainer had nothing to train or save."""
    ev = exit_event(job(runs=resumed()), 2, end(0))
    assert (ev.outcome, ev.final_checkpoint, ev.final_model) == ("succeeded", EARLIER, None)
    full = exit_event(job(tuner="full", runs=resumed("checkpoint")), 2, end(0))
    assert full.final_checkpoint == full.final_model == EARLIER


def test_a_resumed_attempt_that_saved_names_its_own_checkpoint() -> None:
    own = [Artifact(kind="adapter", path="checkpoint-40", bytes=1, step=40)]
    ev = exit_event(job(runs=resumed()), 2, end(0, artifacts=own))
    assert ev.final_checkpoint == str(OUT / "checkpoint-40")


def test_a_reboot_mid_save_resumes_from_the_checkpoint_swifts_link_names() -> None:
    """checkpoint-6 has its trainer_state.json, but swift had not moved `last-checkpoint` to it."""
    saved = [
        Artifact(kind="adapter", path="checkpoint-4", bytes=1, step=4),
        Artifact(kind="adapter", path="checkpoint-6", bytes=1, step=6),
        Artifact(
            kind="last_checkpoint_marker", path="last-checkpoint", bytes=0, step=4, target="checkpoint-4"
        ),
    ]
    ev = interrupted_event(job(), 1, end(None, artifacts=saved))
    assert ev.resume_from == str(OUT / "checkpoint-4")
    unlinked = interrupted_event(job(), 1, end(None, artifacts=saved[:2]))
    assert unlinked.resume_from == str(OUT / "checkpoint-6"), "without the link, trainer_state.json decides"
