"""`llmtraind serve` as a user runs it: a real process, a real state folder, loopback HTTP."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import daemon
from daemon.core.state import state_to_json
from daemon.log.projector import load_state_at_path
from tests.daemon_proc import Daemon

ROUTES = ["/healthz", "/v1/status", "/v1/events", "/v1/state", "/v1/nope"]


def event_types(d: Daemon) -> list[str]:
    code, body = d.get("/v1/events?limit=1000")
    assert code == 200
    return [e["type"] for e in body["events"]]


def test_serve_records_its_life_and_stops_on_sigterm(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = daemon_factory(tmp_path / "a").start()
    code, body = d.get("/healthz")
    disk = body.pop("disk")
    assert (code, body) == (200, {"ok": True, "reason": ""})
    assert disk["ok"] is True and disk["path"] == str(d.state) and disk["free_bytes"] > 0
    code, status = d.get("/v1/status")
    assert code == 200 and status["version"] == daemon.__version__ and status["last_seq"] == 1
    assert status["uptime_s"] >= 0 and status["healthy"] is True
    code, page = d.get("/v1/events")
    started = page["events"][0]
    assert started["type"] == "DaemonStarted" and started["stream"] == "daemon"
    assert started["data"]["pid"] == d.proc.pid if d.proc else False
    assert len(started["data"]["config_digest"]) == 16 and started["data"]["gpus"] == []
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 10
    d.start()
    assert event_types(d) == ["DaemonStarted", "DaemonStopped", "DaemonStarted"]
    assert d.stop(signal.SIGINT) == 0
    assert not (d.state / "daemon.json").exists()


def test_a_second_daemon_on_the_same_state_refuses(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = daemon_factory(tmp_path / "a").start()
    second = d.cli("serve", timeout=30)
    assert second.returncode == 3
    assert f"another llmtraind (pid {d.proc.pid if d.proc else 0}) is already serving" in second.stderr
    assert d.get("/healthz")[0] == 200


def test_a_damaged_log_stops_serve_with_the_reason(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = daemon_factory(tmp_path / "a").start()
    d.stop()
    db = d.state / "llmtraind.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("DELETE FROM events WHERE seq = 1")
    conn.commit()
    conn.close()
    result = d.cli("serve", timeout=30)
    assert result.returncode == 2
    assert "the event log is damaged" in result.stderr and "not gap-free" in result.stderr
    assert "nothing was repaired or truncated" in result.stderr


def test_health_follows_a_write_lock_held_elsewhere(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = daemon_factory(tmp_path / "a", busy_timeout_ms=200, health_interval_s=0.2).start()
    db = d.state / "llmtraind.sqlite3"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys\n"
            "c=sqlite3.connect(sys.argv[1],isolation_level=None);c.execute('BEGIN IMMEDIATE');"
            "print('locked',flush=True);sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    d.wait_for("the daemon to notice the lock", lambda: d.get("/healthz")[0] != 200, 5)
    code, body = d.get("/healthz")
    assert code == 503 and body["ok"] is False and "locked" in body["reason"]
    assert holder.stdin is not None
    holder.stdin.close()  # the holder exits, letting the lock go
    holder.wait(timeout=10)
    holder.stdout.close()
    d.wait_for("the daemon to recover", lambda: d.get("/healthz")[0] == 200, 5)
    assert event_types(d) == ["DaemonStarted"]
    assert d.stop() == 0


def test_read_only_api_answers_405_and_requires_the_token(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "a", token="s3cret").start()
    for route in ROUTES:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            code, body = d.get(route, method=method)
            assert code == 405 and body["error"]["code"] == "method_not_allowed", (route, method)
    assert d.get("/healthz", token="")[0] == 200
    for route in ROUTES[1:4]:
        code, body = d.get(route, token="")
        assert code == 401 and body["error"]["code"] == "unauthorized"
        assert d.get(route, token="wrong")[0] == 401
        assert d.get(route)[0] == 200
    code, body = d.get("/v1/nope")
    assert code == 404 and body["error"]["code"] == "not_found"
    for bad in ("/v1/events?after=-1", "/v1/events?limit=0", "/v1/events?limit=x", "/v1/state?at=abc"):
        code, body = d.get(bad)
        assert code == 400 and body["error"]["code"] == "bad_request", bad


def test_a_malformed_request_is_answered_400_and_logged_in_one_line(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "a").start()
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer = sock.recv(200)
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer
    assert d.get("/healthz")[0] == 200
    d.stop()
    line = d.wait_for("the refusal logged", lambda: [x for x in d.log().splitlines() if "16384" in x], 5)
    assert " INFO aiohttp.server: Error handling request" in line[0], line
    assert "Traceback" not in d.log() and " ERROR " not in d.log()


def test_non_loopback_without_token_is_refused(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = daemon_factory(tmp_path / "a")
    d.config.write_text(d.config.read_text().replace("port = 0", 'port = 0\nhost = "0.0.0.0"'))
    result = d.cli("serve", timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert "not a loopback address" in line and "[api] host" in line and "[api] token" in line


def test_an_event_that_does_not_match_its_type_stops_serve_in_one_line(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "a").start()
    d.stop()
    conn = sqlite3.connect(d.state / "llmtraind.sqlite3")
    conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    conn.execute("""UPDATE events SET data = '{"pid": "not a pid"}' WHERE seq = 1""")
    conn.commit()
    conn.close()
    result = d.cli("serve", timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert "the event log is damaged: event 1 (DaemonStarted) does not match its schema" in line, line
    assert "nothing was repaired or truncated" in line


def test_restarts_with_snapshots_replay_to_the_same_state(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "a", snapshot_bytes=1)
    for _ in range(4):
        d.start()
        assert d.stop() == 0
    d.start()
    code, live = d.get("/v1/state")
    assert code == 200 and live["last_seq"] == 9 and live["daemon_starts"] == 5
    code, at3 = d.get("/v1/state?at=3")
    assert code == 200 and at3["last_seq"] == 3 and at3["daemon_starts"] == 2
    d.stop()
    conn = sqlite3.connect(d.state / "llmtraind.sqlite3")
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone()[0] >= 1
    conn.execute("DELETE FROM snapshots")
    conn.commit()
    conn.close()
    from_scratch = load_state_at_path(d.state / "llmtraind.sqlite3")
    replay = d.cli("replay")
    assert replay.returncode == 0
    assert json.loads(replay.stdout) == json.loads(state_to_json(from_scratch))
    assert json.loads(replay.stdout)["last_seq"] == 10
    at3_cli = json.loads(d.cli("replay", "--at", "3").stdout)
    assert at3_cli == at3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clients_read_the_daemon(daemon_factory: type[Daemon], tmp_path: Path, sig: int) -> None:
    d = daemon_factory(tmp_path / "a").start()
    status = d.cli("status")
    assert status.returncode == 0 and "healthy      yes" in status.stdout
    events = d.cli("events", "--json")
    assert [json.loads(line)["type"] for line in events.stdout.splitlines()] == ["DaemonStarted"]
    assert d.stop(sig) == 0
    down = d.cli("status")
    assert down.returncode != 0 and "cannot reach the daemon" in down.stderr
