"""Connections nobody authenticated cannot use up the daemon: past `[api] max_connections` they are
answered 503 and closed, and a client that does not finish its headers within `[api]
header_timeout_s` is dropped; intake goes on meanwhile and the log says so in a few lines."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.daemon_proc import Daemon

SFT = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'


def address(d: Daemon) -> tuple[str, int]:
    url = urllib.parse.urlsplit(d.url)
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


def accepted(d: Daemon) -> int:
    """Read from the log itself: the API is what the attack keeps busy."""
    with contextlib.closing(sqlite3.connect(f"file:{d.state / 'llmtraind.sqlite3'}?mode=ro", uri=True)) as c:
        return int(c.execute("SELECT count(*) FROM events WHERE type = 'DatasetAccepted'").fetchone()[0])


def healthz_s(d: Daemon) -> float:
    t0 = time.monotonic()
    with urllib.request.urlopen(d.url + "/healthz", timeout=5) as resp:
        assert resp.status == 200
    return time.monotonic() - t0


def test_connections_past_the_cap_are_refused_and_intake_goes_on(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(
        tmp_path / "a",
        env={"LLMTRAIND_API_MAX_CONNECTIONS": "50", "LLMTRAIND_API_HEADER_TIMEOUT_S": "60"},
    ).start()
    lines_before = d.log().count("\n")
    host, port = address(d)
    silent: list[socket.socket] = []
    try:
        for _ in range(200):
            s = socket.create_connection((host, port), timeout=5)
            silent.append(s)
        d.drop("one.jsonl", SFT)
        d.wait_for("a drop recorded while the cap is full", lambda: accepted(d) == 1, 30)
        for s in silent:
            s.setblocking(False)
        waiting, refused = list(silent), 0

        def all_refused() -> bool:
            """The kernel queues only `backlog` handshakes; the rest finish on a SYN-ACK resent later."""
            nonlocal refused
            for s in list(waiting):
                with contextlib.suppress(BlockingIOError):
                    refused += s.recv(64).startswith(b"HTTP/1.1 503")
                    waiting.remove(s)
            return refused == 150

        d.wait_for("150 connections refused", all_refused, 30)
        assert len(waiting) == 50
        with socket.create_connection((host, port), timeout=5) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert extra.recv(64).startswith(b"HTTP/1.1 503")
    finally:
        for s in silent:
            s.close()
    d.wait_for("the API free again", lambda: healthz_s(d) < 1.0, 10)
    assert d.get("/healthz")[0] == 200
    d.wait_for("the refusals reported", lambda: "at the cap of 50 open" in d.log(), 15)
    log = d.log()
    assert "Traceback" not in log
    assert log.count("\n") - lines_before < 10, log


def test_a_slow_client_is_dropped_after_the_header_timeout(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "a", env={"LLMTRAIND_API_HEADER_TIMEOUT_S": "2"}).start()
    with socket.create_connection(address(d), timeout=10) as slow:
        t0 = time.monotonic()
        closed_after = None
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10:
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
            time.sleep(1.0)
        if closed_after is None:
            slow.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert slow.recv(64) == b""
            closed_after = time.monotonic() - t0
        assert 1.5 < closed_after < 6
    idle = socket.create_connection(address(d), timeout=10)
    with idle:
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert idle.recv(64) == b""
        assert 1.5 < time.monotonic() - t0 < 4
    assert d.get("/healthz")[0] == 200
    d.wait_for("the timeouts reported", lambda: "within 2 s ([api] header_timeout_s)" in d.log(), 15)
    assert "Traceback" not in d.log()
