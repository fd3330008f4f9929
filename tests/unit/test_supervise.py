"""The per-run supervisor, run for real: `python -m daemon.runs.supervise -` around fake swifts.

Each test starts the supervisor the way the runner does (its own session, wait for the detaching
parent), then drives it with signals and reads what it leaves behind: supervisor.json, exit.json
and the job's log. The fake swifts are small Python scripts, so every test takes well under a
second or two and needs neither ms-swift nor a GPU.

Orphans are reparented to the container's pid 1, which may never reap them (it does not on the
machines these tests were written on), so "no process left" means "no process that is not a
zombie": a zombie runs nothing, holds no GPU and is only an entry in the process table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.runs import supervise
from daemon.runs.supervise import EXIT_FILE, RUN_FILE, SUPERVISOR_FILE, boot_id, proc_start_ticks

WAIT_S = 10.0
"""Upper bound for anything the supervisor does; the tests normally wait milliseconds."""

SLEEPER = """\
import pathlib, sys, time
pathlib.Path(sys.argv[1]).write_text("ready")
time.sleep(60)
"""
"""A swift that is busy: says it is running (so a signal cannot beat its start), then sleeps."""

STUBBORN = """\
import os, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the fork below
worker = os.fork()
if worker == 0:
    time.sleep(60)
    os._exit(0)
pathlib.Path(sys.argv[1]).write_text(str(worker))
time.sleep(60)
"""
"""A swift that ignores SIGTERM and has a DataLoader-like worker in its group that ignores it too."""


# ---------------------------------------------------------------------------------------------
# Helpers


def alive(pid: int) -> bool:
    """Whether `pid` is a process that still runs: absent and zombie both count as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[0] not in (b"Z", b"X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def group_gone(pgid: int) -> bool:
    """killpg(…, 0) is the plain check; /proc covers a group left only as unreaped zombies."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return not group_members(pgid)


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


class Run:
    """One supervised run in a temporary folder: the files the daemon writes and reads."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "run"
        self.dir.mkdir()
        self.log = root / "job.log"
        self.ready = root / "ready"
        self.parent: subprocess.Popen[bytes] | None = None

    def script(self, text: str) -> str:
        path = self.dir.parent / "fake_swift.py"
        path.write_text(text)
        return str(path)

    def start(
        self,
        argv: list[str],
        *,
        timeout_s: float | None = None,
        grace_s: float = 5.0,
        reaper: bool = False,
        expand: tuple[str, ...] = (),
    ) -> int:
        """Start the supervisor as the runner does; returns the exit status of its detaching parent."""
        spec = {
            "argv": argv,
            "log": str(self.log),
            "timeout_s": timeout_s,
            "grace_s": grace_s,
            "reaper": reaper,
            "expand": list(expand),
        }
        (self.dir / RUN_FILE).write_text(json.dumps(spec))
        with open(self.dir.parent / "supervisor.out", "ab") as out:
            self.parent = subprocess.Popen(
                [sys.executable, "-m", "daemon.runs.supervise", supervise.PRESTARTED],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out,
                start_new_session=True,
            )
        message = {"run_dir": str(self.dir), "env": dict(os.environ)}
        said, _ = self.parent.communicate(json.dumps(message).encode(), timeout=WAIT_S)
        assert said == supervise.TAKEN
        return self.parent.returncode

    def start_fake(self, text: str, **spec: Any) -> dict[str, Any]:
        """Start `text` as swift with the ready file as its argument; supervisor.json once it is up."""
        rc = self.start([sys.executable, self.script(text), str(self.ready)], **spec)
        assert rc == 0, "the detaching parent reports swift running"
        # Written, not only created: the fake writes it with write_text, which creates it first.
        eventually(lambda: self.ready.exists() and self.ready.stat().st_size > 0, "the fake swift to start")
        return self.supervisor()

    def supervisor(self) -> dict[str, Any]:
        return read_json(self.dir / SUPERVISOR_FILE)

    def exit_info(self) -> dict[str, Any]:
        path = self.dir / EXIT_FILE
        eventually(path.exists, "exit.json")
        return read_json(path)

    def cleanup(self) -> None:
        """Kill what a failed test left running: only our own supervisor and swift's group."""
        path = self.dir / SUPERVISOR_FILE
        if path.exists() and not (self.dir / EXIT_FILE).exists():
            info = read_json(path)
            if proc_start_ticks(info["pid"]) == info["start_ticks"]:
                os.kill(info["pid"], signal.SIGKILL)
            if not group_gone(info["child_pid"]):
                os.killpg(info["child_pid"], signal.SIGKILL)
        if self.parent is not None and self.parent.poll() is None:
            self.parent.kill()
            self.parent.wait()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path)
    yield r
    r.cleanup()


# ---------------------------------------------------------------------------------------------
# How swift ended


def test_exit_status_is_recorded_and_output_appended_to_the_log(run: Run) -> None:
    run.log.write_text("an earlier attempt\n")
    fake = run.script(
        "import sys\nprint('to stdout', flush=True)\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n"
    )
    assert run.start([sys.executable, fake]) == 0
    info = run.exit_info()
    assert info["returncode"] == 3 and info["stopped"] is None and info["error"] is None
    assert isinstance(info["started"], float) and info["ended"] >= info["started"]
    log = run.log.read_text()
    # Appended, not truncated: one log holds every attempt of a job.
    assert log.startswith("an earlier attempt\n")
    assert "to stdout" in log and "to stderr" in log


def test_supervisor_json_names_the_supervisor_and_swift(run: Run) -> None:
    """What the next daemon needs to find the run again and to tell its pid from a reused one."""
    info = run.start_fake(SLEEPER)
    assert set(info) == {"pid", "start_ticks", "boot_id", "child_pid", "child_start_ticks", "sid", "started"}
    pid, child = info["pid"], info["child_pid"]
    assert info["start_ticks"] == proc_start_ticks(pid) and info["start_ticks"] is not None
    assert info["child_start_ticks"] == proc_start_ticks(child) and info["child_start_ticks"] is not None
    assert isinstance(info["started"], float) and info["started"] <= time.time()
    assert info["boot_id"] == boot_id()
    # The detaching parent was the session leader; the supervisor stays in its session, so a
    # GPU process of this session is the run's. swift leads a process group of its own.
    assert run.parent is not None and info["sid"] == run.parent.pid
    assert os.getsid(pid) == info["sid"] and os.getsid(child) == info["sid"]
    assert os.getpgid(child) == child != pid
    assert alive(pid) and alive(child)
    os.kill(pid, signal.SIGTERM)
    assert run.exit_info()["stopped"] == "cancel"


def test_sigterm_cancels(run: Run) -> None:
    info = run.start_fake(SLEEPER)
    os.kill(info["pid"], signal.SIGTERM)
    end = run.exit_info()
    assert (end["returncode"], end["stopped"]) == (-signal.SIGTERM, "cancel")
    eventually(lambda: not alive(info["pid"]), "the supervisor to exit")


def test_a_run_folder_deleted_under_the_run_is_made_again_to_record_its_end(run: Run) -> None:
    """Waiting for a folder nobody will bring back would hold the run's slot for ever."""
    info = run.start_fake(SLEEPER)
    shutil.rmtree(run.dir)
    os.kill(info["pid"], signal.SIGTERM)
    end = run.exit_info()
    assert (end["returncode"], end["stopped"]) == (-signal.SIGTERM, "cancel")
    eventually(lambda: not alive(info["pid"]), "the supervisor to exit")
    assert f"{run.dir} was gone; made it again to record the run's end" in run.log.read_text()


def test_sigusr1_is_a_shutdown(run: Run) -> None:
    info = run.start_fake(SLEEPER)
    os.kill(info["pid"], signal.SIGUSR1)
    end = run.exit_info()
    assert (end["returncode"], end["stopped"]) == (-signal.SIGTERM, "shutdown")


def test_timeout_stops_swift(run: Run) -> None:
    """Enforced by the supervisor, so it holds while no daemon runs."""
    info = run.start_fake(SLEEPER, timeout_s=0.5)
    end = run.exit_info()
    assert (end["returncode"], end["stopped"]) == (-signal.SIGTERM, "timeout")
    assert end["ended"] - end["started"] >= 0.5
    assert group_gone(info["child_pid"])


def test_swift_ignoring_sigterm_is_killed_after_the_grace_with_its_whole_group(run: Run) -> None:
    info = run.start_fake(STUBBORN, grace_s=0.5)
    child, worker = info["child_pid"], int(run.ready.read_text())
    assert os.getpgid(worker) == child, "the worker is in swift's group"
    os.kill(info["pid"], signal.SIGTERM)
    time.sleep(0.2)
    assert alive(child) and alive(worker), "SIGTERM is ignored; the SIGKILL waits for the grace"
    end = run.exit_info()
    assert (end["returncode"], end["stopped"]) == (-signal.SIGKILL, "cancel")
    assert end["ended"] - end["started"] >= 0.5
    eventually(lambda: group_gone(child), "swift's process group to be gone")
    assert not alive(worker)


def test_a_worker_left_behind_by_swift_is_killed_before_the_exit_is_written(run: Run) -> None:
    """swift exits, a DataLoader worker of its group lingers: the group is SIGKILLed at once."""
    fake = run.script(
        "import os, pathlib, sys, time\n"
        "worker = os.fork()\n"
        "if worker == 0:\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "pathlib.Path(sys.argv[1]).write_text(str(worker))\n"
    )
    assert run.start([sys.executable, fake, str(run.ready)], grace_s=30) == 0
    end = run.exit_info()
    assert end["returncode"] == 0 and end["stopped"] is None
    worker = int(run.ready.read_text())
    eventually(lambda: not alive(worker), "the lingering worker to be killed")
    assert group_gone(run.supervisor()["child_pid"])


def test_a_missing_program_is_recorded_as_127_with_the_error_in_the_log(run: Run) -> None:
    missing = str(run.dir / "no-such-swift")
    # Exit status 1 from the detaching parent: swift did not start.
    assert run.start([missing, "--x"]) == 1
    end = run.exit_info()
    assert end["returncode"] == 127 and end["stopped"] is None
    assert isinstance(end["error"], str) and "cannot start" in end["error"] and missing in end["error"]
    assert end["error"] in run.log.read_text()
    assert not (run.dir / SUPERVISOR_FILE).exists()


def test_swift_dies_with_a_killed_supervisor(run: Run) -> None:
    """PDEATHSIG: a supervisor killed with SIGKILL leaves no orphaned swift holding the GPUs."""
    info = run.start_fake(SLEEPER)
    os.kill(info["pid"], signal.SIGKILL)
    eventually(lambda: not alive(info["child_pid"]), "swift to die with its supervisor")
    assert group_gone(info["child_pid"])
    assert not (run.dir / EXIT_FILE).exists(), "nobody was left to record an exit"


def test_with_a_subreaper_daemon_swift_outlives_a_killed_supervisor(run: Run) -> None:
    """run.json's reaper: the daemon takes swift over and learns its exit status, so no PDEATHSIG."""
    info = run.start_fake(SLEEPER, reaper=True)
    os.kill(info["pid"], signal.SIGKILL)
    eventually(lambda: not alive(info["pid"]), "the supervisor to die")
    time.sleep(0.2)
    assert alive(info["child_pid"]), "swift goes on without its supervisor"
    assert not (run.dir / EXIT_FILE).exists()


def test_what_swift_leaves_orphaned_is_reaped_by_the_supervisor(run: Run) -> None:
    """The supervisor is a subreaper: a worker whose parent exited comes to it, is killed with the
    group and reaped, not left as a zombie for the daemon (or pid 1) when the supervisor exits."""
    fake = run.script(
        "import os, pathlib, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "pathlib.Path(sys.argv[1]).write_text(str(pid))\n"
        "sys.exit(0)\n"
    )
    assert run.start([sys.executable, fake, str(run.ready)]) == 0
    end = run.exit_info()
    worker = int(run.ready.read_text())
    assert end["returncode"] == 0
    eventually(lambda: not alive(run.supervisor()["pid"]), "the supervisor to exit")
    assert not Path(f"/proc/{worker}").exists(), "the worker was killed and reaped, not left a zombie"


SEES = """\
import json, os, pathlib, sys
seen = {"argv": sys.argv[1:], "args": os.environ.get("RAY_SWIFT_ARGS"), "left": os.environ.get("SECRET_VAR")}
pathlib.Path(sys.argv[1]).write_text(json.dumps(seen))
"""
"""A swift that writes down its command line and what reaches it through its environment."""


@pytest.mark.parametrize("swift", [True, False])
def test_a_secret_reaches_swift_in_its_environment_never_on_its_command_line(
    run: Run, monkeypatch: pytest.MonkeyPatch, swift: bool
) -> None:
    """ms-swift reads its arguments from RAY_SWIFT_ARGS in place of argv: a swift module gets
    them there once a secret is among them; a command that is not swift's gets them on argv."""
    monkeypatch.setenv("SECRET_VAR", "the-secret-value")
    module = ["swift.cli.deploy"] if swift else []
    argv = [
        sys.executable,
        run.script(SEES),
        str(run.ready),
        *module,
        "--api_key",
        "${SECRET_VAR}",
        "--port",
        "1",
    ]
    assert run.start(argv, expand=("SECRET_VAR",)) == 0
    assert run.exit_info()["returncode"] == 0
    seen = read_json(run.ready)
    assert seen["left"] is None, "the variable that carried the secret is not swift's"
    if swift:
        assert seen["argv"] == [str(run.ready), "swift.cli.deploy"]
        assert json.loads(seen["args"]) == ["--api_key", "the-secret-value", "--port", "1"]
    else:
        assert seen["argv"] == [str(run.ready), "--api_key", "the-secret-value", "--port", "1"]
        assert seen["args"] is None
    assert "the-secret-value" not in (run.dir / RUN_FILE).read_text() + run.log.read_text()


def test_usage_error_without_the_one_argument() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daemon.runs.supervise"], capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 2 and "usage" in done.stderr


# ---------------------------------------------------------------------------------------------
# Started ahead of its run

PRESTARTED_SEES = """\
import json, os, pathlib, sys
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
seen = {"env": dict(os.environ), "cwd": os.getcwd(), "stdin": sys.stdin.read()}
pathlib.Path(sys.argv[1]).write_text(json.dumps(seen))
"""
"""A swift that says where it runs: its environment, working directory and what stdin gives it."""


def start_prestarted(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A supervisor as the runner starts it ahead of its run: waiting on stdin, nowhere in particular."""
    with open(tmp_path / "supervisor.out", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", supervise.__file__, supervise.PRESTARTED],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=out,
            start_new_session=True,
            cwd="/",
            env=os.environ | {"LEFT_FROM_THE_START": "1"},
        )


def test_a_prestarted_supervisor_runs_the_run_it_is_handed_as_if_started_for_it(
    run: Run, tmp_path: Path
) -> None:
    run.log.write_text("an earlier attempt\n")
    spec = {"argv": [sys.executable, run.script(PRESTARTED_SEES), str(run.ready)], "log": str(run.log)}
    (run.dir / RUN_FILE).write_text(json.dumps(spec))
    run.parent = start_prestarted(tmp_path)
    time.sleep(0.2)  # ahead of its run, as the runner starts it
    env = {"PATH": os.environ["PATH"], "FROM_THE_RUN": "yes"}
    said, _ = run.parent.communicate(
        json.dumps({"run_dir": str(run.dir), "env": env}).encode(), timeout=WAIT_S
    )
    assert said == supervise.TAKEN
    assert run.parent.returncode == 0, "the detaching parent reports swift running"
    info = run.exit_info()
    assert info["returncode"] == 0 and info["error"] is None
    seen = read_json(run.ready)
    assert seen["env"]["FROM_THE_RUN"] == "yes"
    assert "LEFT_FROM_THE_START" not in seen["env"], "the run's environment, not the one it started with"
    assert seen["cwd"] == str(run.dir.resolve())
    assert seen["stdin"] == "", "swift reads /dev/null, not the daemon's pipe"
    log = run.log.read_text()
    assert log.startswith("an earlier attempt\n") and "to stdout" in log and "to stderr" in log
    assert run.supervisor()["sid"] == run.parent.pid


def test_a_prestarted_supervisor_given_no_run_exits_having_done_nothing(tmp_path: Path) -> None:
    parent = start_prestarted(tmp_path)
    said, _ = parent.communicate(b"", timeout=WAIT_S)
    assert parent.returncode == 0 and said == b""
    assert (tmp_path / "supervisor.out").read_bytes() == b""
