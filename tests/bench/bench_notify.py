"""Notification benchmarks (issue 17): event -> delivery latency on loopback, and a burst of 10,000
events to one webhook target against a plain aiohttp POST loop sending the same bodies to the same
receiver in the same run.

Goals: p99 event -> delivery <= 100 ms on loopback; the burst at >= 50 % of the plain loop's rate.
Delivery is one at a time per target (its order is kept) and each is recorded in the event log
(an fsync) before the next, which is what bounds a crash to one repeat; the plain loop does neither,
and posts one at a time too. The receiver is a separate process (aiohttp, answers 204) that stamps
arrivals with CLOCK_MONOTONIC, which is system-wide, so its stamps compare with this process's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from daemon.core.config import NotifyTarget
from daemon.core.events import FileRejected, NewEvent
from daemon.core.streams import INTAKE_STREAM, Append
from daemon.log.projector import Projector
from daemon.log.store import EventStore
from daemon.notify.notifier import Notifications
from tests.bench.measure import Goals, percentile, wait_quiet
from tests.notify_receiver import SECRET

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]

BURST = 10_000
SINGLES = 200

RECEIVER = """
import sys, time
from aiohttp import web
stamps = []
async def hook(request):
    await request.read()
    stamps.append(time.monotonic())
    return web.Response(status=204)
async def got(request):
    return web.json_response(stamps)
async def reset(request):
    stamps.clear()
    return web.Response(status=204)
app = web.Application()
app.router.add_post("/hook", hook)
app.router.add_get("/stamps", got)
app.router.add_post("/reset", reset)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *a: print("ready", flush=True), access_log=None)
"""


def _rejected(i: int) -> NewEvent:
    return NewEvent(
        FileRejected(
            drop=f"d{i}",
            filename=f"bad{i}.jsonl",
            kind="dataset",
            summary="not JSON",
            problems="",
            kept_as=f"rejected/bad{i}.jsonl",
        )
    )


async def _count(session: aiohttp.ClientSession, base: str) -> list[float]:
    async with session.get(f"{base}/stamps") as r:
        stamps: list[float] = await r.json()
    return stamps


async def _bench(tmp: Path, port: int) -> dict[str, float]:
    base = f"http://127.0.0.1:{port}"
    store = await EventStore.open(tmp / "state" / "llmtraind.sqlite3", 5000)
    projector = await Projector.start(store, 100_000)
    notify = Notifications(store, lambda: projector.state)
    target = NotifyTarget(name="bench", url=f"{base}/hook", secret=SECRET, on=("file.rejected",))
    await notify.start([target])
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        latencies = []
        for i in range(SINGLES):
            t0 = time.monotonic()
            await store.append(INTAKE_STREAM, [_rejected(i)])
            while len(stamps := await _count(session, base)) <= i:
                await asyncio.sleep(0.001)
            latencies.append(stamps[i] - t0)
        out["p50_ms"] = percentile(latencies, 0.50) * 1000
        out["p99_ms"] = percentile(latencies, 0.99) * 1000
        await session.post(f"{base}/reset")

        parts = [
            Append(INTAKE_STREAM, [_rejected(SINGLES + i) for i in range(j, j + 1000)])
            for j in range(0, BURST, 1000)
        ]
        t0 = time.monotonic()
        await store.append_batch(parts)
        while notify.view()[0]["delivered"] < SINGLES + BURST:
            await asyncio.sleep(0.01)
        out["notify_per_s"] = BURST / (time.monotonic() - t0)
        stamps = await _count(session, base)
        assert len(stamps) == BURST
        await session.post(f"{base}/reset")

        body = json.dumps(
            {
                "type": "file.rejected",
                "timestamp": "2026-01-01T00:00:00Z",
                "data": {
                    "seq": 1,
                    "filename": "bad1.jsonl",
                    "kind": "dataset",
                    "summary": "not JSON",
                    "kept_as": "rejected/bad1.jsonl",
                },
            }
        )
        t0 = time.monotonic()
        for _ in range(BURST):
            async with session.post(
                f"{base}/hook", data=body, headers={"Content-Type": "application/json"}
            ) as r:
                assert r.status == 204
        out["plain_per_s"] = BURST / (time.monotonic() - t0)
    await notify.stop()
    await store.close()
    out["log_events"] = float(store.last_seq)
    return out


def test_notify_latency_and_burst_against_a_plain_post_loop(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        wait_quiet("notify")
        got = asyncio.run(_bench(tmp_path, port))
    finally:
        receiver.kill()
        receiver.wait()
        if receiver.stdout is not None:
            receiver.stdout.close()
    goals = Goals()
    print(
        f"\nevent -> delivery p50 {got['p50_ms']:.2f} ms; burst {got['notify_per_s']:.0f}/s vs plain {got['plain_per_s']:.0f}/s"
    )
    goals.check("event -> delivery p99", got["p99_ms"], 100.0, higher_is_better=False, unit=" ms")
    goals.check(
        "burst rate / plain POST loop rate",
        got["notify_per_s"] / got["plain_per_s"],
        0.5,
        higher_is_better=True,
    )
    goals.assert_met()
