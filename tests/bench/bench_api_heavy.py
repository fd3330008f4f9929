"""Heavy answers (issue 12, item 5): /healthz latency while clients hammer /v1/jobs and /v1/datasets
on a state of 10,000 jobs and one dataset dropped under 10,000 names.

Goal: /healthz p99 under that load at most 100 ms over its p99 on the idle daemon. Before paging,
/v1/datasets listed the dataset once per name with all its names each time (5,000 names: 352 MB in
8 s, /healthz blocked 4.7 s). The server is a separate process running the daemon's API app on a
scripted state (no fold, no intake: only the answers are measured); the hammering clients are
processes of their own (raw keep-alive sockets, bench_api's RAW_LOAD); /healthz is asked every 10 ms
from this process over one keep-alive connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.core.events import JobProgress
from daemon.core.state import Dataset, State
from tests.bench.bench_api import RAW_LOAD, wait_listening
from tests.bench.measure import Goals, percentile, wait_quiet
from tests.unit.test_api_reads import job, run

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

JOBS = 10_000
NAMES = 10_000
ROOT = Path(__file__).resolve().parents[2]


def heavy_state() -> State:
    """10,000 finished jobs, each with a run as big as a real sft run's record, in 10 projects; one
    dataset under 10,000 names."""
    state = State()
    for i in range(1, JOBS + 1):
        j = job(i, "succeeded", 1.0)
        j.project = f"p{i % 10}"
        j.spec = {
            "task_type": "sft",
            "model": "/models/Qwen2.5-7B",
            "dataset": ["chat"],
            "swift": {"lr": 1e-4},
        }
        r = run(f"/state/runs/{i}/1/log", ["GPU-fake-0000"], 1.0, None)
        r.argv = ["swift", "sft", *(f"--arg{k}" for k in range(30))]
        r.env = {"CUDA_VISIBLE_DEVICES": "0", "HF_HUB_OFFLINE": "1"}
        r.progress = JobProgress(
            job_id=i,
            attempt=1,
            kind="train",
            step=60,
            max_steps=60,
            percent=100.0,
            loss=0.25,
            train_speed=1.5,
        )
        j.runs.append(r)
        state.jobs[i] = j
    state.job_names = {j.name: j.id for j in state.jobs.values()}
    sha = "a" * 64
    names = [f"chat-copy-{i:05d}" for i in range(NAMES)]
    state.datasets[sha] = Dataset(
        sha256=sha,
        name=names[0],
        filename=f"{names[0]}.jsonl",
        format="messages",
        task_types=["sft"],
        rlhf_types=[],
        rows=1000,
        bytes=100_000,
        stats={"rows": 1000, "turns": {"mean": 2.0}},
        lora_hints=None,
        accepted_ts=1.0,
        accepted_seq=1,
        names=names,
        drops=NAMES,
    )
    state.dataset_names = dict.fromkeys(names, sha)
    state.last_seq = 2 * JOBS + NAMES
    return state


def serve(folder: str, port: int) -> None:
    """The server process: the daemon's API app on `heavy_state()`."""
    from aiohttp import web

    from daemon.http.api import ReadSide, make_app
    from daemon.log.store import EventStore

    async def main() -> None:
        state = heavy_state()
        store = await EventStore.open(Path(folder) / "llmtraind.sqlite3")
        runner = web.AppRunner(make_app(ReadSide(lambda: state, store, store.path, time.monotonic())))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz_latencies(port: int, seconds: float) -> list[float]:
    """/healthz once every 10 ms over one keep-alive connection; each answer's latency in ms."""
    lat: list[float] = []
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        reader = conn.makefile("rb")
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            conn.sendall(request)
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            assert b'"ok": true' in reader.read(length)
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(max(0.0, 0.010 - (time.perf_counter() - t0)))
    return lat


def body_size(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    json.loads(body)
    return len(body)


def test_healthz_stays_prompt_while_heavy_lists_are_hammered(tmp_path: Path) -> None:
    seconds = 10.0
    port = free_port()
    code = f"from tests.bench.bench_api_heavy import serve; serve({str(tmp_path)!r}, {port})"
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    hammers: list[subprocess.Popen[str]] = []
    try:
        wait_listening(server, port, timeout=120)
        sizes = {p: body_size(port, p) for p in ("/v1/jobs", "/v1/datasets", f"/v1/jobs?after={JOBS - 1000}")}
        wait_quiet("idle /healthz")
        idle = healthz_latencies(port, 5.0)
        for path in ("/v1/jobs", "/v1/datasets"):
            argv = [sys.executable, "-c", RAW_LOAD, f"http://127.0.0.1:{port}{path}", "2", str(seconds), ""]
            hammers.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
        time.sleep(1.5)  # the hammers' warm-up second
        busy = healthz_latencies(port, seconds - 2.0)
        rates = []
        for h in hammers:
            out, _ = h.communicate(timeout=seconds + 60)
            rates.append(float(out.split()[0]))
    finally:
        for h in hammers:
            h.kill()
        server.terminate()
        server.wait(10)
    idle_p99, busy_p99 = percentile(idle, 0.99), percentile(busy, 0.99)
    print(
        f"\n{JOBS:,} jobs, one dataset under {NAMES:,} names; bodies: "
        + ", ".join(f"{p} {n / 1e6:.2f} MB" for p, n in sizes.items())
        + f"\n  hammering (2 connections each): /v1/jobs {rates[0]:.0f} req/s, /v1/datasets {rates[1]:.0f} req/s"
        f"\n  /healthz idle: p50 {percentile(idle, 0.5):.2f} ms, p99 {idle_p99:.2f} ms ({len(idle)} asked)"
        f"\n  /healthz busy: p50 {percentile(busy, 0.5):.2f} ms, p99 {busy_p99:.2f} ms, "
        f"max {max(busy):.2f} ms ({len(busy)} asked)"
    )
    goals = Goals()
    goals.check(
        "  /healthz p99 under load - idle p99", busy_p99 - idle_p99, 100.0, higher_is_better=False, unit=" ms"
    )
    goals.assert_met()
