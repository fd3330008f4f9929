"""`llmtraind demo`: the whole path a newcomer should see once, on any machine, in about a minute.

It builds the tiny model (`tinymodel`), writes three small datasets and four jobs that use them,
finds a daemon (or starts one on the same config), drops the files into the inbox the way
`llmtraind submit` does, and follows the jobs through the HTTP API until each has ended. Every
file it writes stays under `<state>/demo/`, so a person can read, `llmtraind check` and re-submit
it afterwards.

The file contents, the job texts, the progress lines and the "is everything over" decision are
pure functions; only `run_demo` and its helpers touch the disk, the network and processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.cli import tinymodel, tinyvlm
from daemon.cli.client import Api, ApiError, SseEvent
from daemon.cli.demo_files import (
    BUNDLE,
    DemoJob,
    demo_bundle,
    demo_datasets,
    demo_jobs,
    demo_vlm_jobs,
    next_run,
)
from daemon.cli.demo_follow import (
    Outcome,
    curl_hints,
    describe,
    job_line,
    line_key,
    outcomes,
    rejections,
    touched_jobs,
)
from daemon.core.config import Config
from daemon.core.layout import InboxLayout
from daemon.core.state import TERMINAL
from daemon.intake.submit import SubmitError, deliver

__all__ = ["DemoError", "daemon_urls", "run_demo"]

START_TIMEOUT_S = 60.0
UNREACHABLE_TRIES = 10
"""Reconnections in a row that may fail (about 11 s with the client's back-off) before the daemon
counts as gone."""
QUIET_WARN_S = 20.0
"""After this long with a job neither seen nor rejected, say which inbox the files went to."""


class DemoError(Exception):
    """The demo cannot go on; the message says what to do."""


def daemon_urls(url: str | None, cfg: Config) -> list[str]:
    """Where to look for a daemon: --url alone, else the one the daemon wrote, else the config's."""
    if url:
        if not url.startswith(("http://", "https://")):
            raise DemoError(f"--url {url!r} is not an http:// or https:// address")
        return [url.rstrip("/")]
    found = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        found.append(str(json.loads((cfg.paths.state / "daemon.json").read_text())["url"]).rstrip("/"))
    if cfg.api.port:
        found.append(f"http://{cfg.api.host}:{cfg.api.port}")
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------------------------------------
# Effects: the model, the daemon, the inbox, the API


def _say(text: str = "") -> None:
    print(text, flush=True)


def _answers(url: str) -> bool:
    """Whether an llmtraind answers /healthz at `url` (an unhealthy one still counts: it is there)."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:  # noqa: S310 (http(s) only)
            body = resp.read()
    except urllib.error.HTTPError as e:
        body = e.read()
    except (OSError, ValueError):
        return False
    with contextlib.suppress(ValueError):
        return isinstance(parsed := json.loads(body), dict) and "ok" in parsed
    return False


@dataclass
class _Daemon:
    """A daemon this demo started: it is stopped again when the demo ends."""

    proc: subprocess.Popen[bytes]
    log: Path
    log_from: int
    """Where this start's output begins in the log (the file is appended to on every run)."""
    grace_s: float

    def tail(self, lines: int = 30) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(self.log_from)
                text = f.read().decode(errors="replace")
        except OSError as e:
            return f"(cannot read {self.log}: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise DemoError(f"the daemon exited with status {code}; the end of {self.log}:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: do not wait for the orderly stop
            self.proc.kill()
            self.proc.wait()
            raise


def _start_daemon(cfg: Config, config_path: Path | None, log: Path) -> tuple[_Daemon, str]:
    """`llmtraind serve` on the same config, with the same interpreter; returns it and its URL.

    It gets a session of its own so that a Ctrl-C at the terminal reaches only the demo, which
    then stops the daemon itself, after the jobs' last lines are printed.
    """
    argv = [sys.executable, "-m", "daemon", "serve"]
    if config_path is not None:
        argv += ["--config", str(config_path.resolve())]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        start = out.tell()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    daemon = _Daemon(proc, log, start, cfg.daemon.stop_timeout_s + 5)
    try:
        return daemon, _wait_until_up(daemon, cfg.paths.state / "daemon.json")
    except BaseException:
        daemon.stop()
        raise


def _wait_until_up(daemon: _Daemon, endpoint: Path) -> str:
    """The URL the daemon wrote, once it answers there; a stale daemon.json (another pid) is skipped."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        daemon.check_alive()
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            written = json.loads(endpoint.read_text())
            url = str(written["url"]).rstrip("/")
            if written["pid"] == daemon.proc.pid and _answers(url):
                return url
        time.sleep(0.1)
    raise DemoError(
        f"the daemon did not answer within {START_TIMEOUT_S:.0f} s; the end of {daemon.log}:\n{daemon.tail()}"
    )


def _ensure_model(dest: Path, python: str) -> None:
    """Build the tiny model once. With `[swift] python` set, that interpreter builds it: it has the
    transformers that will load it, and this one may have none."""
    if dest.is_dir():  # build_tiny_model renames a complete model into place, so it is whole
        _say(f"model     {dest} (built before)")
        return
    _say(f"model     building the tiny Qwen2 model into {dest} (a few seconds)")
    if python:
        done = subprocess.run(
            [python, tinymodel.__file__, str(dest)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DemoError(f"{python} could not build the tiny model:\n{done.stderr[-3000:]}")
        return
    try:
        tinymodel.build_tiny_model(dest)
    except ImportError as e:
        raise DemoError(
            f"building the tiny model needs torch and transformers ({e}); install the train extra "
            "(`make setup`, or pip install -e '.[train]'), or set [swift] python to an interpreter that has them"
        ) from None


def _ensure_vlm(dest: Path, python: str) -> Path | None:
    """Build the tiny VLM once, where swift's interpreter can train one (it needs qwen-vl-utils and
    torchvision); None, having said why, where it cannot: the text demo runs as before."""
    if dest.is_dir():
        _say(f"vlm       {dest} (built before)")
        return dest
    python = python or sys.executable
    probe = subprocess.run(
        [python, "-c", "import qwen_vl_utils, torchvision"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        _say(
            f"vlm       skipped: {python} cannot import qwen_vl_utils and torchvision ({last}); see the README's multimodal section"
        )
        return None
    _say(f"vlm       building the tiny Qwen2-VL into {dest} (about 20 s)")
    done = subprocess.run([python, tinyvlm.__file__, str(dest)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DemoError(f"{python} could not build the tiny VLM:\n{done.stderr[-3000:]}")
    return dest


def _write(folder: Path, files: Mapping[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def _drop(inbox: InboxLayout, path: Path) -> None:
    """Submit like `llmtraind submit`; a same-named file still waiting in the inbox (left by an
    interrupted run while no daemon ran) is waited out, since the daemon takes it within seconds."""
    deadline = time.monotonic() + 10
    while True:
        try:
            deliver(inbox, path.name, path)
            return
        except (OSError, SubmitError) as e:
            if not (inbox.root / path.name).exists() or time.monotonic() > deadline:
                raise DemoError(f"cannot drop {path.name} into {inbox.root}: {e}") from None
        time.sleep(0.2)


def _find_daemon(url: str | None, cfg: Config) -> str | None:
    candidates = daemon_urls(url, cfg)
    found = next((u for u in candidates if _answers(u)), None)
    if found is None and url:
        raise DemoError(f"no llmtraind answers at {url}; leave out --url to let the demo start one")
    return found


def run_demo(
    cfg: Config, config_path: Path | None, *, url: str | None, keep_serving: bool, steps: int
) -> int:
    """The demo from start to end: 0 when every job succeeded, 1 when one did not."""
    home = cfg.paths.state / "demo"
    _ensure_model(home / "tiny-qwen2", cfg.swift.python)
    vlm = _ensure_vlm(home / "tiny-qwen2-vl", cfg.swift.python)
    data = _write(home / "data", demo_datasets() | ({BUNDLE: demo_bundle()} if vlm is not None else {}))
    daemon: _Daemon | None = None
    try:
        base = _find_daemon(url, cfg)
        if base is None:
            _say(f"daemon    none answers; starting `llmtraind serve` (its log: {home / 'daemon.log'})")
            daemon, base = _start_daemon(cfg, config_path, home / "daemon.log")
        _say(f"daemon    {base}")
        try:
            rc, run = _submit_and_follow(Api(base, cfg.api.token), cfg, home, data, steps, daemon, vlm)
        except ApiError as e:
            raise DemoError(str(e)) from None
        _say("\nTry next:")
        for line in curl_hints(base, run, bool(cfg.api.token)):
            _say(f"  {line}")
        if daemon is None:
            _say(f"\nThe daemon at {base} was running before the demo; it keeps running.")
        elif keep_serving:
            _say(f"\nThe daemon keeps serving at {base}; press Ctrl-C to stop it.")
            with contextlib.suppress(KeyboardInterrupt):
                daemon.proc.wait()
        else:
            _say("\nThe daemon the demo started stops now: `llmtraind demo --keep-serving` leaves it up.")
        return rc
    finally:
        if daemon is not None:
            daemon.stop()
            _say(f"daemon    stopped (exit status {daemon.proc.returncode})")


def _submit_and_follow(
    api: Api, cfg: Config, home: Path, data: list[Path], steps: int, daemon: _Daemon | None, vlm: Path | None
) -> tuple[int, int]:
    """Drop the files and follow the jobs: the exit status, and the run number the jobs' names carry."""
    inbox = InboxLayout(cfg.paths.inbox)
    since = int(api.get("/v1/status")["last_seq"])
    taken = [str(job.get("name")) for job in api.get("/v1/jobs")["jobs"]]
    if inbox.root.is_dir():  # an earlier run's files the daemon has not taken yet
        taken += [p.stem for p in inbox.root.glob("*.yaml")]
    run = next_run(taken)
    plan = demo_jobs(home / "tiny-qwen2", run, steps)
    if vlm is not None:
        plan += demo_vlm_jobs(vlm, run, steps)
    files = _write(home / "jobs", {job.filename: job.text.encode() for job in plan})
    for path in (*data, *files):
        _drop(inbox, path)
        _say(f"submitted {path.name}")
    return _follow(api, plan, since, inbox, daemon), run


def _feed(api: Api, since: int, daemon: _Daemon | None) -> Iterator[SseEvent]:
    """The event log from `since` on, live, as `llmtraind events -f` reads it; a daemon that is gone
    ends the demo with its log's last lines when the demo started it."""
    try:
        yield from api.stream(
            "/v1/events/stream", after=str(since), retries=UNREACHABLE_TRIES, keepalive=True
        )
    except ApiError as e:
        if daemon is not None:
            daemon.check_alive()
        raise DemoError(str(e)) from None


def _follow(api: Api, plan: list[DemoJob], since: int, inbox: InboxLayout, daemon: _Daemon | None) -> int:
    """Print each job's line when it changes, from the event feed: an event on one of the demo's jobs
    fetches that job again; a FileRejected of one of its files is reported as it comes."""
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    width = max(len(job.name) for job in plan)
    names = {job.name for job in plan}
    filenames = sorted({need for job in plan for need in job.needs}) + [job.filename for job in plan]
    shown: dict[str, tuple[Any, ...]] = {}
    rejected: dict[str, str] = {}
    jobs: dict[str, Mapping[str, Any]] = {}
    ours: dict[int, str] = {}
    results = outcomes(plan, jobs, rejected)
    started, warned = time.monotonic(), False
    for event in _feed(api, since, daemon):
        if event.event == "message":
            recorded = json.loads(event.data)
            rejected.update(rejections([recorded], filenames, inbox.rejected))
            name = (recorded.get("data") or {}).get("name")
            for job_id in touched_jobs(recorded):
                if recorded.get("type") == "JobSubmitted" and name in names:
                    ours[job_id] = str(name)
                if job_id in ours:
                    jobs[ours[job_id]] = api.get(f"/v1/jobs/{job_id}")
            results = outcomes(plan, jobs, rejected)
            for job in plan:
                _show_change(job.name, width, jobs.get(job.name), results[job.name], shown, color)
            if all(result is not None for result in results.values()):
                return _summary(results)
        unseen = [j.name for j in plan if j.name not in jobs and results[j.name] is None]
        if unseen and not warned and time.monotonic() - started > QUIET_WARN_S:
            warned = True
            _say(f"note      {', '.join(unseen)} not picked up yet: does {api.base} watch {inbox.root}?")
    raise DemoError(f"the daemon at {api.base} ended its event feed")


def _show_change(
    name: str,
    width: int,
    job: Mapping[str, Any] | None,
    result: Outcome | None,
    shown: dict[str, tuple[Any, ...]],
    color: bool,
) -> None:
    if result is not None and (job is None or result.state not in TERMINAL):
        key: tuple[Any, ...] = result
        line = job_line(name, width, result.state, result.why, color)
    elif job is not None:
        key = line_key(job)
        line = job_line(name, width, str(job.get("state")), describe(job), color)
    else:
        return
    if shown.get(name) != key:
        shown[name] = key
        _say(line)


def _summary(results: Mapping[str, Outcome | None]) -> int:
    failed = {name: r for name, r in results.items() if r is not None and r.state != "succeeded"}
    if not failed:
        _say(f"\nAll {len(results)} demo jobs succeeded.")
        return 0
    _say(f"\n{len(failed)} of {len(results)} demo jobs did not succeed:")
    for name, result in failed.items():
        _say(f"  {name}: {result.state}" + (f": {result.why}" if result.why else ""))
    return 1
