"""The list routes' paging contract (`limit`, `after`, `next`, the Link header) and the pages kept per
state seq: built once however many ask at once, kept until the state moves, never kept when it moved
while the page was built."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.core.events import CancelRequested, JobProgress, JobsWaiting, NewEvent, Recorded
from daemon.core.state import State
from daemon.core.streams import job_stream
from daemon.http.api import ReadSide, make_app
from daemon.http.openapi import LIST_PAGE, MAX_PAGE
from daemon.http.paging import (
    CHUNK,
    KEPT_EVENTS,
    KEPT_PAGES,
    PAGES,
    JobChanges,
    JobsPage,
    Page,
    PageCache,
    encode_chunked,
    jobs_page,
)
from daemon.http.views import job_ids_page
from daemon.log.store import EventStore
from tests.unit.test_api_reads import dataset, job

pytestmark = pytest.mark.timeout(60)

Client = TestClient[web.Request, web.Application]

JOBS = LIST_PAGE + 7


def queue() -> State:
    state = State()
    for i in range(1, JOBS + 1):
        state.jobs[i] = job(i, "queued", float(i))
        state.jobs[i].project = f"p{i % 3}"
    state.last_seq = JOBS
    return state


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Client, State, EventStore]]:
    state = queue()
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    client: Client = TestClient(
        TestServer(make_app(ReadSide(lambda: state, store, store.path, time.monotonic())))
    )
    await client.start_server()
    try:
        yield client, state, store
    finally:
        await client.close()
        await store.close()


async def test_jobs_come_in_pages_of_the_default_size_with_a_link_to_the_next(
    served: tuple[Client, State, EventStore],
) -> None:
    client, _, _ = served
    first = await client.get("/v1/jobs", params={"state": "queued"})
    body = await first.json()
    assert [j["id"] for j in body["jobs"]] == list(range(1, LIST_PAGE + 1))
    assert body["next"] == body["next_after"] == LIST_PAGE
    link = first.headers["Link"]
    assert link.endswith('>; rel="next"')
    follow = await client.get(link[1 : link.index(">")])
    rest = await follow.json()
    assert [j["id"] for j in rest["jobs"]] == list(range(LIST_PAGE + 1, JOBS + 1))
    assert rest["next"] is None and rest["next_after"] is None and "Link" not in follow.headers
    assert "state=queued" in link  # the filters ride along


async def test_the_limit_is_checked_and_reaches_the_max_page(
    served: tuple[Client, State, EventStore],
) -> None:
    client, _, _ = served
    whole = await (await client.get("/v1/jobs", params={"limit": str(MAX_PAGE)})).json()
    assert len(whole["jobs"]) == JOBS and whole["next"] is None
    for route in ("/v1/jobs", "/v1/projects", "/v1/datasets", "/v1/jobs/1/events", "/v1/projects/p1"):
        for limit in ("0", str(MAX_PAGE + 1), "-3", "x", "1.5"):
            refused = await client.get(route, params={"limit": limit})
            error = (await refused.json())["error"]
            assert refused.status == 400 and error["code"] == "bad_request", (route, limit)
            assert "limit must be" in error["message"]


async def test_newest_first_pages_link_with_before(served: tuple[Client, State, EventStore]) -> None:
    client, _, _ = served
    answer = await client.get("/v1/jobs", params={"before": str(JOBS + 1), "limit": "5"})
    body = await answer.json()
    assert [j["id"] for j in body["jobs"]] == list(range(JOBS, JOBS - 5, -1))
    assert body["next"] == body["next_before"] == JOBS - 4
    assert f"before={JOBS - 4}" in answer.headers["Link"]


async def test_filters_apply_before_paging(served: tuple[Client, State, EventStore]) -> None:
    client, _, _ = served
    got: list[int] = []
    after: object = 0
    while after is not None:
        body = await (
            await client.get("/v1/projects/p1", params={"after": str(after), "limit": "100"})
        ).json()
        got += [j["id"] for j in body["jobs"]]
        after = body["next"]
    assert got == [i for i in range(1, JOBS + 1) if i % 3 == 1]
    projects = await (await client.get("/v1/projects", params={"limit": "2"})).json()
    assert [p["name"] for p in projects["projects"]] == ["p0", "p1"] and projects["next"] == "p1"
    assert (await client.get("/v1/projects/none")).status == 404


async def test_a_jobs_events_come_by_seq_a_page_at_a_time(served: tuple[Client, State, EventStore]) -> None:
    client, state, store = served
    state.jobs[1].name = "one"
    state.job_names = {"one": 1}
    progress = [
        NewEvent(JobProgress(job_id=1, attempt=1, kind="train", step=k, max_steps=9, percent=0.0))
        for k in range(5)
    ]
    await store.append(job_stream(1), progress)
    seqs: list[int] = []
    after: object = 0
    while after is not None:
        answer = await client.get("/v1/jobs/one/events", params={"after": str(after), "limit": "2"})
        body = await answer.json()
        seqs += [e["seq"] for e in body["events"]]
        after = body["next"]
        assert ("Link" in answer.headers) == (after is not None)
    assert len(seqs) == 5 and seqs == sorted(seqs)
    log = await (await client.get("/v1/events", params={"limit": "3"})).json()
    assert len(log["events"]) == 3 and log["next"] == log["next_after"] == log["events"][-1]["seq"]
    end = await (await client.get("/v1/events", params={"after": str(log["next"]), "limit": "3"})).json()
    assert len(end["events"]) == 2 and end["next"] is None and end["next_after"] == end["events"][-1]["seq"]


async def test_a_page_is_built_once_per_seq_and_not_kept_across_a_fold(
    served: tuple[Client, State, EventStore],
) -> None:
    client, state, _ = served
    pages = client.app[PAGES]
    first = await (await client.get("/v1/jobs", params={"limit": "3"})).read()
    assert len(pages) == 1
    state.jobs[2].reason = "changed"
    again = await (await client.get("/v1/jobs", params={"limit": "3"})).read()
    assert again == first  # same seq: the page as kept
    state.last_seq += 1
    moved = await (await client.get("/v1/jobs", params={"limit": "3"})).json()
    assert moved["jobs"][1]["reason"] == "changed"


async def test_concurrent_askers_share_one_build_and_a_moved_state_is_not_kept() -> None:
    state = State()
    cache = PageCache(lambda: state, JobChanges(0))
    builds: list[int] = []

    async def build(s: State) -> Page:
        builds.append(s.last_seq)
        await asyncio.sleep(0.01)
        return Page(f"page at {s.last_seq}".encode(), None)

    pages = await asyncio.gather(*(cache.get("k", build) for _ in range(5)))
    assert {p.body for p in pages if p is not None} == {b"page at 0"} and builds == [0] and len(cache) == 1

    async def fold_meanwhile(s: State) -> Page:
        page = await build(s)
        state.last_seq += 1
        return page

    moved = await cache.get("moving", fold_meanwhile)
    assert moved is not None and moved.body == b"page at 0"
    assert len(cache) == 1  # "moving" was never kept
    for key in range(KEPT_PAGES + 1):
        await cache.get(key, build)
    assert len(cache) == KEPT_PAGES  # the oldest asked for went


def progress(seq: int, job_id: int) -> Recorded:
    event = JobProgress(job_id=job_id, attempt=1, kind="train", step=seq, max_steps=9, percent=0.0)
    return Recorded(seq, job_stream(job_id), seq, 0.0, event)


async def test_a_jobs_page_is_patched_after_progress_and_built_anew_after_other_events() -> None:
    state = queue()
    state.last_seq = 0
    changes = JobChanges(0)
    cache = PageCache(lambda: state, changes)
    builds = 0

    async def build(s: State) -> JobsPage:
        nonlocal builds
        builds += 1
        ids, next_after = job_ids_page(s, limit=5)
        return await jobs_page(s, ids, next_after)

    def reasons(page: Page | None) -> list[str]:
        assert page is not None
        return [j["reason"] for j in json.loads(page.body)["jobs"]]

    first = await cache.get("k", build)
    state.jobs[2].reason, state.jobs[3].reason = "progressed", "unseen"
    changes.recorded([progress(1, 2)])
    state.last_seq = 1
    patched = await cache.get("k", build)
    assert builds == 1 and reasons(patched) == ["", "progressed", "", "", ""]  # job 3 not encoded again
    changes.recorded([progress(2, 400)])  # a job on no kept page
    state.last_seq = 2
    assert await cache.get("k", build) is patched and builds == 1
    state.jobs[4].reason = "waits"
    changes.recorded([Recorded(3, "scheduler", 1, 0.0, JobsWaiting(reasons={"4": "waits"}))])
    state.last_seq = 3
    assert reasons(await cache.get("k", build)) == ["", "progressed", "", "waits", ""] and builds == 1
    many = JobsWaiting(reasons={str(i): "waits" for i in range(4, 5 + CHUNK)})  # more than a patch
    changes.recorded([Recorded(4, "scheduler", 2, 0.0, many)])
    state.last_seq = 4
    assert reasons(await cache.get("k", build)) == ["", "progressed", "unseen", "waits", ""] and builds == 2
    other = Recorded(
        5, "job-2", 9, 0.0, CancelRequested(drop="c", job_id=2, source="c")
    )  # may change its state
    changes.recorded([other])
    state.last_seq = 5
    await cache.get("k", build)
    assert builds == 3
    state.jobs[3].reason = state.jobs[4].reason = ""
    assert patched is not None and first is not None
    assert patched.body == (await build(state)).body  # a patched page reads as one built anew


def test_job_changes_forget_the_oldest_events() -> None:
    changes = JobChanges(10)
    assert changes.since(9, 10) is None and changes.since(10, 10) == set()
    assert changes.since(10, 11) is None  # a seq no event was seen for
    last = 11 + KEPT_EVENTS
    changes.recorded([progress(seq, seq % 7) for seq in range(11, last + 1)])
    assert changes.since(10, last) is None
    assert changes.since(last - 3, last) == {(last - 2) % 7, (last - 1) % 7, last % 7}


async def test_encode_chunked_lets_the_loop_through_between_chunks() -> None:
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.get_running_loop().create_task(count())
    await asyncio.sleep(0)
    before = turns
    text = await encode_chunked(list(range(3 * CHUNK + 1)), lambda i: {"i": i})
    counter.cancel()
    assert text.startswith('[{"i": 0}, {"i": 1}') and text.endswith(f'{{"i": {3 * CHUNK}}}]')
    assert turns - before >= 3
    assert await encode_chunked([], lambda i: i) == "[]"


async def test_dataset_jobs_page_follows_next(tmp_path: Path) -> None:
    state = State()
    sha = "a" * 64
    state.datasets[sha] = dataset(sha, "chat", ["chat"])
    state.dataset_names = {"chat": sha}
    for i in range(1, 6):
        state.jobs[i] = job(i, "queued", float(i))
        state.jobs[i].inputs = {"chat": sha} if i != 3 else {}
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    client: Client = TestClient(
        TestServer(make_app(ReadSide(lambda: state, store, store.path, time.monotonic())))
    )
    await client.start_server()
    try:
        first = await client.get("/v1/datasets/chat/jobs", params={"limit": "2"})
        body = await first.json()
        assert [j["id"] for j in body["jobs"]] == [1, 2] and body["next"] == 2 and "Link" in first.headers
        rest = await (await client.get("/v1/datasets/chat/jobs", params={"after": "2"})).json()
        assert [j["id"] for j in rest["jobs"]] == [4, 5] and rest["next"] is None
        assert (await client.get("/v1/datasets/none/jobs")).status == 404
    finally:
        await client.close()
        await store.close()
