"""Local executor: starts each attempt under its own supervisor, watches it, reports what it sees.

The run's process tree is `supervisor (own session) -> swift (own process group) -> workers`; see
`daemon.runs.supervise`. The runner never holds a pipe to a run: swift appends to the job's log file
and the runner reads files (`logging.jsonl` for metrics, the log's last lines for the failure's
evidence), so a run never blocks on a slow daemon and a restarted daemon reads the same files.
One supervisor is kept started ahead of the next launch (`supervise.PRESTARTED`), so that a
freed slot's next run waits for neither an interpreter's start nor its imports; a launch hands it
the run's folder and environment (secrets included) through its stdin, a pipe only it reads.
The supervisor's exit is awaited through a pidfd, which works the same for a run this daemon
started and for one an earlier daemon started, and cannot be fooled by a reused pid. A supervisor
that dies without writing exit.json leaves swift to the daemon when the daemon is a subreaper
(`daemon.runs.reaper`): the runner then stops, waits for and reaps swift itself and writes its real
exit status; any other swift left behind is killed, and its end recorded as unknown.

Everything seen is handed to `Report` callbacks as events; the runner knows nothing of the log but
that it may refuse a write for a while (StoreError: its lock is held elsewhere, the disk is full).
A run's truth is its process: a refused record is written again, with backoff, until it lands, and
the run keeps its watcher, and its slot, meanwhile.
This module launches, re-adopts, cancels and awaits the supervisors; what a poll reads from a run's
files is `daemon.runs.watch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.core.deployment import serves
from daemon.core.events import JobStarted, NewEvent, RunStarted
from daemon.core.jobs.secrets import ARG_VAR_PREFIX
from daemon.core.pausing import PAUSE_FILE
from daemon.core.streams import run_key
from daemon.log.errors import StoreError
from daemon.runs import supervise
from daemon.runs.outcome import RunEnd
from daemon.runs.reaper import Orphan, find_orphan, kill_group, reaped, remaining_s
from daemon.runs.secrets import SecretError, resolve_secrets
from daemon.runs.stacks import dump_stacks
from daemon.runs.supervise import (
    EXIT_FILE,
    RUN_FILE,
    SUPERVISOR_FILE,
    boot_id,
    proc_start_ticks,
    write_atomically,
)
from daemon.runs.watch import Watch, collect, observe, read_json

__all__ = ["Adoptable", "Report", "Runner", "adopted_watch", "record_until_taken"]

log = logging.getLogger(__name__)

Report = Callable[[int, list[NewEvent]], Awaitable[None]]
"""Record these events on job `id`'s stream; returns once they are durable."""

_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 10.0
"""Backoff between attempts to record what a run did while the log refuses writes."""

_DISMISS_S = 5.0
"""How long a spare supervisor told there is no run for it may take to exit."""

_UNSET_FOR_RUNS = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID")
"""systemd's hand-offs to the daemon, which a run must not answer or inherit."""


@dataclass(frozen=True)
class Adoptable:
    """A run the log says is running, as an earlier daemon recorded it."""

    job_id: int
    attempt: int
    run_dir: Path
    output_dir: Path
    log: Path
    log_offset: int
    pid: int | None
    """None: the daemon died before it recorded RunStarted; supervisor.json may still tell."""
    start_ticks: int | None
    boot_id: str | None
    session: int | None
    last_step: int | None
    """The last train step recorded, so that no metrics record is kept twice."""
    serves: bool = False
    """A deploy run: the daemon watches for its server to answer."""
    gpu_uuids: tuple[str, ...] = ()
    """The GPUs its JobStarted gave it: held while the run is watched."""


async def record_until_taken(
    trouble: dict[int, str],
    w: Watch,
    what: str,
    write: Callable[[], Awaitable[None]],
    *,
    first_s: float = _RETRY_FIRST_S,
    max_s: float = _RETRY_MAX_S,
) -> None:
    """`write` again, with backoff, until the log takes it: the run goes on either way, and its
    records carry idempotency keys, so an append that landed unseen lands only once. While it
    waits, `trouble` says why (/healthz shows it). The local runner and the Slurm executor both."""
    delay = first_s
    try:
        while True:
            try:
                await write()
            except StoreError as e:
                if w.job_id not in trouble:
                    log.warning(
                        "job %d attempt %d: cannot record %s, trying until it lands: %s",
                        w.job_id,
                        w.attempt,
                        what,
                        e,
                    )
                trouble[w.job_id] = f"cannot record {what} (attempt {w.attempt}): {e}"
                await asyncio.sleep(delay)
                delay = min(2 * delay, max_s)
                continue
            if trouble.pop(w.job_id, None) is not None:
                log.info("job %d attempt %d: %s recorded after all", w.job_id, w.attempt, what)
            return
    except asyncio.CancelledError:
        trouble.pop(w.job_id, None)
        raise


def adopted_watch(run: Adoptable) -> Watch:
    """Following `run` again (locally or on Slurm) from where the earlier daemon's records end."""
    w = Watch(run.job_id, run.attempt, run.run_dir, run.output_dir, run.log, run.log_offset)
    if run.last_step is not None:
        w.sampler.seen(run.last_step)
    return w


def _private_dirs(folder: Path) -> None:
    """Make `folder` and its missing parents owner-only (0700), whatever the umask: a run's folder
    holds its args.json, in which swift writes every argument, secrets included."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        path.chmod(0o700)


class Runner:
    """Starts, watches, cancels and re-adopts runs; one instance per daemon."""

    def __init__(
        self,
        report: Report,
        on_end: Callable[[int, int, RunEnd], Awaitable[None]],
        *,
        grace_s: float,
        poll_s: float,
        supervisor_python: str = sys.executable,
        reaper: bool = False,
    ) -> None:
        """`reaper`: this process is a child subreaper (`daemon.runs.reaper.become_subreaper`), so
        a swift whose supervisor dies becomes its child and need not die with the supervisor."""
        self._report = report
        self._on_end = on_end
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.python = supervisor_python
        self.reaper = reaper
        self._runs: dict[int, Watch] = {}
        self._trouble: dict[int, str] = {}
        self._spare: asyncio.subprocess.Process | None = None
        self._spare_task: asyncio.Task[None] | None = None
        self.hang_factor = 20.0
        self.hang_min_s = 1800.0
        """`[runs] hang_factor` and `hang_min_s`: see `_hung`."""

    @property
    def running(self) -> set[int]:
        return set(self._runs)

    @property
    def trouble(self) -> str:
        """Why records of runs wait to be written, or "": the daemon is not healthy meanwhile."""
        return "; ".join(f"job {job_id}: {why}" for job_id, why in sorted(self._trouble.items()))

    def holding(self) -> dict[int, tuple[int, tuple[str, ...]]]:
        """Job -> (attempt, GPU UUIDs) of every run whose process lives: each holds its slot or its
        GPUs whatever the log managed to say meanwhile. Once it has exited, the log says "running"
        until its end is recorded, so the slot passes on as soon as that end is in the log."""
        return {w.job_id: (w.attempt, w.gpu_uuids) for w in self._runs.values() if not w.exited}

    def sessions(self) -> set[int]:
        """Session ids of our runs: a GPU process in one of them is ours, any other is foreign."""
        return {w.session for w in self._runs.values() if w.session is not None}

    async def launch(self, started: JobStarted) -> None:
        """Start the attempt `started` decided; its end is reported through `on_end`."""
        w = Watch.of(started)
        w.serves = serves(started.argv)
        w.gpu_uuids = tuple(started.gpu_uuids)
        self._runs[w.job_id] = w
        w.task = asyncio.create_task(self._launch_and_watch(w, started), name=f"run-{w.job_id}")

    async def adopt(self, run: Adoptable, boot_id: str) -> None:
        """Watch a run an earlier daemon started: its end may already be in exit.json."""
        w = adopted_watch(run)
        w.session = run.session
        w.serves = run.serves
        w.gpu_uuids = run.gpu_uuids
        self._runs[w.job_id] = w
        w.task = asyncio.create_task(self._adopt_and_watch(w, run, boot_id), name=f"run-{w.job_id}")
        self._prestart()  # for the run that takes its slot when it ends

    def cancel(self, job_id: int, why: str = "cancel") -> bool:
        """Ask the run's supervisor to stop swift (SIGTERM, grace, SIGKILL); False if not ours."""
        w = self._runs.get(job_id)
        if w is None:
            return False
        if w.cancel is None:
            w.cancel = why
            self._signal(w)
        return True

    def pause(self, job_id: int) -> bool:
        """Ask the run to save a checkpoint at its next step and stop: its pause callback watches for
        the pause file in its folder (every rank of a distributed run does, and a daemon restarted
        meanwhile finds the request where it was left). False if the run is not ours."""
        w = self._runs.get(job_id)
        if w is None or w.exited:
            return False
        _private_dirs(w.run_dir)
        (w.run_dir / PAUSE_FILE).touch()
        return True

    async def stop(self, *, stop_runs: bool, wait_s: float = 0.0) -> None:
        """Daemon shutdown: stop watching; the runs go on unless `stop_runs`. Stopped runs that end
        within `wait_s` are reported; the supervisors of the others finish stopping them and the
        next daemon reads how they ended."""
        if stop_runs:
            for w in self._runs.values():
                w.cancel = "shutdown"
                self._signal(w)
            waits = [w.task for w in self._runs.values() if w.task is not None]
            if waits and wait_s > 0:
                await asyncio.wait(waits, timeout=wait_s)
        for w in list(self._runs.values()):
            if w.task is not None:
                w.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w.task
            self._close(w)
        if self._spare_task is not None:
            self._spare_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._spare_task
        spare, self._spare = self._spare, None
        if spare is not None:
            await self._dismiss(spare)

    # -- one run -----------------------------------------------------------------------------

    def _signal(self, w: Watch) -> None:
        if w.orphan is not None:
            self._stop_orphan(w.orphan, "shutdown" if w.cancel == "shutdown" else "cancel")
            return
        if w.pidfd is None:
            return  # not started yet: _launch_and_watch sends it once it is
        sig = signal.SIGUSR1 if w.cancel == "shutdown" else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(w.pidfd, sig)

    def _stop_orphan(self, orphan: Orphan, why: str) -> None:
        """What the supervisor would do: SIGTERM to swift's group, SIGKILL after the grace. The pid
        is safe to signal: an unreaped child's pid names no other process."""
        if orphan.stopped is None:
            orphan.stopped = why
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(orphan.pid, signal.SIGTERM)
            orphan.timers.append(asyncio.get_running_loop().call_later(self.grace_s, kill_group, orphan.pid))

    def _close(self, w: Watch) -> None:
        self._runs.pop(w.job_id, None)
        if w.orphan is not None:
            for timer in w.orphan.timers:
                timer.cancel()
        self._forget_pidfd(w)

    async def _launch_and_watch(self, w: Watch, started: JobStarted) -> None:
        try:
            error = await self._spawn(w, started)
            if error is None:
                await self._record_started(w, boot_id())
                await self._watch(w)
                error = await self._supervisor_gone(w, error)
            await self._finish(w, error)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a run must end with a record, whatever broke here
            log.exception("job %d attempt %d: the runner failed", w.job_id, w.attempt)
            await self._exited(w)
            if w.pidfd is not None:
                reaped(w.pidfd)
            await self._finish(w, f"the daemon's runner failed: {e}")

    async def _spawn(self, w: Watch, started: JobStarted) -> str | None:
        header = f"\n==> llmtraind: job {w.job_id} attempt {w.attempt}: {started.command}\n"
        w.log_offset = await asyncio.to_thread(self._prepare, w, started, header, self.grace_s, self.reaper)
        env = {k: v for k, v in os.environ.items() if k not in {*started.unset_env, *_UNSET_FOR_RUNS}}
        try:
            secrets = await asyncio.to_thread(resolve_secrets, started.secrets, os.environ)
        except SecretError as e:
            return str(e)
        message = json.dumps({"run_dir": str(w.run_dir), "env": env | started.env | secrets}).encode()
        try:
            await self._hand(message)
        except OSError as e:
            return f"cannot start the run's supervisor ({self.python}): {e}"
        self._prestart()
        info = read_json(w.run_dir / SUPERVISOR_FILE)
        if info is None:
            return (
                None
                if (w.run_dir / EXIT_FILE).exists()
                else "the run's supervisor failed to start; see the job's log and the daemon's"
            )
        w.pid = int(info["pid"])
        return self._open_pidfd(w)

    async def _hand(self, message: bytes) -> None:
        """Give the run (`supervise._receive`'s message) to the supervisor started ahead for it, or
        to a new one when there is none or it died before it took the run; return once its
        detaching parent has exited. OSError: no supervisor could be started."""
        spare, self._spare = self._spare, None
        if spare is not None and await _taken(spare, message):
            return
        await _taken(await self._start_supervisor(), message)

    async def _start_supervisor(self) -> asyncio.subprocess.Process:
        """A supervisor that waits on stdin for its run (`supervise.PRESTARTED`), in a session of its
        own and nowhere in particular until it has one. Its stderr is the daemon's until then: what
        kept it from starting is said there."""
        return await asyncio.create_subprocess_exec(
            self.python,
            "-I",
            "-S",
            supervise.__file__,
            supervise.PRESTARTED,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k not in _UNSET_FOR_RUNS},
            start_new_session=True,
            cwd="/",
        )

    def _prestart(self) -> None:
        """Start the next run's supervisor now, while no slot waits for it."""
        if self._spare is None and (self._spare_task is None or self._spare_task.done()):
            self._spare_task = asyncio.create_task(self._keep_spare(), name="spare-supervisor")

    async def _keep_spare(self) -> None:
        try:
            spare = await self._start_supervisor()
        except OSError as e:  # the next launch tries again, and says why in the run's end
            log.debug("cannot start a spare supervisor: %s", e)
            return
        if self._spare is None:
            self._spare = spare
        else:
            await self._dismiss(spare)

    @staticmethod
    async def _dismiss(spare: asyncio.subprocess.Process) -> None:
        """EOF instead of a run: the spare exits at once (killed if it does not)."""
        assert spare.stdin is not None
        spare.stdin.close()
        try:
            await asyncio.wait_for(spare.wait(), _DISMISS_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                spare.kill()
            await spare.wait()

    @staticmethod
    def _prepare(w: Watch, started: JobStarted, header: str, grace_s: float, reaper: bool) -> int:
        """Make the run's folders and its run.json; the log's size before the attempt's header."""
        for folder in (w.run_dir, w.output_dir, w.log.parent):
            _private_dirs(folder)
        expand = sorted(var for var in started.secrets if var.startswith(ARG_VAR_PREFIX))
        spec = {"argv": started.argv, "log": str(w.log), "timeout_s": started.timeout_s, "expand": expand}
        (w.run_dir / RUN_FILE).write_text(json.dumps(spec | {"grace_s": grace_s, "reaper": reaper}))
        fd = os.open(w.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "ab") as f:
            offset = f.tell()
            f.write(header.encode())
        return offset

    def _open_pidfd(self, w: Watch) -> str | None:
        assert w.pid is not None
        try:
            w.pidfd = os.pidfd_open(w.pid)
        except ProcessLookupError:
            return None  # already gone: exit.json says how it ended
        if w.cancel is not None:
            self._signal(w)
        return None

    async def _record_started(self, w: Watch, boot_id: str) -> None:
        info = await asyncio.to_thread(read_json, w.run_dir / SUPERVISOR_FILE)
        if info is None:
            return
        event = RunStarted(
            job_id=w.job_id,
            attempt=w.attempt,
            pid=int(info["pid"]),
            start_ticks=int(info["start_ticks"]),
            boot_id=str(info.get("boot_id", boot_id)),
            child_pid=int(info["child_pid"]),
            session=int(info["sid"]),
            log_offset=w.log_offset,
        )
        w.session = event.session
        new = [NewEvent(event, run_key(w.job_id, w.attempt, "started"))]
        await self._record(w, "its start", lambda: self._report(w.job_id, new))

    async def _adopt_and_watch(self, w: Watch, run: Adoptable, boot_id: str) -> None:
        try:
            error = await asyncio.to_thread(self._find, w, run, boot_id)
            if error is None and run.pid is None:
                await self._record_started(w, boot_id)
            if error is None:
                await self._watch(w)
            error = await self._supervisor_gone(w, error)
            await self._finish(w, error)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("job %d attempt %d: re-adopting the run failed", w.job_id, w.attempt)
            await self._exited(w)
            await self._finish(w, f"the daemon could not re-adopt the run: {e}")

    def _find(self, w: Watch, run: Adoptable, boot_id: str) -> str | None:
        """Open the recorded supervisor again, unless its pid now names another process."""
        info = read_json(w.run_dir / SUPERVISOR_FILE)
        pid = run.pid if run.pid is not None else (int(info["pid"]) if info else None)
        ticks = run.start_ticks if run.start_ticks is not None else (info or {}).get("start_ticks")
        boot = run.boot_id if run.boot_id is not None else (info or {}).get("boot_id")
        w.pid = pid
        if (w.run_dir / EXIT_FILE).exists():
            return None
        if pid is None:
            return "the daemon stopped before the run's supervisor started"
        if boot != boot_id:
            w.interrupted = True
            return "the machine rebooted while the run was running"
        if proc_start_ticks(pid) != ticks:
            return f"the run's supervisor (pid {pid}) is gone without recording an exit"
        try:
            w.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None if (w.run_dir / EXIT_FILE).exists() else f"the run's supervisor (pid {pid}) is gone"
        if proc_start_ticks(pid) != ticks:  # exited and reused between the check and the open
            return None if (w.run_dir / EXIT_FILE).exists() else f"the run's supervisor (pid {pid}) is gone"
        return None

    async def _watch(self, w: Watch) -> None:
        """Poll the run's files until the supervisor exits; once, if it is already gone."""
        if w.pidfd is None:
            await self._poll(w, final=True)
            return
        loop = asyncio.get_running_loop()
        exited = _exit_of(loop, w.pidfd)
        try:
            done = False
            while not done:
                await asyncio.wait([exited], timeout=self.poll_s)
                # Decided once per round: an exit seen during a poll still gets its own final poll.
                done = exited.done()
                await self._poll(w, final=done)
                if not done and (why := self._hung(w, time.monotonic())) is not None:
                    await self._stop_hung(w, why)
        finally:
            loop.remove_reader(w.pidfd)

    def _hung(self, w: Watch, now: float) -> str | None:
        """Why the run counts as hung: a training (not a server, not being stopped) whose step has
        not advanced for max(hang_factor x its median step time, hang_min_s) since its first step,
        short of its last step (the final save may take long); None otherwise."""
        if w.serves or w.cancel is not None or w.last_step is None or w.last_step >= w.max_steps > 0:
            return None
        median = statistics.median(w.step_s) if w.step_s else 0.0
        limit = max(self.hang_factor * median, self.hang_min_s)
        idle = now - w.step_at
        if idle <= limit:
            return None
        return (
            f"hung: no step for {idle:.0f} s after step {w.last_step}/{w.max_steps} (the limit is "
            f"{limit:.0f} s: max(hang_factor {self.hang_factor:g} x median step {median:.2f} s, "
            f"hang_min_s {self.hang_min_s:g}))"
        )

    async def _stop_hung(self, w: Watch, why: str) -> None:
        """Dump the stacks of the run's processes into its folder, then stop it as a cancel would."""
        if w.session is not None:
            try:
                dumped = await asyncio.to_thread(dump_stacks, w.session, w.run_dir, why)
                why += f"; stacks in {dumped}"
            except OSError as e:
                why += f"; its stacks could not be written: {e}"
        log.warning("job %d attempt %d %s; stopping it", w.job_id, w.attempt, why)
        w.hang = why
        self.cancel(w.job_id, "hang")

    async def _supervisor_gone(self, w: Watch, error: str | None) -> str | None:
        """The supervisor has exited, or was found gone: reap it if it is our child, and if it left
        no exit.json while its swift goes on, see swift to its end. Returns the run's error."""
        if w.pidfd is not None:
            reaped(w.pidfd)
            self._forget_pidfd(w)
        if w.interrupted:
            return error
        orphan = await asyncio.to_thread(self._orphan, w)
        if orphan is None:
            return error
        w.orphan, w.pidfd = orphan, orphan.pidfd
        gone = f"the run's supervisor (pid {w.pid}) is gone without recording an exit"
        if not orphan.ours:
            log.warning(
                "job %d attempt %d: %s; killing its swift (pid %d)", w.job_id, w.attempt, gone, orphan.pid
            )
            kill_group(orphan.pid)
            await self._exited(w)
            return error or gone
        log.warning(
            "job %d attempt %d: %s; the daemon waits for swift (pid %d)",
            w.job_id,
            w.attempt,
            gone,
            orphan.pid,
        )
        if w.cancel is not None:
            self._signal(w)
        left = remaining_s(orphan)
        if left is not None:
            orphan.timers.append(
                asyncio.get_running_loop().call_later(left, self._stop_orphan, orphan, "timeout")
            )
        await self._watch(w)
        kill_group(orphan.pid)  # before the reap, while its pid still names it
        returncode = reaped(orphan.pidfd)
        w.exit_info = {
            "returncode": returncode,
            "stopped": orphan.stopped,
            "started": orphan.started,
            "ended": time.time(),
            "error": None if returncode is not None else f"{gone}, and swift's exit status was lost",
        }
        try:
            await asyncio.to_thread(write_atomically, w.run_dir / EXIT_FILE, w.exit_info)
        except OSError as e:
            log.warning("job %d attempt %d: cannot write %s: %s", w.job_id, w.attempt, EXIT_FILE, e)
        return None

    @staticmethod
    def _orphan(w: Watch) -> Orphan | None:
        """The run's swift, if its supervisor left no exit.json and swift still exists."""
        if (w.run_dir / EXIT_FILE).exists():
            return None
        spec = read_json(w.run_dir / RUN_FILE) or {}
        timeout_s = spec.get("timeout_s")
        return find_orphan(
            read_json(w.run_dir / SUPERVISOR_FILE),
            float(timeout_s) if isinstance(timeout_s, (int, float)) else None,
        )

    def _forget_pidfd(self, w: Watch) -> None:
        if w.pidfd is not None:
            with contextlib.suppress(OSError):
                asyncio.get_running_loop().remove_reader(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = None

    async def _exited(self, w: Watch) -> None:
        """Until the supervisor has exited: a run is never declared ended while it goes on."""
        if w.pidfd is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await _exit_of(loop, w.pidfd)
        finally:
            loop.remove_reader(w.pidfd)

    async def _poll(self, w: Watch, *, final: bool) -> None:
        events = await asyncio.to_thread(self._observe, w, final)
        if events:
            await self._record(w, "its progress", lambda: self._report(w.job_id, events))

    async def _record(self, w: Watch, what: str, write: Callable[[], Awaitable[None]]) -> None:
        await record_until_taken(self._trouble, w, what, write)

    def _observe(self, w: Watch, final: bool) -> list[NewEvent]:
        """New metrics records, and the artifacts when they changed. Runs in a thread."""
        return observe(w, final)

    async def _finish(self, w: Watch, error: str | None) -> None:
        w.exited = True
        end = await asyncio.to_thread(collect, w, error)
        try:
            await self._record(w, "its end", lambda: self._on_end(w.job_id, w.attempt, end))
        finally:
            self._close(w)


async def _taken(proc: asyncio.subprocess.Process, message: bytes) -> bool:
    """Send a supervisor its run and wait for its detaching parent to exit; False if it died before it
    took the run (`supervise.TAKEN`), which no other process can then have seen or acted on."""
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(ConnectionError):  # gone: its end of the pipe is closed
        proc.stdin.write(message)
        await proc.stdin.drain()
    proc.stdin.close()
    said = await proc.stdout.read()
    await proc.wait()
    return said == supervise.TAKEN


def _exit_of(loop: asyncio.AbstractEventLoop, pidfd: int) -> asyncio.Future[None]:
    """Done once the process behind `pidfd` has exited. The reader goes at the first wake: a pidfd
    stays readable, and a reader left in place would be called on every turn of the loop (a busy
    loop for as long as the watcher is busy elsewhere, in a slow poll)."""
    exited = loop.create_future()

    def resolve() -> None:
        loop.remove_reader(pidfd)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, resolve)
    return exited
