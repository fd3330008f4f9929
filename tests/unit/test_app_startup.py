"""Start-up is all or nothing: a part that cannot start stops the parts already started, in reverse
order, and the daemon exits with one line that names the part, its port and lock released."""

from __future__ import annotations

import logging
import socket
import sqlite3
from pathlib import Path

import pytest

from daemon.app import StateLock, serve
from daemon.core.config import load_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.timeout(60)
async def test_an_inbox_that_cannot_start_releases_the_port_and_the_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "rejected").write_text("a file where the inbox's rejected/ folder should be\n")
    port = _free_port()
    config = tmp_path / "llmtraind.toml"
    config.write_text(
        f'[paths]\ninbox = "inbox"\nstate = "state"\n[api]\nport = {port}\n[gpus]\ndevices = "none"\n'
    )
    cfg = load_config(config, environ={})

    with caplog.at_level(logging.ERROR, logger="llmtraind"):
        code = await serve(cfg)

    assert code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(
        f"llmtraind cannot run: the inbox ({inbox}) did not start: [Errno 17] File exists"
    )
    with socket.socket() as s:  # the API had started before the inbox: its port is free again
        s.bind(("127.0.0.1", port))
    with StateLock(cfg.lock_path):  # and the state folder's lock was let go
        pass
    assert not (cfg.paths.state / "daemon.json").exists()
    with sqlite3.connect(cfg.db_path) as db:
        stopped = db.execute("SELECT data FROM events WHERE type = 'DaemonStopped'").fetchall()
    assert len(stopped) == 1 and "start failed: the inbox" in stopped[0][0]
