"""The daemon as a systemd service (reliability.md §6, D1-D3): sd_notify readiness, watchdog,
reload and stop seen on a fake NOTIFY_SOCKET; journald-aware logging; the generated unit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.app import WEDGE_ENV
from tests.daemon_proc import Daemon

pytestmark = pytest.mark.timeout(120)


class NotifySocket:
    """What systemd listens on: a datagram socket; each message is KEY=VALUE lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.seen: list[tuple[float, dict[str, str]]] = []

    def drain(self) -> list[tuple[float, dict[str, str]]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.seen
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.seen.append((time.monotonic(), fields))

    def wait(self, key: str, value: str | None = None, after: float = 0.0, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, fields in self.drain():
                if at > after and key in fields and (value is None or fields[key] == value):
                    return at
        raise AssertionError(f"no {key}={value} after {after}: {self.seen[-10:]}")

    def times(self, key: str) -> list[float]:
        return [at for at, fields in self.drain() if key in fields]


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.sock.close()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_ready_watchdog_reload_and_stop(
    daemon_factory: type[Daemon], tmp_path: Path, notify: NotifySocket
) -> None:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000", WEDGE_ENV: "3"}
    d = daemon_factory(tmp_path / "d", env=env)
    d.start(wait=False)
    notify.wait("READY", "1")
    d.url = json.loads((d.state / "daemon.json").read_text())["url"]
    assert answers(d.url), "READY=1 came before the API answered"

    first = notify.wait("WATCHDOG", "1")
    notify.wait("WATCHDOG", "1", after=first)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGUSR2)  # blocks the event loop for 3 s, as a bug would
    wedged = time.monotonic()
    time.sleep(2.5)
    pings = [t for t in notify.times("WATCHDOG") if t > wedged + 0.3]
    assert pings == [], "WATCHDOG=1 was sent while the loop was wedged"
    notify.wait("WATCHDOG", "1", after=wedged + 3, timeout=10)

    d.config.write_text(d.config.read_text() + "[runs]\nschedule_s = 1.5\n")
    sent = time.monotonic()
    d.proc.send_signal(signal.SIGHUP)
    reloading = notify.wait("RELOADING", "1", after=sent)
    fields = next(f for at, f in notify.seen if at == reloading)
    assert fields.get("MONOTONIC_USEC", "").isdigit()
    notify.wait("READY", "1", after=reloading)
    d.wait_for(
        "ConfigReloaded",
        lambda: any(e["type"] == "ConfigReloaded" for e in d.get("/v1/events?limit=1000")[1]["events"]),
    )
    reloaded = [e for e in d.get("/v1/events?limit=1000")[1]["events"] if e["type"] == "ConfigReloaded"]
    assert reloaded[-1]["data"]["applied"] == ["runs.schedule_s"]

    stop = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    notify.wait("STOPPING", "1", after=stop)
    assert d.proc.wait(timeout=15) == 0


def test_watchdog_pings_stop_while_the_event_log_cannot_be_written(
    daemon_factory: type[Daemon], tmp_path: Path, notify: NotifySocket
) -> None:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    d = daemon_factory(tmp_path / "d", env=env, health_interval_s=0.2, busy_timeout_ms=100).start()
    notify.wait("WATCHDOG", "1")
    holder = sqlite3.connect(d.state / "llmtraind.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        d.wait_for("unhealthy", lambda: d.get("/healthz")[0] == 503, 10)
        quiet = time.monotonic()
        time.sleep(2)
        assert [t for t in notify.times("WATCHDOG") if t > quiet + 0.1] == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    notify.wait("WATCHDOG", "1", after=time.monotonic(), timeout=10)


def test_a_reload_refuses_what_needs_a_restart(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = daemon_factory(tmp_path / "d").start()
    text = (
        d.config.read_text()
        .replace("port = 0", "port = 1")
        .replace('devices = "none"', 'devices = "none"\ncpu_slots = 2')
    )
    d.config.write_text(text)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)

    def reloaded() -> list[dict[str, object]]:
        return [e for e in d.get("/v1/events?limit=1000")[1]["events"] if e["type"] == "ConfigReloaded"]

    (event,) = d.wait_for("ConfigReloaded", reloaded)
    assert (event["data"]["applied"], event["data"]["refused"]) == (["gpus.cpu_slots"], ["api.port"])
    assert "api.port changed but takes a restart" in d.log()
    d.config.write_text("[paths]\nnot toml")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("the refusal", lambda: "reload refused" in d.log())
    assert d.get("/healthz")[0] == 200


def test_journal_stream_gets_level_prefixes_and_no_timestamps(tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from daemon.systemd import setup_logging\n"
        "setup_logging('info')\n"
        "logging.getLogger('x').warning('careful')\n"
        "logging.getLogger('x').info('fine')\n"
    )
    out = tmp_path / "stderr"
    with open(out, "wb") as f:
        st = os.fstat(f.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run([sys.executable, "-c", script], stderr=f, env=env, check=True, timeout=30)
    assert out.read_text().splitlines() == ["<4>x: careful", "<6>x: fine"]
    with open(out, "wb") as f:
        env = {**os.environ, "JOURNAL_STREAM": "1:2"}
        subprocess.run([sys.executable, "-c", script], stderr=f, env=env, check=True, timeout=30)
    lines = out.read_text().splitlines()
    assert lines[0].endswith("WARNING x: careful") and lines[0][:4].isdigit()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_generated_unit_passes_systemd_analyze_verify(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d")
    result = d.cli("unit")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for line in (
        "KillMode=process",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "LimitNOFILE=65536",
        "Restart=on-failure",
    ):
        assert line in text.splitlines()
    assert "PrivateDevices" not in text.replace("Never set PrivateDevices", "")
    assert "StateDirectory=llmtraind" in text and "LogsDirectory=llmtraind" in text
    unit = tmp_path / "llmtraind.service"
    unit.write_text(text)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stderr
