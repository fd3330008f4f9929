"""`llmtraind backup`: a whole copy with its log-id in a new folder, or nothing at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli.backup import BackupError, backup
from daemon.cli.main import main
from daemon.core.config import Config, load_config
from daemon.core.events import DaemonStopped, NewEvent
from daemon.log.sqlite import connect, prepare
from daemon.log.store import EventStore


def config(tmp_path: Path) -> Config:
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "llmtraind.toml"
    path.write_text('[paths]\nstate = "state"\ninbox = "inbox"\n')
    return load_config(path)


async def test_a_log_with_events_is_copied_with_its_id(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = await EventStore.open(cfg.db_path)
    for n in range(3):
        await store.append("daemon", [NewEvent(DaemonStopped(pid=n, reason="r"))])
    await store.save_snapshot(2, 1, "{}")
    dest = tmp_path / "backups" / "b"
    try:
        made = backup(cfg, dest)
    finally:
        await store.close()
    state_id = (cfg.paths.state / "log-id").read_text()
    assert (dest / "log-id").read_text() == state_id
    assert made.log_id == state_id.strip() and made.last_job is None
    assert (made.events, made.snapshots) == (3, 1)
    assert made.lines()[0].startswith(f"wrote {dest / 'llmtraind.sqlite3'}: 3 events (seq 1..3), 1 snapshots")
    assert made.lines()[1] == f"wrote {dest / 'log-id'}: log id {made.log_id}"
    assert (dest / "log-id").stat().st_mode & 0o777 == 0o600


def test_a_log_without_an_id_yet_is_copied_without_a_log_id(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    conn = connect(cfg.db_path, 1000)
    prepare(conn)
    conn.close()
    made = backup(cfg, tmp_path / "b")
    assert made.log_id_file is None and made.events == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["llmtraind.sqlite3"]
    assert "no log-id written" in made.lines()[1]


def test_an_existing_destination_is_refused_and_left_alone(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    conn = connect(cfg.db_path, 1000)
    prepare(conn)
    conn.close()
    dest = tmp_path / "b"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(BackupError, match="exists; a backup goes into a new folder"):
        backup(cfg, dest)
    assert [p.name for p in dest.iterdir()] == ["keep"]


def test_no_log_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with pytest.raises(BackupError, match="there is no event log at"):
        backup(cfg, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_failed_copy_leaves_no_folder(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.db_path.write_bytes(b"not a database, but long enough to look like one" * 100)
    with pytest.raises(BackupError, match="nothing kept in"):
        backup(cfg, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_the_command_says_why_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config(tmp_path)
    rc = main(["backup", "--config", str(tmp_path / "llmtraind.toml"), str(tmp_path / "b")])
    assert rc == 1
    assert "llmtraind: backup: there is no event log at" in capsys.readouterr().err
