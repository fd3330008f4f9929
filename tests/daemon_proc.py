"""A real llmtraind process in a temporary folder, as a user would run it."""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.runs.stacks import session_pids

CONFIG = """
[paths]
inbox = "inbox"
state = "state"
[api]
port = 0
token = "{token}"
[gpus]
devices = "none"
[store]
busy_timeout_ms = {busy_timeout_ms}
snapshot_bytes = {snapshot_bytes}
[daemon]
health_interval_s = {health_interval_s}
"""


@dataclass
class Daemon:
    root: Path
    token: str = ""
    busy_timeout_ms: int = 5000
    snapshot_bytes: int = 8 * 1024 * 1024
    health_interval_s: float = 5.0
    extra_config: str = ""
    """TOML appended to the config (sections the base config does not have)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for `start` (LLMTRAIND_* overrides, the intake fault hook)."""
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "daemon.log"
        (self.root / "llmtraind.toml").write_text(
            CONFIG.format(
                token=self.token,
                busy_timeout_ms=self.busy_timeout_ms,
                snapshot_bytes=self.snapshot_bytes,
                health_interval_s=self.health_interval_s,
            )
            + self.extra_config
        )

    @property
    def config(self) -> Path:
        return self.root / "llmtraind.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def inbox(self) -> Path:
        return Path(self.env.get("LLMTRAIND_PATHS_INBOX", self.root / "inbox"))

    def drop(self, name: str, data: bytes | str) -> Path:
        """Drop a file the way writers should: write beside the inbox, then rename it in."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        tmp = self.inbox / f".{name}.part"
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        target = self.inbox / name
        os.rename(tmp, target)
        return target

    def wait_for(self, what: str, check: Any, timeout: float = 30) -> Any:
        """Poll `check()` until it returns something truthy; fail with `what` and the log."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode} waiting for {what}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon", *args[:1], "--config", str(self.config), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(self.env),
        )

    def start(self, wait: bool = True, *serve_args: str) -> Daemon:
        endpoint = self.state / "daemon.json"
        endpoint.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "serve", "--config", str(self.config), *serve_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(self.env),
            )
        if wait:
            deadline = time.monotonic() + 30
            while not endpoint.exists():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daemon did not come up:\n{self.log()}")
                time.sleep(0.05)
            self.url = json.loads(endpoint.read_text())["url"]
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, token: str | None = None, method: str = "GET") -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, method=method)
        tok = self.token if token is None else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
                return resp.status, json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            body = e.read()
            return e.code, json.loads(body) if body else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def run_sessions(self) -> set[int]:
        """Session ids of every run this daemon's state directory has started."""
        found = set()
        for info in self.state.glob("runs/*/*/supervisor.json"):
            found.add(int(json.loads(info.read_text())["sid"]))
        return found

    def kill_runs(self) -> None:
        """Runs outlive their daemon by design; a test must not leave them behind."""
        for sid in self.run_sessions():
            for pid in session_members(sid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def session_members(sid: int) -> list[int]:
    """Live processes in session `sid`: its zombies are dead already."""
    return session_pids(sid, live=True)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMTRAIND_")}
    env.update(extra or {})
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env
