"""The composition root: takes the state directory's lock, opens the log, wires the parts, serves,
and shuts down in order when told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

from aiohttp import web

from daemon import __version__
from daemon.core.config import Config, ConfigError, config_digest, load_config, merge_reload
from daemon.core.events import ConfigReloaded, DaemonStarted, DaemonStopped, GpuSeen, NewEvent
from daemon.core.state import STATE_SCHEMA, State
from daemon.core.streams import DAEMON_STREAM
from daemon.http.api import ReadSide, make_app
from daemon.http.guard import ConnectionGuard, GuardedSite, connection_cap
from daemon.http.sse import SseSettings
from daemon.intake.inbox import Inbox
from daemon.intake.validate import local_swift_args, remote_code
from daemon.log.errors import LogDamaged, LogMismatch, StoreError
from daemon.log.projector import Projector
from daemon.log.store import EventStore, private_dirs
from daemon.notify.notifier import Notifications
from daemon.runs.gpus import make_probe
from daemon.runs.loop import Scheduling
from daemon.runs.reaper import become_subreaper
from daemon.runs.recorder import RunRecorder
from daemon.runs.runner import Runner
from daemon.runs.slurm.executor import SlurmExecutor, shared_root_problem, summary
from daemon.runs.supervise import boot_id
from daemon.systemd import Notifier, watchdog_interval

__all__ = ["AlreadyRunning", "StartupFailed", "StateLock", "serve"]

log = logging.getLogger("llmtraind")

WEDGE_ENV = "LLMTRAIND_TEST_WEDGE_S"
"""Test hook: SIGUSR2 blocks the event loop for this many seconds (never read as config)."""


class AlreadyRunning(Exception):
    pass


class StateLock:
    """One daemon per state directory: an flock that the kernel drops when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        private_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another llmtraind (pid {holder}) is already serving {self.path.parent}; "
                "stop it first, or give this one another [paths] state"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _check_bind(cfg: Config) -> None:
    try:
        loopback = cfg.api.host == "localhost" or ipaddress.ip_address(cfg.api.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not cfg.api.token:
        raise ConfigError(
            f"[api] host = {cfg.api.host!r} is not a loopback address and [api] token is empty: "
            "set a token before exposing the API"
        )


async def _health_loop(store: EventStore, interval: float) -> None:
    """Notices a write lock held elsewhere and a log file or state folder deleted or replaced under
    the daemon (the store then refuses appends, so intake and scheduling stop taking work)."""
    while True:
        await asyncio.sleep(interval)
        was = store.healthy
        ok = await store.probe_writable()
        if ok != was:
            (log.info if ok else log.error)(
                "event log %s%s", "writable again" if ok else "not writable: ", store.last_error
            )


def _write_endpoint(cfg: Config, url: str) -> Path:
    """state/daemon.json tells clients where this daemon listens (useful with port 0). It is written
    once the inbox and the scheduler run, like READY=1, so a client that finds it can drop files."""
    path = cfg.paths.state / "daemon.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "version": __version__}))
    tmp.replace(path)
    return path


async def _start_api(cfg: Config, side: ReadSide) -> tuple[web.AppRunner, str]:
    """The API behind a cap on open connections and a deadline for each request's headers (aiohttp's
    keep-alive timeout covers the wait for every request after a connection's first)."""
    runner = web.AppRunner(
        make_app(side),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=2.0,
        keepalive_timeout=cfg.api.header_timeout_s,
    )
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(
        runner.server,
        connection_cap(cfg.api.max_connections),
        cfg.api.header_timeout_s,
        loop=asyncio.get_running_loop(),
    )
    site = GuardedSite(runner, guard, cfg.api.host, cfg.api.port)
    await site.start()
    return runner, f"http://{cfg.api.host}:{site.port}"


async def _watchdog_loop(notifier: Notifier, interval: float, healthy: Callable[[], bool]) -> None:
    """WATCHDOG=1 from the event loop itself, and only while the daemon's own checks pass: a wedged
    loop or a dead scheduler stops the pings, and systemd restarts the daemon."""
    while True:
        await asyncio.sleep(interval)
        try:
            ok = healthy()
        except Exception:
            log.exception("health check failed; withholding the watchdog ping")
            ok = False
        if ok:
            notifier.watchdog()


async def _reload(
    cfg: Config,
    inbox: Inbox,
    scheduling: Scheduling,
    store: EventStore,
    notifier: Notifier,
    notify: Notifications,
) -> Config:
    """SIGHUP: read the config file again, apply what can change live, refuse the rest (logged and
    recorded); a file that does not load changes nothing."""
    notifier.reloading()
    try:
        new = await asyncio.to_thread(load_config, cfg.source)
    except ConfigError as e:
        log.error("reload refused, still running on the old config: %s", e)
        notifier.ready("serving (reload refused: see the log)")
        return cfg
    merged, applied, refused = merge_reload(cfg, new)
    for key in refused:
        log.warning("reload: %s changed but takes a restart; the old value stays until then", key)
    inbox.reconfigure(merged)
    scheduling.reconfigure(merged)
    await notify.reconfigure(merged.notify)
    logging.getLogger().setLevel(getattr(logging, merged.daemon.log_level.upper()))
    event = ConfigReloaded(config_digest=config_digest(merged), applied=applied, refused=refused)
    await store.append(DAEMON_STREAM, [NewEvent(event)])
    log.info(
        "reloaded %s: applied %s", cfg.source or "the embedded defaults", ", ".join(applied) or "nothing"
    )
    notifier.ready("serving")
    return merged


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class StartupFailed(Exception):
    """A part of the daemon could not start; the parts started before it were stopped again."""


@contextlib.asynccontextmanager
async def _part(name: str) -> AsyncIterator[None]:
    """Name the part in a failure to start, so the one line an operator sees says what to fix."""
    try:
        yield
    except (OSError, StoreError) as e:
        if isinstance(e, LogDamaged):
            raise
        raise StartupFailed(f"{name} did not start: {e}") from e


async def _run(
    cfg: Config, stop: asyncio.Event, reload: asyncio.Event, notifier: Notifier, new_log: bool = False
) -> None:
    """Start the parts in order, each registered to stop when it has started, so a part that fails
    to start stops those already running, in reverse order, and so does a signal."""
    async with contextlib.AsyncExitStack() as parts:
        check = {"auto": None, "full": True, "quick": False}[cfg.store.startup_check]
        async with _part(f"the event log ({cfg.db_path})"):
            store = await EventStore.open(
                cfg.db_path,
                cfg.store.busy_timeout_ms,
                full_check=check,
                new_log=new_log,
                snapshot_schema=STATE_SCHEMA,
            )
        parts.push_async_callback(store.close)
        async with _part(f"the event log ({cfg.db_path})"):
            projector = await Projector.start(store, cfg.store.snapshot_bytes)
        probe = make_probe(cfg.gpus.devices)
        gpus = await probe.snapshot()
        before_start = store.last_seq
        started = DaemonStarted(
            version=__version__,
            config_digest=config_digest(cfg),
            host=socket.gethostname(),
            pid=os.getpid(),
            boot_id=boot_id(),
            gpus=[
                GpuSeen(index=g.index, uuid=g.uuid, name=g.name, memory_total_mib=g.memory_total_mib)
                for g in gpus
            ],
        )
        await store.append(DAEMON_STREAM, [NewEvent(started)])

        async def record_stop(_: type[BaseException] | None, e: BaseException | None, __: object) -> None:
            if e is None or isinstance(e, StartupFailed):
                reason = "signal" if e is None else f"start failed: {e}"
                await store.append(DAEMON_STREAM, [NewEvent(DaemonStopped(pid=os.getpid(), reason=reason))])
                await projector.flush()

        parts.push_async_exit(record_stop)
        boot_probe = (gpus, time.monotonic())

        def state() -> State:
            return projector.state

        inbox = Inbox(cfg, store, state, await asyncio.to_thread(local_swift_args))
        recorder = RunRecorder(store, state)
        runner: Runner | SlurmExecutor
        slurm: SlurmExecutor | None = None
        if cfg.executor.kind == "slurm":
            problem = await asyncio.to_thread(shared_root_problem, cfg.slurm.shared_root or cfg.paths.state)
            if problem is not None:
                raise StartupFailed(problem)
            runner = slurm = SlurmExecutor(
                recorder.report,
                recorder.ended,
                cfg=cfg,
                state=state,
                log_id=store.log_id,
                poll_s=cfg.runs.poll_s,
                grace_s=cfg.runs.stop_grace_s,
            )
        else:
            runner = Runner(
                recorder.report,
                recorder.ended,
                grace_s=cfg.runs.stop_grace_s,
                poll_s=cfg.runs.poll_s,
                reaper=become_subreaper(),
            )
        scheduling = Scheduling(cfg, store, state, probe, runner, model_code=remote_code)
        notify = Notifications(store, state)
        side = ReadSide(
            state,
            store,
            cfg.db_path,
            time.monotonic(),
            cfg.api.token,
            gpus=lambda: scheduling.last_probe() or boot_probe,
            sse=SseSettings.from_config(cfg.api),
            intake_trouble=lambda: inbox.trouble,
            runs_trouble=lambda: runner.trouble,
            executor=lambda: {"kind": cfg.executor.kind, "slurm": summary(slurm)},
            disk=scheduling.disk,
            notify=notify.view,
        )
        async with _part(f"the API on {cfg.api.host}:{cfg.api.port}"):
            api, url = await _start_api(cfg, side)
        parts.push_async_callback(api.cleanup)
        notify.status_url = f"{url}/"
        async with _part("the notifier"):
            await notify.start(cfg.notify, new_from=before_start)
        parts.push_async_callback(notify.stop)
        watch = asyncio.create_task(notify.watch_health(side.health, cfg.daemon.health_interval_s))
        parts.callback(watch.cancel)
        health = asyncio.create_task(_health_loop(store, cfg.daemon.health_interval_s))
        parts.callback(health.cancel)
        projector.subscribe(scheduling.on_recorded)
        async with _part(f"the scheduler (runs under {cfg.paths.state})"):
            await scheduling.start()
        current = cfg

        async def stop_scheduling() -> None:
            await scheduling.stop(wait_s=max(0.0, current.daemon.stop_timeout_s - 3))

        parts.push_async_callback(stop_scheduling)
        async with _part(f"the inbox ({cfg.paths.inbox})"):
            await inbox.start()
        parts.push_async_callback(inbox.stop)
        parts.callback(_write_endpoint(cfg, url).unlink, missing_ok=True)
        log.info(
            "llmtraind %s serving on %s (state %s, last seq %d)",
            __version__,
            url,
            cfg.paths.state,
            projector.state.last_seq,
        )
        notifier.ready(f"serving on {url}")
        if store.history_unchecked:
            history = asyncio.create_task(store.check_history())
            parts.callback(history.cancel)
        interval = watchdog_interval()
        if interval is not None:

            def healthy() -> bool:
                return store.healthy and scheduling.healthy

            watchdog = asyncio.create_task(_watchdog_loop(notifier, interval, healthy))
            parts.callback(watchdog.cancel)
        while not stop.is_set():
            await _first(stop, reload)
            if reload.is_set() and not stop.is_set():
                reload.clear()
                current = await _reload(current, inbox, scheduling, store, notifier, notify)
        notifier.stopping()
        log.info("stopping")


async def serve(cfg: Config, *, new_log: bool = False) -> int:
    """Run until SIGTERM or SIGINT; the exit code says how it ended. `new_log` accepts an event log
    that is not the state folder's (a deliberate fresh start beside an earlier history)."""
    _check_bind(cfg)
    if cfg.store.snapshot_every is not None:
        log.warning("[store] snapshot_every is no longer used (snapshots follow snapshot_bytes): remove it")
    loop = asyncio.get_running_loop()
    stop, reload = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    wedge = os.environ.get(WEDGE_ENV)
    if wedge:  # a test hook: block the event loop, as a bug would, to see the watchdog go quiet
        loop.add_signal_handler(signal.SIGUSR2, time.sleep, float(wedge))
    notifier = Notifier()
    try:
        with StateLock(cfg.lock_path):
            main = asyncio.create_task(_run(cfg, stop, reload, notifier, new_log))
            await stop_within(main, stop, cfg.daemon.stop_timeout_s)
    except AlreadyRunning as e:
        log.error("%s", e)
        return 3
    except StartupFailed as e:
        log.error("llmtraind cannot run: %s", e)
        return 1
    except LogMismatch as e:
        log.error("refusing to start: %s", e)
        return 2
    except LogDamaged as e:
        log.error(
            "refusing to start: the event log is damaged: %s; nothing was repaired or truncated: "
            "restore it from a backup or move it aside",
            e,
        )
        return 2
    except (StoreError, OSError) as e:
        log.error("llmtraind cannot run: %s", e)
        return 1
    return 0


async def stop_within(main: asyncio.Task[None], stop: asyncio.Event, grace_s: float) -> None:
    """Let `main` finish its orderly shutdown, but never take longer than `grace_s` after the signal."""
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({main, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if main not in done:
        try:
            await asyncio.wait_for(asyncio.shield(main), grace_s)
        except TimeoutError:
            log.error("shutdown took longer than %.0f s; exiting anyway", grace_s)
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
    waiter.cancel()
    main.result()
