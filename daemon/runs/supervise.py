"""The supervisor of one run: `python -I -S .../daemon/runs/supervise.py -`, the run on stdin.

A training run takes hours; the daemon that started it may be restarted, upgraded or killed
meanwhile. So the run belongs to this small process, not to the daemon: it is started in a
session of its own, detaches (the daemon's direct child exits as soon as swift is running, so
the supervisor is nobody's child the daemon must reap), starts swift as leader of its own
process group with output appended to the job's log, waits for it, and writes how it ended to
`exit.json` atomically, trying again until it can (a full disk) rather than leaving no end. Any
daemon, this one or the next, finds the run again from `supervisor.json` and learns its end from
`exit.json`.

If the supervisor itself is killed (SIGKILL, the OOM killer) it writes nothing. When the daemon
that started it is a child subreaper (`run.json` says `"reaper": true`), swift outlives it: swift is
then the daemon's child, and the daemon waits for it and writes `exit.json` from swift's real exit
status (see `daemon.runs.reaper`). Otherwise swift dies with its supervisor (PR_SET_PDEATHSIG), so
that no unsupervised swift holds the GPUs. The supervisor is a subreaper itself: what swift leaves
orphaned (DataLoader workers) comes to it, is killed with swift's group and reaped here, and never
becomes a zombie of the daemon.

Signals to the supervisor: SIGTERM = the job was cancelled, SIGUSR1 = the daemon stops and was
told to stop its runs. Either sends SIGTERM to swift's group, waits `grace_s`, then SIGKILLs the
group. The job's timeout is enforced here too, so it holds while no daemon runs. When swift
exits, whatever is left of its group (DataLoader workers) is killed before the exit is written.

Standard library only and nothing from the daemon: it must start fast and outlive upgrades. The
runner starts it as a script in isolated mode without `site` (-I -S), which skips the virtual
environment's start-up and anything on PYTHONPATH. Even so, starting an interpreter and importing
what this module needs takes 40-50 ms, more on a busy machine: most of a slot's hand-over. So the
supervisor waits on stdin for its run (`PRESTARTED`), and the runner starts the next run's ahead;
given its run, it takes the run's folder, environment and log as its own and goes on as above. A
spare that gets EOF instead (its daemon stopped or died) exits having done nothing.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "BOOT_ID_ENV",
    "EXIT_FILE",
    "PRESTARTED",
    "RUN_FILE",
    "SUPERVISOR_FILE",
    "TAKEN",
    "boot_id",
    "main",
    "proc_start_ticks",
    "write_atomically",
]

RUN_FILE = "run.json"
"""Written by the daemon: {"argv": [...], "log": path, "timeout_s": float|null, "grace_s": float,
"expand": [VAR, ...], "reaper": bool}.

Each argv item `${VAR}` is replaced by the value of VAR in this process's environment, which the
daemon put there (a secret, which must not stand in run.json or the log), and VAR is removed from
swift's environment. A command line is anyone's to read (ps, /proc/PID/cmdline) while a process's
environment is its user's: so when argv runs a swift module (`swift.cli.<command>`), the arguments
after it reach swift in RAY_SWIFT_ARGS instead, as a JSON list, which ms-swift (4.6.0,
`swift.utils.parse_args`) reads in place of its command line, and a secret never stands on one. A
command that is not swift's gets its secrets on its argv.

`reaper`: the daemon takes swift over if the supervisor dies, so swift does not die with it."""
SUPERVISOR_FILE = "supervisor.json"
"""Written here once swift runs: {"pid", "start_ticks", "boot_id", "child_pid", "child_start_ticks",
"sid", "started"}."""
EXIT_FILE = "exit.json"
"""Written here when swift has exited: {"returncode", "stopped", "started", "ended", "error"}."""

BOOT_ID_ENV = "LLMTRAIND_TEST_BOOT_ID"
PRESTARTED = "-"
"""The one argument: the run comes on stdin (`_receive`), so that the runner can start the next
run's supervisor ahead of its run, and a slot's hand-over waits for no interpreter's start and
imports (most of it, measured: issue 16)."""
TAKEN = b"taken"
"""The supervisor's word on stdout that it has read its run, before it acts on it: one that dies
before saying it can be replaced by another without the run starting twice."""
_PR_SET_PDEATHSIG = 1
_ARGS_ENV = "RAY_SWIFT_ARGS"
_SWIFT_MODULE = "swift.cli."
_PR_SET_CHILD_SUBREAPER = 36
_REAP_S = 2.0
"""How long the supervisor waits for the rest of swift's killed group before it writes the exit."""
_STOPS: dict[int, str] = {signal.SIGTERM: "cancel", signal.SIGUSR1: "shutdown"}
_WAKE = {signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD}


def proc_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: with the boot id, it tells a process from a later one with
    the same pid. None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat.rpartition(b")")[2].split()[19])


def boot_id() -> str:
    """This boot's id; $LLMTRAIND_TEST_BOOT_ID stands in for a reboot in tests."""
    if os.environ.get(BOOT_ID_ENV):
        return os.environ[BOOT_ID_ENV]
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_until_written(path: Path, data: dict[str, Any], log: Path) -> None:
    """exit.json is how every daemon, this one or the next, learns the run's end: while it cannot be
    written (the disk is full), the supervisor stays, so the run keeps its slot and nobody records
    an end it did not see; once it can, the end is written as it happened. A run folder deleted
    under the run is made again: waiting would hold the slot for ever, as nobody will bring it back."""
    delay = 0.5
    said = remade = False
    while True:
        try:
            write_atomically(path, data)
            return
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not remade and _made_again(path.parent):
                remade = True
                _say(log, f"llmtraind: {path.parent} was gone; made it again to record the run's end\n")
                continue
            if not said:
                said = True
                _say(log, f"llmtraind: cannot write {path} ({e}); trying until it can be written\n")
        time.sleep(delay)
        delay = min(2 * delay, 30.0)


def _made_again(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def _say(log: Path, line: str) -> None:
    """A line in the job's log, if the disk takes it."""
    try:
        with open(log, "a") as f:
            f.write(line)
    except OSError:
        pass


def _die_with_parent(libc: ctypes.CDLL) -> None:
    """In swift, before exec: if the supervisor is SIGKILLed, swift is killed too, not orphaned."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _reap_orphans(deadline: float) -> None:
    """Reap what swift left behind and came to this subreaper, until none is left or `deadline`:
    a zombie left here would pass to the daemon when the supervisor exits."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Run:
    def __init__(self, run_dir: Path, spec: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.argv: list[str] = spec["argv"]
        self.expand: list[str] = spec.get("expand", [])
        self.log = Path(spec["log"])
        self.timeout_s: float | None = spec.get("timeout_s")
        self.grace_s: float = spec.get("grace_s", 30.0)
        self.reaper: bool = spec.get("reaper", False)
        self.stopped: str | None = None
        self.kill_at: float | None = None

    def start(self) -> subprocess.Popen[bytes]:
        libc = ctypes.CDLL(None, use_errno=True)
        values = {f"${{{var}}}": os.environ.pop(var, "") for var in self.expand}
        argv = [values.get(arg, arg) for arg in self.argv]
        env = None
        module = next((i for i, arg in enumerate(self.argv) if arg.startswith(_SWIFT_MODULE)), None)
        if values and module is not None:
            env = os.environ | {_ARGS_ENV: json.dumps(argv[module + 1 :])}
            argv = argv[: module + 1]
        log_fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                cwd=self.run_dir,
                env=env,
                process_group=0,
                preexec_fn=None if self.reaper else lambda: _die_with_parent(libc),  # one thread here
            )
        finally:
            os.close(log_fd)

    def stop(self, why: str, pgid: int) -> None:
        if self.stopped is None:
            self.stopped = why
            _killpg(pgid, signal.SIGTERM)
            self.kill_at = time.monotonic() + self.grace_s

    def wait(self, child: subprocess.Popen[bytes], pending: list[int]) -> int:
        """Until swift exits, acting on stop signals, the timeout and the grace period."""
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        for sig in pending:
            self.stop(_STOPS[sig], child.pid)
        while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.stop("timeout", child.pid)
                deadline = None
            if self.kill_at is not None and now >= self.kill_at:
                _killpg(child.pid, signal.SIGKILL)
                self.kill_at = None
            wake = [t - now for t in (deadline, self.kill_at) if t is not None]
            info = signal.sigtimedwait(_WAKE, max(0.0, min(wake, default=3600.0)))
            if info is not None and info.si_signo in _STOPS:
                self.stop(_STOPS[info.si_signo], child.pid)
        _killpg(child.pid, signal.SIGKILL)  # the group outlives its leader while a worker lives
        returncode = child.wait()
        _reap_orphans(time.monotonic() + _REAP_S)
        return returncode


def _detach() -> int:
    """Fork; the parent (the daemon's child) exits once the supervisor reports swift running, so
    the daemon reads supervisor.json as soon as its child has exited. Returns the pipe to report on."""
    read_end, write_end = os.pipe()
    supervisor = os.fork()
    if supervisor > 0:
        os.close(write_end)
        ok = os.read(read_end, 1)
        if ok != b"1":  # the supervisor exits now: reaped here, not left to a subreaper daemon
            os.waitpid(supervisor, 0)
        os._exit(0 if ok == b"1" else 1)
    os.close(read_end)
    return write_end


def _receive() -> Path | None:
    """The run, from the daemon through stdin: {"run_dir", "env"} and then EOF. The run's
    environment replaces the one this process was started with, and its folder, /dev/null and its
    log become the working directory, stdin, stdout and stderr. None (EOF alone): the daemon
    stopped, or died, before it had a run for this supervisor."""
    data = sys.stdin.buffer.read()
    if not data:
        return None
    os.write(1, TAKEN)
    message = json.loads(data)
    os.environ.clear()
    os.environ.update(message["env"])
    run_dir = Path(message["run_dir"]).resolve()
    os.chdir(run_dir)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return run_dir


def _log_to(log: Path) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != [PRESTARTED]:
        print(f"usage: python -I -S supervise.py {PRESTARTED} (the run comes on stdin)", file=sys.stderr)
        return 2
    run_dir = _receive()
    if run_dir is None:
        return 0
    run = _Run(run_dir, json.loads((run_dir / RUN_FILE).read_text()))
    _log_to(run.log)
    report = _detach()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pending: list[int] = []
    for sig in _STOPS:
        signal.signal(sig, lambda signo, _frame: pending.append(signo))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    started = time.time()
    try:
        child = run.start()
    except OSError as e:
        error = f"llmtraind: cannot start {run.argv[0]}: {e}\n"
        with open(run.log, "a") as f:
            f.write(error)
        exit_info: dict[str, Any] = {"returncode": 127, "stopped": None, "started": started}
        write_atomically(run_dir / EXIT_FILE, exit_info | {"ended": time.time(), "error": error.strip()})
        os.write(report, b"0")
        return 1
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAKE)
    me = os.getpid()
    write_atomically(
        run_dir / SUPERVISOR_FILE,
        {
            "pid": me,
            "start_ticks": proc_start_ticks(me),
            "boot_id": boot_id(),
            "child_pid": child.pid,
            "child_start_ticks": proc_start_ticks(child.pid),
            "sid": os.getsid(0),
            "started": started,
        },
    )
    os.write(report, b"1")
    os.close(report)
    returncode = run.wait(child, pending)
    exit_info = {"returncode": returncode, "stopped": run.stopped, "started": started}
    _write_until_written(run_dir / EXIT_FILE, exit_info | {"ended": time.time(), "error": None}, run.log)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The daemon learns the run's end when this process has exited: the interpreter's tear-down
    # (about 8 ms, more on a busy machine) would only delay the next run's start.
    os._exit(code)
