"""/v1/state on 10,000 jobs (issue 12, item 5): /healthz latency while clients hammer /v1/state and
a run's progress is folded every 50 ms, so that every answer is built anew (its cache is per seq)
and most builds see an event folded under them.

Goal: /healthz p99 under that load at most 100 ms over its p99 on the idle daemon. Encoded in one
go, the state held the loop for the whole encode (about 100 ms on a quiet machine, several times
that on a busy one); it is now built a chunk of entries at a time. The "one go" line is measured
too, by a server that answers with `state_to_json` as before, for comparison. The server is a
separate process running the daemon's API app on bench_api_heavy's state; the hammering client is
a process of its own; /healthz is asked every 10 ms from this process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bench.bench_api import RAW_LOAD, wait_listening
from tests.bench.bench_api_heavy import JOBS, body_size, healthz_latencies, heavy_state, progress
from tests.bench.measure import Goals, free_port, percentile, wait_quiet

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
MOVE_S = 0.05
"""How often the served state's seq moves on, as events folded would move it."""


def serve(folder: str, port: int, one_go: bool) -> None:
    """The server process: the daemon's API app on `heavy_state()`, a JobProgress folded every
    MOVE_S and told to the answer as the store's listener would; `one_go` answers /v1/state with
    `state_to_json` on the loop, as before."""
    from aiohttp import web

    from daemon.core.state import state_to_json
    from daemon.http import api
    from daemon.http.api import ReadSide, make_app
    from daemon.log.store import EventStore

    async def main() -> None:
        state = heavy_state()
        store = await EventStore.open(Path(folder) / "llmtraind.sqlite3")
        app = make_app(ReadSide(lambda: state, store, store.path, time.monotonic()))
        if one_go:

            async def pieces() -> list[bytes]:
                return [state_to_json(state).encode()]

            app[api.STATE_ANSWER].pieces = pieces  # type: ignore[method-assign]
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        step = 0
        while True:
            await asyncio.sleep(MOVE_S)
            step += 1
            app[api.STATE_ANSWER].recorded([progress(state, step)])

    asyncio.run(main())


def measure(tmp_path: Path, one_go: bool, seconds: float) -> tuple[list[float], list[float], float, int]:
    """Idle and busy /healthz latencies, /v1/state answers per second, and the answer's size."""
    port = free_port()
    code = f"from tests.bench.bench_state_answer import serve; serve({str(tmp_path)!r}, {port}, {one_go})"
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    hammer: subprocess.Popen[str] | None = None
    try:
        wait_listening(server, port, timeout=120)
        size = body_size(port, "/v1/state")
        wait_quiet("idle /healthz")
        idle = healthz_latencies(port, 5.0)
        argv = [sys.executable, "-c", RAW_LOAD, f"http://127.0.0.1:{port}/v1/state", "2", str(seconds), ""]
        hammer = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the hammer's warm-up second
        busy = healthz_latencies(port, seconds - 2.0)
        out, _ = hammer.communicate(timeout=seconds + 60)
        rate = float(out.split()[0])
    finally:
        if hammer is not None:
            hammer.kill()
        server.terminate()
        server.wait(10)
    return idle, busy, rate, size


def test_healthz_stays_prompt_while_the_whole_state_is_asked_for(tmp_path: Path) -> None:
    seconds = 10.0
    goals = Goals()
    print(f"\n{JOBS:,} jobs; the state's seq moves every {MOVE_S * 1000:.0f} ms")
    for one_go in (True, False):
        idle, busy, rate, size = measure(tmp_path, one_go, seconds)
        idle_p99, busy_p99 = percentile(idle, 0.99), percentile(busy, 0.99)
        print(
            f"  {'one go (before)' if one_go else 'chunked'}: /v1/state {size / 1e6:.1f} MB, {rate:.1f} answers/s;"
            f" /healthz idle p99 {idle_p99:.2f} ms, busy p50 {percentile(busy, 0.5):.2f} ms,"
            f" p99 {busy_p99:.2f} ms, max {max(busy):.2f} ms ({len(busy)} asked)"
        )
        if not one_go:
            goals.check(
                "  /healthz p99 under load - idle p99",
                busy_p99 - idle_p99,
                100.0,
                higher_is_better=False,
                unit=" ms",
            )
    goals.assert_met()
