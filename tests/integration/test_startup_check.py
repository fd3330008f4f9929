"""Start-up from a snapshot checks only the events after it and serves; the whole log is checked
after, and damage found there is as loud as damage found at start (issue 16). A real daemon, no runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.daemon_proc import Daemon


def test_damage_the_snapshot_covers_is_found_after_serving_and_stops_writes(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "a", snapshot_bytes=1).start()
    assert d.stop() == 0
    db = d.state / "llmtraind.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    (snapshot,) = conn.execute("SELECT max(seq) FROM snapshots").fetchone()
    assert snapshot >= 1
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET type = 'FromTheFuture' WHERE seq = 1")
    conn.close()

    d.start()
    d.wait_for("the background check", lambda: d.get("/healthz")[0] == 503, 10)
    code, body = d.get("/healthz")
    assert "the event log is damaged: unknown event types ['FromTheFuture']" in body["reason"]
    assert "nothing more is recorded" in body["reason"]
    log = d.log_path.read_text()
    assert "the event log is damaged: unknown event types" in log
    assert d.get("/v1/status")[0] == 200
    assert d.stop() == 1
    assert "llmtraind cannot run: the event log is damaged" in d.log_path.read_text()
    again = d.cli("serve", timeout=30)
    assert again.returncode == 2 and "refusing to start: the event log is damaged" in again.stderr
    fsck = d.cli("fsck")
    assert fsck.returncode == 1 and "unknown event types ['FromTheFuture']" in fsck.stderr
