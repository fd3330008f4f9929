"""Pause and resume outside a real run: the request's refusals, the pause callback's command line,
the paused outcome, and the callback itself (SIGUSR1 and the run's own file only, never /tmp/stop)."""

from __future__ import annotations

import importlib.util
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.core.events import JobProgress
from daemon.core.pausing import PAUSE_CALLBACK, PAUSE_FILE, PAUSE_FILE_ENV, PAUSE_PLUGIN, pausable
from daemon.intake.decide import _pause_refusal
from daemon.runs.dispatch import _pausable, _with_value
from daemon.runs.outcome import RunEnd, exit_event
from daemon.runs.swift.artifacts import Artifact
from daemon.runs.swift.command import SwiftCommand
from tests.fold_world import job, run

SFT = ("python", "-m", "swift.cli.sft", "--model", "/m")
PAUSABLE_ARGV = [*SFT, "--external_plugins", str(PAUSE_PLUGIN), "--callbacks", PAUSE_CALLBACK]


def test_a_training_command_loads_the_pause_callback_beside_the_jobs_own() -> None:
    command = _pausable(SwiftCommand(argv=SFT, env={"A": "1"}), Path("/s/runs/1/1"))
    assert list(command.argv) == PAUSABLE_ARGV and pausable(command.argv)
    assert command.env == {"A": "1", PAUSE_FILE_ENV: f"/s/runs/1/1/{PAUSE_FILE}"}
    assert PAUSE_PLUGIN.is_file() and [p.name for p in PAUSE_PLUGIN.parent.iterdir()] == [PAUSE_PLUGIN.name]
    given = [*SFT, "--callbacks", "early_stop", "lisa", "--report_to", "none"]
    assert _with_value(given, "--callbacks", PAUSE_CALLBACK) == [
        *SFT, "--callbacks", "early_stop", "lisa", PAUSE_CALLBACK, "--report_to", "none",
    ]  # fmt: skip
    assert not pausable(SFT)


def test_who_can_pause_and_resume() -> None:
    live = job(state="running", attempts=1, runs=[replace(run(), argv=PAUSABLE_ARGV)])
    assert _pause_refusal("pause", "train", 1, "running", live) is None
    assert "only a running job" in str(_pause_refusal("pause", "train", 1, "queued", job()))
    asked = job(state="running", runs=[replace(run(), argv=PAUSABLE_ARGV)], pause_requested="p.yaml")
    assert "already pausing (p.yaml asked)" in str(_pause_refusal("pause", "train", 1, "running", asked))
    plain = job(state="running", attempts=1, runs=[run()])
    assert "without llmtraind's pause callback" in str(_pause_refusal("pause", "train", 1, "running", plain))
    assert _pause_refusal("resume", "train", 1, "paused", None) is None
    assert "only a paused job can be resumed" in str(_pause_refusal("resume", "train", 1, "running", None))


def _progress(step: int) -> JobProgress:
    return JobProgress(job_id=1, attempt=1, kind="train", step=step, max_steps=30, percent=step / 0.3)


def _end(paused: bool) -> RunEnd:
    checkpoint = Artifact(kind="adapter", path="checkpoint-7", bytes=10, step=7)
    return RunEnd(0, None, None, [], [checkpoint], Path("/s/out"), 5.0, paused=paused)


def test_a_paused_exit_is_paused_unless_the_training_had_ended() -> None:
    mid = job(state="running", attempts=1, runs=[run(progress=_progress(7))])
    paused = exit_event(mid, 1, _end(paused=True))
    assert (paused.outcome, paused.stopped, paused.final_checkpoint) == (
        "paused",
        "pause",
        "/s/out/checkpoint-7",
    )
    assert exit_event(mid, 1, _end(paused=False)).outcome == "succeeded"
    done = job(state="running", attempts=1, runs=[run(progress=_progress(30))])
    assert exit_event(done, 1, _end(paused=True)).outcome == "succeeded"


def test_the_callback_listens_to_sigusr1_and_its_own_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("llmtraind_pause_under_test", PAUSE_PLUGIN)
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    from swift.callbacks import callbacks_map

    assert callbacks_map[PAUSE_CALLBACK] is plugin.PauseCallback
    monkeypatch.setenv(PAUSE_FILE_ENV, str(tmp_path / PAUSE_FILE))
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    callback = plugin.PauseCallback()
    try:
        manager = callback.shutdown_manager
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
        assert not manager.should_shutdown(), "a stray /tmp/stop, if any, is not this run's file"
        (tmp_path / PAUSE_FILE).touch()
        assert manager.should_shutdown()
    finally:
        callback.shutdown_manager.unregister()
    assert signal.getsignal(signal.SIGUSR1) is before[signal.SIGUSR1]
