"""When a run counts as hung (issue 18 item 5): max(hang_factor x median step time, hang_min_s)
without a new step, after its first step and short of its last; a hung end is a transient failure."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.runs.outcome import RunEnd, exit_event
from daemon.runs.runner import Runner
from daemon.runs.stacks import dump_stacks
from daemon.runs.watch import Watch
from tests.fold_world import job, run


async def _nothing(*_: object) -> None:
    return None


def _runner() -> Runner:
    r = Runner(_nothing, _nothing, grace_s=1.0, poll_s=0.1)
    r.hang_factor, r.hang_min_s = 10.0, 60.0
    return r


def _watch(last_step: int | None, step_s: list[float], max_steps: int = 100) -> Watch:
    w = Watch(1, 1, Path("/r"), Path("/r/output"), Path("/l"))
    w.last_step, w.step_s, w.max_steps, w.step_at = last_step, step_s, max_steps, 1000.0
    return w


def test_the_limit_is_the_larger_of_the_factor_times_the_median_and_the_minimum() -> None:
    r = _runner()
    assert r._hung(_watch(5, [1.0, 1.0, 30.0]), 1000.0 + 60.0) is None, "within hang_min_s"
    why = r._hung(_watch(5, [1.0, 1.0, 30.0]), 1000.0 + 61.0)
    assert why is not None and "no step for 61 s after step 5/100" in why and "median step 1.00 s" in why
    slow = _watch(5, [10.0, 10.0])
    assert r._hung(slow, 1000.0 + 99.0) is None and r._hung(slow, 1000.0 + 101.0) is not None


def test_no_hang_before_the_first_step_after_the_last_for_servers_or_while_stopping() -> None:
    r = _runner()
    late = 1000.0 + 10_000.0
    assert r._hung(_watch(None, []), late) is None
    assert r._hung(_watch(100, [1.0]), late) is None, "the final save may take long"
    server = _watch(5, [1.0])
    server.serves = True
    assert r._hung(server, late) is None
    stopping = _watch(5, [1.0])
    stopping.cancel = "cancel"
    assert r._hung(stopping, late) is None


def test_a_hung_end_is_a_transient_failure_retried_within_retries(tmp_path: Path) -> None:
    end = RunEnd(-15, "hang", None, [], [], tmp_path, 3.0, hang="hung: no step for 61 s")
    failed = exit_event(job(state="running", attempts=1, runs=[run()]), 1, end)
    assert failed.failure is not None and (failed.failure.kind, failed.failure.transient) == ("hung", True)
    assert failed.stopped == "hang" and failed.outcome == "failed" and failed.retry is False


def test_the_stacks_of_a_session_are_written(tmp_path: Path) -> None:
    out = dump_stacks(os.getsid(0), tmp_path, "hung: test")
    text = out.read_text()
    assert text.startswith("llmtraind: hung: test\ntool: ") and f"=== pid {os.getpid()} ===" in text
