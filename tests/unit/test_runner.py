"""The runner, for real but without swift: launch, watch, cancel, stop and re-adopt fake runs.

Each test hands `Runner` a JobStarted whose argv is a small Python script standing in for swift,
and collects what the runner reports (the events it would record) and how it says the run
ended (`on_end`). The supervisor is the real `daemon.runs.supervise`, so these tests cover the whole
process tree of a run, on any machine, in about a second each.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from daemon.core.events import ArtifactsFound, JobProgress, JobStarted, NewEvent, RunServing, RunStarted
from daemon.runs.outcome import RunEnd
from daemon.runs.runner import Adoptable, Runner
from daemon.runs.supervise import EXIT_FILE, SUPERVISOR_FILE, boot_id, proc_start_ticks
from daemon.runs.swift.failures import TAIL_LINES
from daemon.runs.watch import read_tail

WAIT_S = 10.0
"""Upper bound for anything here; the runs themselves take a fraction of a second."""

TRAINS = """\
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
with open(out / "logging.jsonl", "a") as f:
    for step in (1, 2, 3):
        record = {
            "loss": 1.0 / step, "grad_norm": 1.0, "learning_rate": 1e-4, "epoch": step / 3,
            "global_step/max_steps": f"{step}/3", "elapsed_time": f"{step}s",
            "remaining_time": f"{3 - step}s", "train_speed(s/it)": 0.1,
        }
        f.write(json.dumps(record) + "\\n")
        f.flush()
checkpoint = out / "checkpoint-3"
checkpoint.mkdir()
(checkpoint / "adapter_config.json").write_text("{}")
(checkpoint / "adapter_model.safetensors").write_bytes(b"weights")
(checkpoint / "trainer_state.json").write_text("{}")
print("training done", flush=True)
"""
"""A swift that trains 3 steps, logging each as swift does, and saves its final LoRA checkpoint."""

WAITS = """\
import pathlib, sys, time
release = pathlib.Path(sys.argv[1]) / "release"
while not release.exists():
    time.sleep(0.02)
print("released", flush=True)
"""
"""A swift that runs until the test creates `release` in its output directory, then exits 0."""

SLEEPS = "import time\ntime.sleep(60)\n"

SERVES = """\
import http.server, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
asked = []

class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        asked.append(self.path)
        if self.path == "/health":  # not ready at the first question
            code, body = (503, {}) if asked.count("/health") == 1 else (200, {})
        else:
            code, body = 200, {"data": [{"id": "tiny", "object": "model"}], "object": "list"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Api)
print(f"INFO:     Uvicorn running on http://0.0.0.0:{server.server_port} (Press CTRL+C to quit)", flush=True)
server.serve_forever()
"""
"""A swift deploy: says where it listens (bound everywhere, as swift's default host does) and
answers /health (503 once, then 200) and /v1/models until it is stopped."""

_E = TypeVar("_E", bound=BaseModel)


class Recorder:
    """The runner's two callbacks: the events it reports, and each run's end."""

    def __init__(self) -> None:
        self.events: list[tuple[int, NewEvent]] = []
        self.ends: dict[int, list[tuple[int, RunEnd]]] = {}
        self._changed = asyncio.Event()

    async def report(self, job_id: int, events: list[NewEvent]) -> None:
        self.events.extend((job_id, e) for e in events)
        self._changed.set()

    async def on_end(self, job_id: int, attempt: int, end: RunEnd) -> None:
        self.ends.setdefault(job_id, []).append((attempt, end))
        self._changed.set()

    async def until(self, check: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                while not check():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def end(self, job_id: int) -> RunEnd:
        await self.until(lambda: job_id in self.ends, f"the end of job {job_id}")
        ends = self.ends[job_id]
        assert len(ends) == 1, "a run ends once"
        return ends[0][1]

    async def started(self, job_id: int) -> RunStarted:
        await self.until(lambda: bool(self.of(RunStarted, job_id)), f"RunStarted of job {job_id}")
        return self.of(RunStarted, job_id)[0]

    def of(self, kind: type[_E], job_id: int) -> list[_E]:
        return [e.event for j, e in self.events if j == job_id and isinstance(e.event, kind)]


class Runs:
    """Makes runners and attempts under tmp_path; kills whatever a failing test left running."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runners: list[Runner] = []
        self.run_dirs: list[Path] = []

    def runner(self, rec: Recorder, *, grace_s: float = 2.0) -> Runner:
        runner = Runner(rec.report, rec.on_end, grace_s=grace_s, poll_s=0.05)
        self.runners.append(runner)
        return runner

    def started(
        self, job_id: int, script: str, *, timeout_s: float | None = None, tail: tuple[str, ...] = ()
    ) -> JobStarted:
        """The JobStarted `dispatch` would make, with a fake swift that gets the output dir (and
        `tail`: more arguments, such as the module name a deploy command has)."""
        run_dir = self.root / "runs" / str(job_id) / "1"
        output_dir = run_dir / "output"
        path = self.root / f"fake_swift_{job_id}.py"
        path.write_text(script)
        self.run_dirs.append(run_dir)
        argv = [sys.executable, str(path), str(output_dir), *tail]
        return JobStarted(
            job_id=job_id,
            attempt=1,
            gpu_uuids=[],
            gpu_indices=[],
            argv=argv,
            env={"FAKE_SWIFT": "1"},
            command=" ".join(argv),
            run_dir=str(run_dir),
            output_dir=str(output_dir),
            log=str(self.root / "logs" / f"{job_id}.log"),
            inputs={},
            timeout_s=timeout_s,
        )

    async def cleanup(self) -> None:
        for runner in self.runners:
            await runner.stop(stop_runs=False)
        for run_dir in self.run_dirs:
            supervisor = run_dir / SUPERVISOR_FILE
            if not supervisor.exists() or (run_dir / EXIT_FILE).exists():
                continue
            info = json.loads(supervisor.read_text())
            if proc_start_ticks(info["pid"]) == info["start_ticks"]:
                os.kill(info["pid"], signal.SIGKILL)  # swift follows it (PDEATHSIG)


@pytest.fixture
async def runs(tmp_path: Path) -> AsyncIterator[Runs]:
    made = Runs(tmp_path)
    yield made
    await made.cleanup()


# ---------------------------------------------------------------------------------------------
# A run from start to end


class SlowDisk(Runner):
    """The real runner on a slow disk: each poll while the run goes on takes 0.3 s to read."""

    def _observe(self, w: Any, final: bool) -> list[NewEvent]:
        if not final:
            time.sleep(0.3)
        return super()._observe(w, final)


async def test_a_run_that_ends_during_a_poll_still_gets_its_final_poll(runs: Runs) -> None:
    """The supervisor exits while a (slow) poll reads: the last metrics and artifacts are still
    recorded, by a final poll after that one."""
    rec = Recorder()
    runner = SlowDisk(rec.report, rec.on_end, grace_s=2.0, poll_s=0.05)
    runs.runners.append(runner)
    await runner.launch(runs.started(1, "import time; time.sleep(0.15)\n" + TRAINS))
    end = await rec.end(1)
    assert end.returncode == 0
    found = rec.of(ArtifactsFound, 1)
    assert found and any(a.path.endswith("checkpoint-3") and a.complete for a in found[-1].artifacts)
    assert [p.step for p in rec.of(JobProgress, 1)] == [1, 2, 3]


class CountsPolls(Runner):
    """The real runner, counting its polls, so that a test can wait for more of them."""

    polls = 0

    def _observe(self, w: Any, final: bool) -> list[NewEvent]:
        self.polls += 1
        return super()._observe(w, final)


async def test_a_deploy_run_is_recorded_serving_once_its_server_answers(runs: Runs) -> None:
    rec = Recorder()
    runner = CountsPolls(rec.report, rec.on_end, grace_s=2.0, poll_s=0.05)
    runs.runners.append(runner)
    await runner.launch(runs.started(1, SERVES, tail=("swift.cli.deploy",)))
    await rec.until(lambda: bool(rec.of(RunServing, 1)), "RunServing")
    (serving,) = rec.of(RunServing, 1)
    assert serving.url.startswith("http://0.0.0.0:") and serving.models == ["tiny"]
    keys = [e.idem_key for _, e in rec.events if isinstance(e.event, RunServing)]
    assert keys == ["run:1:1:serving"]
    after = runner.polls
    async with asyncio.timeout(WAIT_S):  # more polls: recorded once
        while runner.polls < after + 5:
            await asyncio.sleep(0.01)
    assert len(rec.of(RunServing, 1)) == 1
    assert runner.cancel(1)
    assert (await rec.end(1)).stopped == "cancel"


async def test_a_run_reports_start_progress_artifacts_and_its_end(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, TRAINS)
    await runner.launch(started)
    assert runner.running == {1}
    end = await rec.end(1)

    assert (end.returncode, end.stopped, end.error) == (0, None, None)
    assert end.output_dir == Path(started.output_dir)
    assert end.duration_s is not None and end.duration_s >= 0
    assert "training done" in end.log_tail
    assert any("==> llmtraind: job 1 attempt 1" in line for line in end.log_tail)
    assert [(a.path, a.kind, a.step, a.complete) for a in end.artifacts if a.step is not None] == [
        ("checkpoint-3", "adapter", 3, True)
    ]

    events = [e for _, e in rec.events]
    assert isinstance(events[0].event, RunStarted), "RunStarted is reported first"
    first = events[0].event
    assert (first.job_id, first.attempt, first.log_offset) == (1, 1, 0)
    assert events[0].idem_key == "run:1:1:started"
    supervisor = json.loads((Path(started.run_dir) / SUPERVISOR_FILE).read_text())
    assert (first.pid, first.child_pid, first.session) == (
        supervisor["pid"],
        supervisor["child_pid"],
        supervisor["sid"],
    )
    assert first.start_ticks == supervisor["start_ticks"] and first.boot_id == boot_id()

    progress = rec.of(JobProgress, 1)
    assert [(p.step, p.max_steps, p.kind) for p in progress] == [
        (1, 3, "train"),
        (2, 3, "train"),
        (3, 3, "train"),
    ]
    assert progress[-1].percent == 100.0 and progress[0].loss == 1.0 and progress[0].train_speed == 0.1
    keys = [e.idem_key for e in events if isinstance(e.event, JobProgress)]
    assert keys == [f"run:1:1:metrics:train:{step}" for step in (1, 2, 3)]

    found = rec.of(ArtifactsFound, 1)
    assert found, f"the output directory was scanned: {[e.event.type for _, e in rec.events]}"
    checkpoint = str(Path(started.output_dir) / "checkpoint-3")
    records = {a.path: a for a in found[-1].artifacts}
    assert checkpoint in records and Path(checkpoint).is_absolute()
    assert (records[checkpoint].kind, records[checkpoint].step, records[checkpoint].complete) == (
        "adapter",
        3,
        True,
    )
    assert runner.running == set() and runner.sessions() == set()


async def test_a_run_that_cannot_start_ends_with_the_supervisors_error(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, SLEEPS)
    missing = str(Path(started.run_dir) / "no-such-python")
    await runner.launch(started.model_copy(update={"argv": [missing]}))
    end = await rec.end(1)
    assert end.returncode == 127 and end.error is not None and missing in end.error
    assert any(missing in line for line in end.log_tail), "the log says why"
    assert rec.of(RunStarted, 1) == [], "swift never ran"


async def test_a_missing_supervisor_interpreter_ends_the_run_with_an_error(runs: Runs) -> None:
    rec = Recorder()
    runner = Runner(rec.report, rec.on_end, grace_s=1.0, poll_s=0.05, supervisor_python="/nonexistent/python")
    runs.runners.append(runner)
    await runner.launch(runs.started(1, SLEEPS))
    end = await rec.end(1)
    assert end.returncode is None and end.error is not None and "/nonexistent/python" in end.error


# ---------------------------------------------------------------------------------------------
# Stopping runs


async def test_cancel_stops_a_running_run(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    await runner.launch(runs.started(1, SLEEPS))
    run = await rec.started(1)
    assert runner.sessions() == {run.session}
    assert runner.cancel(1) is True
    end = await rec.end(1)
    assert (end.returncode, end.stopped) == (-signal.SIGTERM, "cancel")
    assert runner.cancel(1) is False, "no longer ours"


async def test_cancel_before_the_supervisor_is_up_is_sent_once_it_is(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    await runner.launch(runs.started(1, SLEEPS))
    assert runner.cancel(1) is True  # the launch task has not even run yet
    end = await rec.end(1)
    assert end.stopped == "cancel"


async def test_cancel_of_an_unknown_job_is_refused(runs: Runs) -> None:
    assert runs.runner(Recorder()).cancel(7) is False


async def test_stop_with_stop_runs_shuts_the_runs_down(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    await runner.launch(runs.started(1, SLEEPS))
    await rec.started(1)
    await runner.stop(stop_runs=True, wait_s=10)
    end = await rec.end(1)
    assert (end.returncode, end.stopped) == (-signal.SIGTERM, "shutdown")
    assert runner.running == set()


async def test_the_job_timeout_is_enforced(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    await runner.launch(runs.started(1, SLEEPS, timeout_s=0.3))
    end = await rec.end(1)
    assert end.stopped == "timeout"


# ---------------------------------------------------------------------------------------------
# A daemon restart: the run outlives its runner, and the next runner takes it over


def adoptable(started: JobStarted, run: RunStarted | None, *, last_step: int | None = None) -> Adoptable:
    """What `Scheduling.start` builds from the log for a running job (`run`: its RunStarted, if any)."""
    return Adoptable(
        job_id=started.job_id,
        attempt=started.attempt,
        run_dir=Path(started.run_dir),
        output_dir=Path(started.output_dir),
        log=Path(started.log),
        log_offset=0 if run is None else run.log_offset,
        pid=None if run is None else run.pid,
        start_ticks=None if run is None else run.start_ticks,
        boot_id=None if run is None else run.boot_id,
        session=None if run is None else run.session,
        last_step=last_step,
    )


async def test_a_run_outlives_its_runner_and_the_next_one_reports_its_end(runs: Runs) -> None:
    first = Recorder()
    runner = runs.runner(first)
    started = runs.started(1, WAITS)
    await runner.launch(started)
    run = await first.started(1)
    await runner.stop(stop_runs=False)
    assert first.ends == {}, "the run goes on: nothing ended"

    second = Recorder()
    successor = runs.runner(second)
    await successor.adopt(adoptable(started, run), boot_id())
    assert successor.running == {1} and successor.sessions() == {run.session}
    (Path(started.output_dir) / "release").touch()
    end = await second.end(1)
    assert (end.returncode, end.stopped, end.error) == (0, None, None)
    assert "released" in end.log_tail


async def test_adopting_before_run_started_was_recorded_reads_supervisor_json(runs: Runs) -> None:
    """The daemon died between spawning the supervisor and recording RunStarted."""
    first = Recorder()
    runner = runs.runner(first)
    started = runs.started(1, WAITS)
    await runner.launch(started)
    run = await first.started(1)
    await runner.stop(stop_runs=False)

    second = Recorder()
    successor = runs.runner(second)
    await successor.adopt(adoptable(started, None), boot_id())
    again = await second.started(1)
    assert (again.pid, again.start_ticks, again.session) == (run.pid, run.start_ticks, run.session)
    successor.cancel(1)
    end = await second.end(1)
    assert end.stopped == "cancel"


async def test_adopting_a_run_that_ended_meanwhile_reads_exit_json(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, TRAINS)
    await runner.launch(started)
    run = await rec.started(1)
    await runner.stop(stop_runs=False)  # no daemon watches while swift finishes
    exit_json = Path(started.run_dir) / EXIT_FILE
    async with asyncio.timeout(WAIT_S):
        while not exit_json.exists():
            await asyncio.sleep(0.02)

    later = Recorder()
    await runs.runner(later).adopt(adoptable(started, run), boot_id())
    end = await later.end(1)
    assert end.returncode == 0 and end.stopped is None
    # The metrics swift wrote while no daemon ran are still reported.
    assert [p.step for p in later.of(JobProgress, 1)] == [1, 2, 3]


async def test_adopting_skips_metrics_an_earlier_daemon_recorded(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, TRAINS)
    await runner.launch(started)
    run = await rec.started(1)
    await runner.stop(stop_runs=False)
    exit_json = Path(started.run_dir) / EXIT_FILE
    async with asyncio.timeout(WAIT_S):
        while not exit_json.exists():
            await asyncio.sleep(0.02)

    later = Recorder()
    await runs.runner(later).adopt(adoptable(started, run, last_step=2), boot_id())
    await later.end(1)
    assert [p.step for p in later.of(JobProgress, 1)] == [3]


async def test_adopting_a_reused_pid_ends_the_run_as_unknown(runs: Runs) -> None:
    """A pid whose start time differs is another process: never watched, never signalled."""
    stranger = subprocess.Popen([sys.executable, "-c", SLEEPS])
    try:
        ticks = proc_start_ticks(stranger.pid)
        assert ticks is not None
        started = runs.started(1, SLEEPS)
        Path(started.run_dir).mkdir(parents=True)
        rec = Recorder()
        runner = runs.runner(rec)
        fake = RunStarted(
            job_id=1,
            attempt=1,
            pid=stranger.pid,
            start_ticks=ticks + 1,
            boot_id=boot_id(),
            child_pid=stranger.pid,
            session=os.getsid(stranger.pid),
            log_offset=0,
        )
        await runner.adopt(adoptable(started, fake), boot_id())
        end = await rec.end(1)
        assert end.returncode is None and end.stopped is None
        assert end.error is not None and f"pid {stranger.pid}" in end.error
        assert stranger.poll() is None, "the stranger was not signalled"
    finally:
        stranger.kill()
        stranger.wait()


async def test_adopting_after_a_reboot_ends_the_run_as_unknown(runs: Runs) -> None:
    started = runs.started(1, SLEEPS)
    Path(started.run_dir).mkdir(parents=True)
    rec = Recorder()
    fake = RunStarted(
        job_id=1,
        attempt=1,
        pid=os.getpid(),
        start_ticks=proc_start_ticks(os.getpid()) or 0,
        boot_id="another-boot",
        child_pid=os.getpid(),
        session=os.getsid(0),
        log_offset=0,
    )
    await runs.runner(rec).adopt(adoptable(started, fake), boot_id())
    end = await rec.end(1)
    assert end.returncode is None and end.error is not None and "rebooted" in end.error


# ---------------------------------------------------------------------------------------------
# read_tail: the log's last lines, as a person would read them


def test_read_tail_keeps_what_a_terminal_shows_of_carriage_return_redraws(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"start\r\nTrain:  10%|#\rTrain: 100%|##########\nTraceback\r\nValueError: bad\n")
    assert read_tail(log, 0) == ["start", "Train: 100%|##########", "Traceback", "ValueError: bad"]


def test_read_tail_starts_at_the_attempt(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"attempt 1 failed\n==> attempt 2\nok\n")
    start = len(b"attempt 1 failed\n")
    assert read_tail(log, start) == ["==> attempt 2", "ok"]


def test_read_tail_drops_the_line_cut_by_the_limit(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"a very long first line\nsecond\nthird\n")
    assert read_tail(log, 0, limit=len(b"line\nsecond\nthird\n")) == ["second", "third"]


def test_read_tail_keeps_the_last_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(TAIL_LINES + 50)))
    tail = read_tail(log, 0)
    assert len(tail) == TAIL_LINES and tail[-1] == f"line {TAIL_LINES + 49}"


def test_read_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "none", 0) == []


# ---------------------------------------------------------------------------------------------
# Secrets and modes

SEES = """\
import json, os, pathlib, sys
out = pathlib.Path(sys.argv[1])
seen = {"argv": sys.argv[2:], "env": {k: os.environ.get(k) for k in ("SWANLAB_API_KEY", "LLMTRAIND_SECRET_API_KEY")}}
(out / "seen.json").write_text(json.dumps(seen))
print("seen", flush=True)
"""
"""A swift that writes down the arguments and secret variables it was given."""


async def test_secrets_are_read_at_start_and_reach_swift_only(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_DEPLOY_KEY", "deploy-value-1234")
    key_file = tmp_path / "swanlab.key"
    key_file.write_text("swanlab-value-5678\n")
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, SEES, tail=("--api_key", "${LLMTRAIND_SECRET_API_KEY}"))
    started = started.model_copy(
        update={
            "secrets": {
                "LLMTRAIND_SECRET_API_KEY": "env:MY_DEPLOY_KEY",
                "SWANLAB_API_KEY": f"file:{key_file}",
            }
        }
    )
    await runner.launch(started)
    end = await rec.end(1)
    assert (end.returncode, end.error) == (0, None), end.log_tail
    seen = json.loads((Path(started.output_dir) / "seen.json").read_text())
    assert seen["argv"] == ["--api_key", "deploy-value-1234"]
    assert seen["env"] == {"SWANLAB_API_KEY": "swanlab-value-5678", "LLMTRAIND_SECRET_API_KEY": None}
    written = (Path(started.run_dir) / "run.json").read_text() + Path(started.log).read_text()
    written += json.dumps([e.event.model_dump(mode="json") for _, e in rec.events])
    assert "deploy-value" not in written and "swanlab-value" not in written


async def test_a_secret_that_cannot_be_read_ends_the_run_naming_the_reference(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, SEES).model_copy(
        update={"secrets": {"SWANLAB_API_KEY": "env:LLMTRAIND_TEST_NO_SUCH_VARIABLE"}}
    )
    await runner.launch(started)
    end = await rec.end(1)
    assert end.error == (
        "the secret env:LLMTRAIND_TEST_NO_SUCH_VARIABLE: the daemon's environment has no "
        "LLMTRAIND_TEST_NO_SUCH_VARIABLE"
    )
    assert rec.of(RunStarted, 1) == [], "swift never ran"


async def test_a_runs_folders_and_log_are_owner_only(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    started = runs.started(1, TRAINS)
    old = os.umask(0o022)
    try:
        await runner.launch(started)
        await rec.end(1)
    finally:
        os.umask(old)
    for folder in (runs.root / "runs", runs.root / "runs" / "1", Path(started.run_dir), runs.root / "logs"):
        assert folder.stat().st_mode & 0o077 == 0, folder
    assert Path(started.log).stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------------------------------------
# The supervisor started ahead of the next run


async def spare_of(runner: Runner) -> asyncio.subprocess.Process:
    """The supervisor the runner keeps started for its next run, once it is there."""
    async with asyncio.timeout(WAIT_S):
        while runner._spare is None:
            await asyncio.sleep(0.01)
    return runner._spare


async def test_the_next_run_gets_the_supervisor_started_ahead_of_it(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    await runner.launch(runs.started(1, TRAINS))
    assert (await rec.end(1)).returncode == 0
    spare = await spare_of(runner)
    await runner.launch(runs.started(2, SLEEPS))
    run = await rec.started(2)
    assert run.session == spare.pid, "the run's session is the one the spare started in"
    assert b"FAKE_SWIFT=1" in Path(f"/proc/{run.child_pid}/environ").read_bytes().split(b"\0")
    assert runner.cancel(2) is True
    assert (await rec.end(2)).stopped == "cancel"


async def test_stopping_the_daemon_dismisses_the_spare_supervisor(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    await runner.launch(runs.started(1, TRAINS))
    await rec.end(1)
    spare = await spare_of(runner)
    await runner.stop(stop_runs=False)
    assert spare.returncode == 0, "it was told there is no run for it, and left"


async def test_a_spare_supervisor_that_died_is_replaced_at_the_launch(runs: Runs) -> None:
    rec = Recorder()
    runner = runs.runner(rec)
    await runner.launch(runs.started(1, TRAINS))
    await rec.end(1)
    os.kill((await spare_of(runner)).pid, signal.SIGKILL)
    await runner.launch(runs.started(2, TRAINS))
    end = await rec.end(2)
    assert end.returncode == 0 and end.error is None


async def test_a_runner_that_adopts_a_run_starts_a_supervisor_for_the_run_after_it(runs: Runs) -> None:
    first = Recorder()
    runner = runs.runner(first)
    started = runs.started(1, WAITS)
    await runner.launch(started)
    run = await first.started(1)
    await runner.stop(stop_runs=False)

    second = Recorder()
    successor = runs.runner(second)
    await successor.adopt(adoptable(started, run), boot_id())
    spare = await spare_of(successor)
    (Path(started.output_dir) / "release").touch()
    await second.end(1)
    await successor.launch(runs.started(2, TRAINS))
    assert (await second.started(2)).session == spare.pid
    assert (await second.end(2)).returncode == 0
