"""kill -9 while appending: acknowledged events survive exactly once and the log stays whole (S1)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from daemon.core.events import DaemonStopped, NewEvent
from daemon.log.sqlite import check_log
from daemon.log.store import EventStore

APPENDER = """
import asyncio, sys
from pathlib import Path
from daemon.core.events import DaemonStopped, NewEvent
from daemon.log.store import EventStore

async def main():
    store = await EventStore.open(Path(sys.argv[1]))
    start = int(sys.argv[2])
    print("ready", flush=True)
    n = start
    while True:
        batch = [NewEvent(DaemonStopped(pid=n, reason="crash-test"), f"n{n}")]
        if n % 5 == 0:
            batch.append(NewEvent(DaemonStopped(pid=n, reason="second"), f"n{n}b"))
        await store.append(f"s{n % 3}", batch)
        print(f"ack {n}", flush=True)
        n += 1

asyncio.run(main())
"""


def run_and_kill(db: Path, start: int, rng: random.Random) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(db), str(start)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.random() * 0.05)
    proc.send_signal(signal.SIGKILL)
    out = proc.stdout.read()
    proc.stdout.close()
    proc.wait(timeout=10)
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("ack ")]


def rows_for(conn: sqlite3.Connection, key: str) -> int:
    return int(conn.execute("SELECT count(*) FROM events WHERE idem_key = ?", (key,)).fetchone()[0])


def test_kill_9_while_appending_100_times(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    rng = random.Random(1234)
    acked: list[int] = []
    start = 0
    for _ in range(100):
        got = run_and_kill(db, start, rng)
        acked += got
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        check_log(conn)
        for n in got:
            assert rows_for(conn, f"n{n}") == 1, f"acknowledged event {n} not present exactly once"
        conn.close()
        unacked = (got[-1] + 1) if got else start
        asyncio.run(reappend(db, unacked))
        start = unacked + 1
    conn = sqlite3.connect(db)
    check_log(conn)
    for n in range(start):
        assert rows_for(conn, f"n{n}") == 1
    conn.close()
    assert len(acked) > 100


async def reappend(db: Path, n: int) -> None:
    """The one append that may or may not have landed before the kill converges to exactly one row."""
    store = await EventStore.open(db)
    batch = [NewEvent(DaemonStopped(pid=n, reason="crash-test"), f"n{n}")]
    if n % 5 == 0:
        batch.append(NewEvent(DaemonStopped(pid=n, reason="second"), f"n{n}b"))
    await store.append(f"s{n % 3}", batch)
    await store.close()
