"""The SSE feeds of a real daemon on loopback (reliability.md §5, X1-X6): many clients and a stalled
one, reconnects with Last-Event-ID, bad ids, keep-alives, a spec-conformant parse, shutdown with
streams open, and the token and read-only rules on every new route.

Job logs come from a fake `[swift] python` (a script that ignores swift's arguments but --model,
where it reads its plan), so a run writes chosen lines at a chosen pace without real swift.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.daemon_proc import Daemon
from tests.sse_client import SseEvent, SseParser, open_stream

pytestmark = pytest.mark.timeout(120)

FAST_SSE = {
    "LLMTRAIND_API_SSE_KEEPALIVE_S": "0.2",
    "LLMTRAIND_API_SSE_SEND_TIMEOUT_S": "1",
    "LLMTRAIND_API_SSE_MAX_STREAMS": "1100",
    "LLMTRAIND_GPUS_CPU_SLOTS": "1",
}

FAKE = """#!{python} -IS
import json, os, sys, time
args = sys.argv[1:]
plan = json.load(open(os.path.join(args[args.index("--model") + 1], "plan.json")))
out = sys.stdout.buffer
def line(i):
    if i % 7 == 0:
        return "Train: %3d%%|#\\rTrain: %3d%%|##\\rTrain: %3d%%|###\\n" % (i, i + 1, i + 2)
    if i % 11 == 0:
        return "\\n"
    if i % 13 == 0:
        return "step %d: données ✓ 日本語 ±\\n" % i
    if i == plan.get("long_at"):
        return ("x" * 999 + "\\r") * 70 + "y" * 100_000 + "\\n"
    return "step %d loss %.4f\\n" % (i, 1.0 / (i + 1))
for i in range(plan["lines"]):
    out.write(line(i).encode())
    out.flush()
    time.sleep(plan["gap"])
while plan.get("hold") and os.path.exists(plan["hold"]):
    time.sleep(0.05)
out.write(plan.get("tail", "").encode())
"""
"""Writes `lines` lines `gap` s apart (tqdm-like CR lines, empty lines, non-ASCII, one line of
170 KB with CRs in it, one without), waits while the `hold` file exists, then writes `tail`."""

ROW = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


def sse_daemon(factory: type[Daemon], root: Path, token: str = "", **env: str) -> Daemon:
    fake = root / "fake-swift"
    root.mkdir(parents=True, exist_ok=True)
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    return factory(
        root, token=token, extra_config=f"[swift]\npython = {json.dumps(str(fake))}\n", env=FAST_SSE | env
    ).start()


def status(d: Daemon) -> dict[str, Any]:
    code, body = d.get("/v1/status")
    assert code == 200
    return dict(body)


def wait_seq(d: Daemon, seq: int, timeout: float = 60) -> None:
    d.wait_for(f"last seq {seq}", lambda: status(d)["last_seq"] >= seq, timeout)


def dataset(d: Daemon, name: str = "chat") -> None:
    d.drop(f"{name}.jsonl", ROW)

    def ready() -> bool:
        code, body = d.get(f"/v1/datasets/{name}")
        return code == 200 and body["state"] == "ready"

    d.wait_for(f"dataset {name}", ready, 30)


def start_job(d: Daemon, name: str, **plan: Any) -> dict[str, Any]:
    """A job running the fake with `plan`; returns it once it runs."""
    model = d.root / f"model-{name}"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "plan.json").write_text(json.dumps({"lines": 0, "gap": 0.0} | plan))
    d.drop(f"{name}.yaml", f"name: {name}\ntask_type: sft\nmodel_name: {model}\ndataset: chat\n")

    def running() -> dict[str, Any] | None:
        code, body = d.get(f"/v1/jobs/{name}")
        return body if code == 200 and body["state"] in ("running", "succeeded") else None

    found: dict[str, Any] = d.wait_for(f"job {name} running", running, 30)
    return found


def finished(d: Daemon, name: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        code, body = d.get(f"/v1/jobs/{name}")
        return body if code == 200 and body["state"] in ("succeeded", "failed", "cancelled") else None

    found: dict[str, Any] = d.wait_for(f"job {name} finished", check, timeout)
    return found


def drop_many(d: Daemon, count: int, prefix: str, gap: float = 0.0) -> threading.Thread:
    """Drop `count` copies of one dataset under new names (each is one event) from a thread."""

    def run() -> None:
        for i in range(count):
            d.drop(f"{prefix}{i}.jsonl", '{"text": "the same row"}\n')
            if gap:
                time.sleep(gap)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def log_bytes_from(events: list[SseEvent], start: int) -> bytes:
    """A job's log rebuilt from its SSE events: ids must chain from `start` with no gap or overlap."""
    out = b""
    pos = start
    for e in events:
        if e.type != "message":
            continue
        end = int(e.last_event_id)
        text = e.data.replace("\n", "\r").encode()
        assert end - pos in (len(text), len(text) + 1), (pos, end, e.data[:80])
        out += text + (b"\n" if end - pos == len(text) + 1 else b"")
        pos = end
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(d: Daemon, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(d.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))


# -- X1: many clients and one that never reads ---------------------------------------------------


def stalled_client(url: str, path: str) -> socket.socket:
    """Connects with a tiny receive buffer, asks for the stream, and never reads."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


async def count_ids(s: aiohttp.ClientSession, url: str, target: list[int], seen: list[int]) -> None:
    """Collect the ids of one stream (a regex over whole events: cheap enough for 1,000 clients)."""
    async with s.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        assert resp.status == 200
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            cut = buf.rfind(b"\n\n")
            if cut < 0:
                continue
            seen.extend(int(m) for m in re.findall(rb"^id: (\d+)$", buf[:cut], re.M))
            buf = buf[cut + 2 :]
            if target[0] and seen and seen[-1] >= target[0]:
                return


async def many_clients_and_a_stalled_one(d: Daemon, clients: int, events: int) -> None:
    assert d.proc is not None
    drop_many(d, 300, "warm").join()
    wait_seq(d, 301)
    warm = status(d)["last_seq"]
    rss_before = rss_kib(d.proc.pid)
    target = [0]
    seen: list[list[int]] = [[] for _ in range(clients)]
    stalled = stalled_client(d.url, "/v1/events/stream")
    try:
        async with session() as s:
            readers = [
                asyncio.create_task(count_ids(s, d.url + "/v1/events/stream", target, ids)) for ids in seen
            ]
            async with asyncio.timeout(60):  # every reader connected and caught up before the burst
                while not all(ids and ids[-1] >= warm for ids in seen):
                    for reader in readers:
                        if reader.done():
                            reader.result()  # a reader that failed says why
                    await asyncio.sleep(0.05)
            start = status(d)["last_seq"]
            t0 = time.monotonic()
            await asyncio.to_thread(drop_many(d, events, "burst").join)
            await asyncio.to_thread(wait_seq, d, start + events, 120)
            target[0] = status(d)["last_seq"]
            appended_s = time.monotonic() - t0
            await asyncio.wait_for(asyncio.gather(*readers), 60)
            delivered_s = time.monotonic() - t0
        for ids in seen:
            assert ids == list(range(1, target[0] + 1))
        assert metric(d, "llmtraind_sse_dropped_total") >= 1
        rss_after = rss_kib(d.proc.pid)
    finally:
        stalled.close()
    grew_mib = (rss_after - rss_before) / 1024
    print(
        f"\n{clients} clients got all {target[0]} events {delivered_s:.1f} s after the burst began "
        f"(appended in {appended_s:.1f} s); the stalled client was dropped; daemon RSS "
        f"{rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB"
    )
    # The state grows too (about 2.5 MiB per 1,000 names here); the stalled stream alone would hold
    # the burst (~1 MB per 3,000 events) with unbounded buffers, per-client queues once per client,
    # and a per-client replay of the log (no shared pages) grew it by ~45 MiB for 100 clients.
    assert grew_mib < 16 + events / 250, f"daemon RSS grew {grew_mib:.0f} MiB"


async def test_x1_100_clients_get_everything_and_a_stalled_one_is_dropped(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d")
    await many_clients_and_a_stalled_one(d, clients=100, events=3000)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_x1_1000_clients_and_10000_events(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d")
    await many_clients_and_a_stalled_one(d, clients=1000, events=10_000)


# -- X2: reconnects with Last-Event-ID -------------------------------------------------------------


async def reconnect_often(url: str, times: int, done: Callable[[list[SseEvent]], bool]) -> list[SseEvent]:
    """Leave at random points (a random byte count, mid-event too, or a random time) `times` times,
    resuming from the last id each time
    (as EventSource does: the id of the last event dispatched); then read until the server ends the
    stream or `done(everything received)`."""
    rng = random.Random(5)
    received: list[SseEvent] = []
    last: str | None = None

    def finished_with(more: list[SseEvent]) -> bool:
        return done(received + more)

    async with session() as s:
        for i in range(times + 1):
            final = i == times
            stream = await open_stream(
                s,
                url,
                headers={} if last is None else {"Last-Event-ID": last},
                max_bytes=None if final else rng.randint(1, 6000),
                max_seconds=None if final else rng.uniform(0.01, 0.3),
                until=finished_with if final else None,
            )
            if stream.status == 204:
                break
            assert stream.status == 200, stream
            received += stream.parser.events
            if stream.parser.last_event_id:
                last = stream.parser.last_event_id
    return received


async def test_x2_the_event_feed_resumes_exactly_100_times(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d")
    dropper = drop_many(d, 400, "x", gap=0.004)
    target = [0]

    def done(events: list[SseEvent]) -> bool:
        return bool(target[0]) and bool(events) and int(events[-1].last_event_id) >= target[0]

    async def finish() -> None:
        await asyncio.to_thread(dropper.join)
        await asyncio.to_thread(wait_seq, d, 400)
        target[0] = status(d)["last_seq"]

    closer = asyncio.create_task(finish())
    got = await reconnect_often(d.url + "/v1/events/stream", 100, done)
    await closer
    seqs = [int(e.last_event_id) for e in got]
    assert seqs == list(range(1, target[0] + 1)), "a gap, a duplicate or a reorder"
    code, page = d.get("/v1/events?limit=1000&after=0")
    expected = page["events"]
    while len(expected) < target[0]:
        expected += d.get(f"/v1/events?limit=1000&after={expected[-1]['seq']}")[1]["events"]
    assert [json.loads(e.data) for e in got] == expected[: target[0]]


async def test_x2_a_job_log_resumes_exactly_100_times(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d")
    dataset(d)
    body = start_job(d, "talk", lines=900, gap=0.004, long_at=300, tail="the end, without a newline")
    got = await reconnect_often(d.url + "/v1/jobs/talk/logs/stream", 100, lambda _: False)
    end = [e for e in got if e.type == "end"]
    assert len(end) == 1 and json.loads(end[0].data)["state"] == "succeeded"
    log = Path(finished(d, "talk")["run"]["log"]).read_bytes()
    assert log_bytes_from(got, 0) == log
    assert "step 13: données ✓ 日本語 ±" in {e.data for e in got}
    assert "Train:   7%|#\nTrain:   8%|##\nTrain:   9%|###" in {e.data for e in got}
    assert body["id"] == json.loads(end[0].data)["job"]
    async with session() as s:  # the whole log was had: a reconnect is told to stop (204)
        again = await open_stream(
            s, d.url + "/v1/jobs/talk/logs/stream", headers={"Last-Event-ID": str(len(log))}
        )
    assert again.status == 204


def test_an_http_1_0_client_follows_a_log_unchunked(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    """HTTP/1.0 has no chunked encoding: the frames come raw and the stream ends by closing."""
    d = sse_daemon(daemon_factory, tmp_path / "d")
    dataset(d)
    start_job(d, "old", lines=200, gap=0.01)
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /v1/jobs/old/logs/stream HTTP/1.0\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head[:200]
    assert b"transfer-encoding" not in head.lower()
    strays = [x for x in re.split(rb"\r\n|\r|\n", body) if x and not re.match(rb"(id|data|event|retry)?:", x)]
    assert strays == [], f"not SSE lines (chunk framing?): {strays[:3]}"
    events = SseParser().feed(body, final=True)
    log = Path(finished(d, "old")["run"]["log"]).read_bytes()
    assert log_bytes_from(events, 0) == log and [e.type for e in events][-1] == "end"


# -- X3: bad Last-Event-ID -------------------------------------------------------------------------

BAD_IDS = ["abc", "-1", "1.5", "٣", "9" * 10_000, "x" * 10_000, "99999999999999999999", "1 2"]


async def test_x3_bad_ids_get_a_defined_answer(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d")
    dataset(d)
    start_job(d, "short", lines=20, gap=0.0)
    log = Path(finished(d, "short")["run"]["log"]).read_bytes()
    last_seq = status(d)["last_seq"]
    feeds = {"/v1/events/stream": last_seq, "/v1/jobs/short/logs/stream": len(log)}
    async with session() as s:
        for path, end in feeds.items():
            for bad in [*BAD_IDS, str(end + 1000)]:
                stream = await open_stream(s, d.url + path, headers={"Last-Event-ID": bad}, max_events=2)
                assert stream.status == 200, (path, bad[:20])
                notes = stream.parser.comments
                assert any("ignored Last-Event-ID" in n or "past the end" in n for n in notes), notes
                assert stream.parser.events[0].last_event_id == ("1" if "events" in path else "1")
            # the end itself: the event feed waits for news; a finished job's feed says it has no more
            stream = await open_stream(
                s, d.url + path, headers={"Last-Event-ID": str(end)}, until_comments=2, max_events=1
            )
            assert stream.status == (200 if "events" in path else 204)
            # past what the HTTP layer takes (16 KiB a header field): its own 400, before any stream
            resp = await s.get(d.url + path, headers={"Last-Event-ID": "9" * 20_000})
            assert resp.status == 400
            for query in ("after=abc", "after=-1", f"after={'9' * 5000}"):
                resp = await s.get(f"{d.url}{path}?{query}")
                assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_request"
    # aiohttp logs the over-long header it refused (with a traceback); nothing else went wrong
    for block in d.log().split(" ERROR ")[1:]:
        assert block.startswith("aiohttp.server: Error handling request") and "LineTooLong" in block, block


# -- X4: keep-alive comments -----------------------------------------------------------------------


async def test_x4_idle_streams_get_keepalive_comments(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d")
    dataset(d)
    hold = tmp_path / "hold"
    hold.touch()
    start_job(d, "idle", lines=1, gap=0.0, hold=str(hold))
    async with session() as s:
        for path in (f"/v1/events/stream?after={status(d)['last_seq']}", "/v1/jobs/idle/logs/stream"):
            t0 = time.monotonic()
            stream = await asyncio.wait_for(open_stream(s, d.url + path, until_comments=4), 10)
            idle = time.monotonic() - t0
            assert stream.parser.comments.count(" keep-alive") >= 3 and idle < 3, (path, idle)
            assert stream.headers["Content-Type"] == "text/event-stream"
            assert (
                stream.headers["Cache-Control"] == "no-cache" and stream.headers["X-Accel-Buffering"] == "no"
            )
            assert stream.parser.retry_ms == 2000
    hold.unlink()
    finished(d, "idle")


# -- X5: a spec-conformant parser reads what was meant ----------------------------------------------


async def test_x5_multiline_and_non_ascii_data_round_trip(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d")
    d.drop("données-✓-日本.jsonl", ROW)
    d.drop("bad\u2028name.jsonl", "not json\n")
    wait_seq(d, 3)
    async with session() as s, s.get(d.url + "/v1/events/stream?after=0") as resp:
        raw = b""
        while raw.count(b"\nid: ") + raw.startswith(b"id: ") < 3:
            raw += await asyncio.wait_for(resp.content.read(65536), 10)
    whole, bytewise = SseParser(), SseParser()
    whole.feed(raw)
    for i in range(len(raw)):
        bytewise.feed(raw[i : i + 1])
    assert whole.events == bytewise.events and len(whole.events) >= 3
    expected = d.get("/v1/events?after=0&limit=3")[1]["events"]
    assert [json.loads(e.data) for e in whole.events[:3]] == expected
    names = json.dumps([json.loads(e.data)["data"] for e in whole.events], ensure_ascii=False)
    assert "données-✓-日本" in names and "bad\u2028name.jsonl" in names


# -- X6: shutdown with 1,000 streams open ----------------------------------------------------------


async def test_x6_sigterm_with_1000_open_streams_exits_in_time(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d", LLMTRAIND_API_SSE_KEEPALIVE_S="15")
    assert d.proc is not None
    async with session() as s:
        responses = await asyncio.gather(
            *(
                s.get(d.url + "/v1/events/stream", timeout=aiohttp.ClientTimeout(total=None))
                for _ in range(1000)
            )
        )
        assert all(r.status == 200 for r in responses)
        assert metric(d, 'llmtraind_sse_clients{feed="events"}') == 1000
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(d.proc.wait, 30)
        took = time.monotonic() - t0
        bodies = await asyncio.gather(
            *(asyncio.wait_for(r.read(), 5) for r in responses), return_exceptions=True
        )
        ended = sum(1 for b in bodies if isinstance(b, bytes) and b.startswith(b"retry: 2000"))
        for r in responses:
            r.close()
    print(f"\nSIGTERM with 1,000 open streams: exited {rc} after {took:.2f} s; {ended} streams ended cleanly")
    assert rc == 0 and took < 10  # [daemon] stop_timeout_s
    assert ended >= 990


# -- the token and the read-only rule on the new routes -------------------------------------------

NEW_ROUTES = ["/v1/events/stream", "/v1/jobs/1/logs/stream", "/v1/gpus", "/metrics", "/openapi.json"]


async def test_new_routes_need_the_token_and_answer_405_to_writes(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = sse_daemon(daemon_factory, tmp_path / "d", token="s3cret")
    dataset(d)
    start_job(d, "one", lines=3, gap=0.0)
    finished(d, "one")
    auth = {"Authorization": "Bearer s3cret"}
    async with session() as s:
        for route in NEW_ROUTES:
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                resp = await s.request(method, d.url + route, headers=auth)
                assert resp.status == 405, (method, route)
                assert (await resp.json())["error"]["code"] == "method_not_allowed"
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                resp = await s.get(d.url + route, headers=headers)
                assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
            resp = await s.get(d.url + route, headers=auth)
            assert resp.status == 200, route
            resp.close()
            head = await s.head(d.url + route, headers=auth)
            assert head.status == 200, route
        assert (await s.get(d.url + "/healthz")).status == 200
    os.environ.get("unused")
