"""`llmtraind backup DEST` against a real daemon that keeps appending: the copy is one whole moment of
the log (integrity ok, gap-free, a prefix of the live log), carries the log-id, replays offline, and
put back in place of the log (the README's restore) it starts the daemon again beside its runs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, _env
from tests.integration.test_log_identity import fake_swift_daemon, run_a_job
from tests.integration.test_runs import sft_rows

pytestmark = pytest.mark.timeout(180)


def rows(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, stream, version, type, data FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def last_seq(d: Daemon) -> int:
    return int(d.get("/v1/status")[1]["last_seq"])


def test_a_backup_taken_while_the_daemon_appends_is_whole_and_restores(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d, model = fake_swift_daemon(daemon_factory, tmp_path)
    run_a_job(d, model, "first")

    stop = threading.Event()
    dropped: list[int] = []

    def keep_dropping() -> None:
        while not stop.is_set():
            i = len(dropped)
            d.drop(f"more{i}.jsonl", sft_rows(2 + i))
            dropped.append(i)
            stop.wait(0.02)

    writer = threading.Thread(target=keep_dropping)
    writer.start()
    try:
        d.wait_for("drops being recorded", lambda: len(dropped) > 5)
        before = last_seq(d)
        dest = tmp_path / "backups" / "one"
        dest.parent.mkdir()
        made = d.cli("backup", str(dest))
        d.wait_for("more drops after the backup", lambda: last_seq(d) > before + 20)
    finally:
        stop.set()
        writer.join(timeout=10)
    assert made.returncode == 0, made.stderr
    copy = dest / "llmtraind.sqlite3"
    assert f"wrote {copy}: " in made.stdout and "integrity ok" in made.stdout, made.stdout
    assert sorted(p.name for p in dest.iterdir()) == ["llmtraind.sqlite3", "log-id"]
    assert (dest / "log-id").read_text() == (d.state / "log-id").read_text()
    assert dest.stat().st_mode & 0o777 == 0o700 and copy.stat().st_mode & 0o777 == 0o600

    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        count, top = conn.execute("SELECT count(*), max(seq) FROM events").fetchone()
    finally:
        conn.close()
    assert count == top and count >= before, (count, top, before)
    assert f"{count} events (seq 1..{count})" in made.stdout
    assert "last job 1" in made.stdout

    config = tmp_path / "replay.toml"
    config.write_text(f'[paths]\nstate = "{dest}"\ninbox = "{tmp_path / "inbox2"}"\n')
    (tmp_path / "inbox2").mkdir()
    replay = subprocess.run(
        [sys.executable, "-m", "daemon", "replay", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    state = json.loads(replay.stdout)
    assert "first" in json.dumps(state["jobs"])

    again = d.cli("backup", str(dest))
    assert again.returncode == 1 and "exists" in again.stderr, again
    assert rows(copy)[-1][0] == count, "a refused backup leaves the old one as it was"

    assert d.stop() == 0
    live = d.state / "llmtraind.sqlite3"
    copied = rows(copy)
    assert rows(live)[:count] == copied, "the copy is a prefix of the live log"
    for name in ("llmtraind.sqlite3", "llmtraind.sqlite3-wal", "llmtraind.sqlite3-shm"):
        (d.state / name).unlink(missing_ok=True)
    (dest / "log-id").replace(d.state / "log-id")
    copy.replace(live)
    d.start()
    assert d.get("/v1/jobs/first")[1]["state"] == "succeeded"
    assert last_seq(d) > count
    assert rows(live)[:count] == copied
