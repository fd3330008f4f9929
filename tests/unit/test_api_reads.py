"""The API's GPU view, status summary and /metrics, on a scripted state and a fake GPU probe (a real
box's GPUs are not there to test with): leases come from the state, foreign processes are those
outside every run's session, and a log path is only ever the state's, inside the state folder."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import get_args

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from daemon.core.events import JobProgress, RunServing
from daemon.core.gpus import GpuProcess, GpuStatus
from daemon.core.state import LIVE, TERMINAL, Dataset, Job, JobState, Run, State, Validation
from daemon.http.api import ReadSide, make_app
from daemon.http.metrics import Scrape, families
from daemon.log.store import EventStore
from daemon.runs.gpus import FakeGpuProbe

pytestmark = pytest.mark.timeout(30)

Client = TestClient[web.Request, web.Application]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def job(job_id: int, state: JobState, submitted: float) -> Job:
    return Job(
        id=job_id,
        name=f"j{job_id}",
        project="p",
        filename=f"j{job_id}.yaml",
        sha256="0" * 64,
        task="sft",
        tuner="lora",
        rlhf_type=None,
        feeds="sft",
        datasets=[],
        priority=0,
        after=[],
        gpus=1,
        gpu_ids=[],
        min_free_memory_mib=None,
        spec={},
        submitted_ts=submitted,
        submitted_seq=job_id,
        state=state,
    )


def run(log: str, uuids: list[str], placed: float, session: int | None) -> Run:
    return Run(
        attempt=1,
        gpu_uuids=uuids,
        gpu_indices=[int(u[-1]) for u in uuids],
        argv=[],
        env={},
        unset_env=[],
        command="swift sft",
        run_dir="/nonexistent",
        output_dir="/nonexistent",
        log=log,
        inputs={},
        resume_from=None,
        timeout_s=None,
        ends_by=None,
        placed_ts=placed,
        session=session,
    )


@pytest.fixture
async def world(tmp_path: Path, stranger: int) -> AsyncIterator[tuple[Client, list[GpuStatus]]]:
    now = time.time()
    state = State()
    running = job(1, "running", now - 100)
    running.runs.append(run(str(tmp_path / "logs" / "1.log"), ["GPU-fake-0001"], now - 40, os.getsid(0)))
    running.runs[0].progress = JobProgress(
        job_id=1, attempt=1, kind="train", step=5, max_steps=10, percent=50.0, loss=0.25, train_speed=1.5
    )
    outside = job(3, "succeeded", now - 300)
    outside.runs.append(run("/etc/hostname", [], now - 290, None))
    state.jobs = {1: running, 2: job(2, "queued", now - 30), 3: outside}
    state.job_names = {j.name: j.id for j in state.jobs.values()}
    probe = FakeGpuProbe(2)
    probe.set_processes(0, [GpuProcess(stranger, 700)])  # its session is not a run's
    probe.set_processes(1, [GpuProcess(os.getpid(), 1000)])  # in the running job's session
    gpus = await probe.snapshot()
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    side = ReadSide(
        lambda: state, store, store.path, time.monotonic(), gpus=lambda: (gpus, time.monotonic() - 1.5)
    )
    client: Client = TestClient(TestServer(make_app(side)))
    await client.start_server()
    try:
        yield client, gpus
    finally:
        await client.close()
        await store.close()


def test_a_deployment_is_up_once_its_server_answers() -> None:
    state = State()
    for job_id, ready in ((1, True), (2, False)):
        serve = job(job_id, "running", 0.0)
        serve.runs.append(run("/nonexistent", [], 1.0, None))
        serve.runs[0].argv = ["/venv/bin/python", "-m", "swift.cli.deploy", "--model", "/m"]
        if ready:
            serve.runs[0].serving = RunServing(job_id=1, attempt=1, url="http://127.0.0.1:8001", models=["m"])
        state.jobs[job_id] = serve
    trains = job(3, "running", 0.0)
    trains.runs.append(run("/nonexistent", [], 1.0, None))
    state.jobs[3] = trains
    scrape = Scrape(state=state, now=2.0, version="0", uptime_s=1.0, healthy=True, last_seq=0)
    (up,) = [f for f in families(scrape) if f.name == "llmtraind_deployment_up"]
    assert [(s.labels["job"], s.labels["url"], s.value) for s in up.samples] == [
        ("1", "http://127.0.0.1:8001", 1),
        ("2", "", 0),
    ]


async def test_gpus_show_our_lease_and_foreign_processes(
    world: tuple[Client, list[GpuStatus]],
) -> None:
    client, _ = world
    resp = await client.get("/v1/gpus")
    body = await resp.json()
    assert resp.status == 200 and 1.4 < body["probed_s_ago"] < 10
    g0, g1 = body["gpus"]
    assert g0["lease"] is None and g0["foreign_processes"] == 1 and g0["memory_used_mib"] == 700
    assert g1["lease"] == {"job": 1, "name": "j1", "attempt": 1} and g1["foreign_processes"] == 0
    assert g1["processes"] == [{"pid": os.getpid(), "used_mib": 1000, "foreign": False}]
    status = await (await client.get("/v1/status")).json()
    assert status["gpus"] | {"probed_s_ago": 0} == {
        "count": 2,
        "memory_total_mib": 2 * 81_920,
        "memory_used_mib": 1700,
        "utilization_pct": 0.0,
        "leased": 1,
        "foreign": 1,
        "free": 0,
        "probed_s_ago": 0,
    }


async def test_metrics_are_computed_from_the_state_at_scrape_time(
    world: tuple[Client, list[GpuStatus]],
) -> None:
    client, _ = world
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(await resp.text())
        for s in fam.samples
    }

    def one(metric: str, /, **labels: str) -> float:
        return samples[(metric, tuple(sorted(labels.items())))]

    assert one("llmtraind_jobs", state="running") == 1 and one("llmtraind_jobs", state="queued") == 1
    assert one("llmtraind_queue_length") == 1 and one("llmtraind_queue_oldest_wait_seconds") >= 30
    assert one("llmtraind_queue_wait_seconds_count") == 2
    assert 60 <= one("llmtraind_queue_wait_seconds_sum") <= 80  # 60 s and 10 s
    assert one("llmtraind_queue_wait_seconds_bucket", le="15.0") == 1
    key = {"job": "1", "name": "j1", "project": "p"}
    assert one("llmtraind_job_progress_ratio", **key) == 0.5 and one("llmtraind_job_loss", **key) == 0.25
    assert one("llmtraind_job_train_speed_seconds_per_iteration", **key) == 1.5
    gpu1 = {"gpu": "1", "uuid": "GPU-fake-0001", "name": "Fake H100"}
    assert one("llmtraind_gpu_leased", **gpu1) == 1
    assert one("llmtraind_gpu_memory_used_bytes", **gpu1) == 1000 * 1024 * 1024
    assert one("llmtraind_gpu_foreign_processes", gpu="0", uuid="GPU-fake-0000", name="Fake H100") == 1
    assert one("llmtraind_sse_clients", feed="events") == 0 and one("llmtraind_sse_dropped_total") == 0
    assert one("llmtraind_intake_rejected_total") == 0 and one("llmtraind_event_log_last_seq") == 0


async def test_a_log_path_outside_the_state_folder_is_never_read(
    world: tuple[Client, list[GpuStatus]],
) -> None:
    client, _ = world
    page = await (await client.get("/v1/jobs/3/logs")).json()
    assert page["text"] == "" and page["size"] == 0
    resp = await client.get("/v1/jobs/3/logs/stream")
    assert resp.status == 204  # finished, and nothing (of its own) to send
    for ref in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "../../etc/passwd"):
        resp = await client.get(f"/v1/jobs/{ref}/logs/stream")
        assert resp.status == 404


async def test_every_route_is_described_and_every_description_is_routed(
    world: tuple[Client, list[GpuStatus]],
) -> None:
    client, _ = world
    assert isinstance(client.server, TestServer)
    routes = {
        r.resource.canonical
        for r in client.server.app.router.routes()
        if r.resource is not None and r.method == "GET"
    }
    spec = await (await client.get("/openapi.json")).json()
    assert set(spec["paths"]) == routes
    assert spec == json.loads((SCHEMAS / "openapi.json").read_text())


async def test_status_follows_each_event_and_its_clocks_run(tmp_path: Path) -> None:
    """/v1/status is rebuilt when the state moves on (or the probe, or health); between two events
    only its clocks change."""
    state = State()
    probed = time.monotonic() - 3.0
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    side = ReadSide(lambda: state, store, store.path, time.monotonic() - 10.0, gpus=lambda: ([], probed))
    client: Client = TestClient(TestServer(make_app(side)))
    await client.start_server()
    try:
        first = await (await client.get("/v1/status")).json()
        time.sleep(0.01)
        second = await (await client.get("/v1/status")).json()
        assert 10 <= first["uptime_s"] < second["uptime_s"]
        assert 3 <= first["gpus"].pop("probed_s_ago") < second["gpus"].pop("probed_s_ago")
        del first["uptime_s"], second["uptime_s"]
        assert first == second
        assert first["jobs"]["queued"] == 0 and first["gpus"]["count"] == 0 and first["healthy"]
        state.jobs = {1: job(1, "queued", time.time())}
        state.last_seq += 1
        third = await (await client.get("/v1/status")).json()
        assert third["jobs"]["queued"] == 1 and third["last_seq"] == first["last_seq"] + 1
    finally:
        await client.close()
        await store.close()


async def test_the_status_page_takes_the_token_once_and_keeps_it_as_a_cookie(tmp_path: Path) -> None:
    """EventSource cannot send a header: `/?token=` sets an HttpOnly cookie every route accepts."""
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    side = ReadSide(State, store, store.path, time.monotonic(), token="s3cret")
    client: Client = TestClient(TestServer(make_app(side)))
    await client.start_server()
    try:
        page = await client.get("/")
        assert page.status == 401 and "/?token=" in await page.text()
        assert (await client.get("/?token=wrong", allow_redirects=False)).status == 401
        assert (await client.get("/v1/status")).status == 401
        assert not client.session.cookie_jar.filter_cookies(client.make_url("/"))
        login = await client.get("/?token=s3cret", allow_redirects=False)
        assert login.status == 303 and login.headers["Location"] == "/"
        cookie = login.cookies["llmtraind_token"]
        assert cookie.value == "s3cret" and cookie["httponly"] and cookie["samesite"] == "Strict"
        page = await client.get("/")
        assert page.status == 200 and "EventSource" in await page.text()
        assert (await client.get("/v1/status")).status == 200
        assert (await client.get("/v1/events/stream", headers={"Last-Event-ID": "0"})).status == 200
        client.session.cookie_jar.clear()
        assert (await client.get("/v1/status")).status == 401
        bearer = await client.get("/v1/status", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status == 200
    finally:
        await client.close()
        await store.close()


async def test_the_status_page_groups_jobs_by_the_daemons_own_state_names(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    client: Client = TestClient(TestServer(make_app(ReadSide(State, store, store.path, time.monotonic()))))
    await client.start_server()
    try:
        text = await (await client.get("/")).text()
        groups: dict[str, list[str]] = {
            "running": ["running"],
            "waiting": [s for s in LIVE if s != "running"],
            "terminal": list(TERMINAL),
        }
        assert f"const STATES = {json.dumps(groups)};" in text
        assert "/*JOB_STATES*/" not in text
        assert {s for group in groups.values() for s in group} == set(get_args(JobState))
    finally:
        await client.close()
        await store.close()


def dataset(sha: str, name: str, names: list[str]) -> Dataset:
    return Dataset(
        sha256=sha,
        name=name,
        filename=f"{name}.jsonl",
        format="sft",
        task_types=["sft"],
        rlhf_types=[],
        rows=3,
        bytes=30,
        stats={},
        lora_hints=None,
        accepted_ts=1.0,
        accepted_seq=1,
        names=names,
        drops=len(names),
    )


async def _pages(client: Client, route: str, key: str, limit: int) -> tuple[list[list[object]], list[object]]:
    """Every page of a list route, following `next_after`: the pages' keys, and the `next_after`s."""
    pages: list[list[object]] = []
    nexts: list[object] = []
    after: object = ""
    while after is not None:
        body = await (await client.get(route, params={"after": str(after), "limit": str(limit)})).json()
        pages.append([entry[key] for entry in body[route.split("/")[2]]])
        after = body["next_after"]
        nexts.append(after)
    return pages, nexts


async def test_lists_come_a_page_at_a_time_and_each_dataset_once(tmp_path: Path) -> None:
    state = State()
    for i in range(1, 8):
        state.jobs[i] = job(i, "queued" if i % 2 else "succeeded", float(i))
        state.jobs[i].project = "odd" if i % 2 else "even"
    many = [f"n{i:03d}" for i in range(300)]
    state.datasets = {
        "a" * 64: dataset("a" * 64, "n000", many),
        "b" * 64: dataset("b" * 64, "n001", ["n001"]),
    }
    state.dataset_names = dict.fromkeys(many, "a" * 64) | {"n001": "b" * 64}  # n001 now means other bytes
    state.validating = {
        "d1": Validation("d1", "fresh", 10, 5, 1, 1.0),
        "d2": Validation("d2", "n150", 8, 2, 0, 1.0),
    }
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    client: Client = TestClient(
        TestServer(make_app(ReadSide(lambda: state, store, store.path, time.monotonic())))
    )
    await client.start_server()
    try:
        whole = await (await client.get("/v1/datasets")).json()
        assert whole["next_after"] is None
        fresh, first, other = whole["datasets"]  # by name
        assert (first["name"], first["state"], first["names"]) == ("n000", "validating", many)
        assert first["validation"]["bytes_done"] == 2  # n150, one of its names, is being read again
        assert (other["name"], other["state"], other["names"]) == ("n001", "ready", ["n001"])
        assert (fresh["name"], fresh["state"], fresh["validation"]["percent"]) == (
            "fresh",
            "validating",
            50.0,
        )
        assert await _pages(client, "/v1/datasets", "name", 2) == (
            [["fresh", "n000"], ["n001"]],
            ["n000", None],
        )
        assert await _pages(client, "/v1/jobs", "id", 3) == ([[1, 2, 3], [4, 5, 6], [7]], [3, 6, None])
        assert await _pages(client, "/v1/projects", "name", 1) == ([["even"], ["odd"]], ["even", None])
        odd = await (
            await client.get("/v1/jobs", params={"project": "odd", "after": "1", "limit": "2"})
        ).json()
        assert [j["id"] for j in odd["jobs"]] == [3, 5] and odd["next_after"] == 5
        queued = await (await client.get("/v1/projects/odd", params={"after": "5"})).json()
        assert [j["id"] for j in queued["jobs"]] == [7] and queued["next_after"] is None
        assert (await client.get("/v1/projects/odd", params={"after": "7"})).status == 200
        assert (await client.get("/v1/projects/none")).status == 404
        whole_jobs = await (await client.get("/v1/jobs")).json()
        assert len(whole_jobs["jobs"]) == 7 and whole_jobs["next_after"] is None
        for route in ("/v1/jobs", "/v1/datasets", "/v1/projects"):
            for limit in ("0", "5001", "x"):
                refused = await client.get(route, params={"limit": limit})
                assert refused.status == 400 and (await refused.json())["error"]["code"] == "bad_request"
    finally:
        await client.close()
        await store.close()


async def test_the_bearer_scheme_is_case_insensitive_and_refusals_are_json(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    client: Client = TestClient(
        TestServer(make_app(ReadSide(State, store, store.path, time.monotonic(), token="s3")))
    )
    await client.start_server()
    try:
        for given in ("Bearer s3", "bearer s3", "BEARER s3", "bEaReR   s3"):
            assert (await client.get("/v1/status", headers={"Authorization": given})).status == 200, given
        for given in ("Bearer s4", "Basic s3", "Bearers3", "s3", "Bearer", "Bearer s3 s3"):
            refused = await client.get("/v1/status", headers={"Authorization": given})
            body = await refused.json()
            assert refused.status == 401 and body["error"]["code"] == "unauthorized", given
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"):
            refused = await client.request(method, "/v1/status")
            assert refused.status == 405 and (await refused.json())["error"]["code"] == "method_not_allowed"
    finally:
        await client.close()
        await store.close()
