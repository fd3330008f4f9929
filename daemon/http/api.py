"""The read-only HTTP API. It sees the folded state, the log's read side and the last GPU probe,
never the runner or the scheduler.

Every answer is JSON (but the SSE streams, /metrics and /openapi.json); every error is
`{"error": {"code", "message"}}` with its status; any method but GET and HEAD is 405, whatever the
path; with `[api] token` set, every route but /healthz needs it (`middleware`). This module builds
the app and holds the routes but those under /v1/jobs (`job_routes`); `readside` is what they see.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from daemon import __version__
from daemon.core.state import State
from daemon.http.dataset_routes import dataset_jobs, dataset_rows
from daemon.http.job_routes import (
    job,
    job_artifacts,
    job_events,
    job_log_stream,
    job_logs,
    job_metrics,
    jobs,
)
from daemon.http.metrics import CONTENT_TYPE, Scrape, render
from daemon.http.middleware import error, errors_and_auth, int_param
from daemon.http.notify_route import notify_targets
from daemon.http.openapi import MAX_PAGE, MAX_POSITION, openapi_spec
from daemon.http.paging import (
    PAGES,
    JobChanges,
    Page,
    PageCache,
    encode_chunked,
    jobs_page,
    page_body,
    page_limit,
    page_response,
)
from daemon.http.readside import READ_SIDE, SSE_HUB, GpuReading, ReadSide
from daemon.http.sse import SseHub, StreamRefused
from daemon.http.state_answer import StateAnswer, send_pieces, state_pieces
from daemon.http.views import (
    dataset_view,
    datasets_page,
    gpu_summary,
    gpus_view,
    intake_view,
    job_counts,
    job_ids_page,
    page_states,
    projects_page,
    recorded_json,
)
from daemon.log.projector import load_state_at_path

__all__ = ["GpuReading", "ReadSide", "make_app"]

MAX_HEADER_FIELD = 16 * 1024
"""aiohttp refuses longer header fields itself (400, text). Its default, 8 KiB, would refuse a 10 kB
Last-Event-ID before the stream could ignore it, as it does every other malformed one."""


async def healthz(request: web.Request) -> web.Response:
    side = request.app[READ_SIDE]
    ok, why = side.health()
    body = {"ok": ok, "reason": why, "disk": dict(side.disk())}
    return web.json_response(body, status=200 if ok else 503)


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:  # gone, or in another pid namespace
        return None


def _gpus(side: ReadSide, state: State) -> tuple[list[dict[str, Any]], float]:
    found, probed = side.gpus()
    return gpus_view(state, found, _session_of), round(time.monotonic() - probed, 3)


@dataclass
class _StatusCache:
    """/v1/status as JSON left open at the end, for the state, probe and health it was made from:
    dashboards poll it, and between two events only its clocks change."""

    key: tuple[object, ...] = ()
    head: str = ""
    gpus: str = ""


STATUS_CACHE = web.AppKey("status_cache", _StatusCache)
STATE_ANSWER = web.AppKey("state_answer", StateAnswer)


async def status(request: web.Request) -> web.Response:
    side = request.app[READ_SIDE]
    state = side.state()
    ok, why = side.health()
    found, probed = side.gpus()
    cache = request.app[STATUS_CACHE]
    key = (state.last_seq, probed, ok, why)
    if cache.key != key:
        daemon = state.daemon
        head = {
            "version": __version__,
            "last_seq": state.last_seq,
            "healthy": ok,
            "health_reason": why,
            "pid": daemon.pid if daemon else None,
            "boot_id": daemon.boot_id if daemon else None,
            "daemon_starts": state.daemon_starts,
            "unclean_stops": state.unclean_stops,
            "jobs": job_counts(state),
            "datasets": len(state.datasets),
            "intake": intake_view(state),
        }
        gpus = gpu_summary(gpus_view(state, found, _session_of))
        cache.key, cache.head, cache.gpus = key, json.dumps(head)[:-1], json.dumps(gpus)[:-1]
    now = time.monotonic()
    uptime, ago = round(now - side.started_monotonic, 3), round(now - probed, 3)
    executor, disk = json.dumps(side.executor()), json.dumps(side.disk())
    text = (
        f'{cache.head}, "uptime_s": {uptime!r}, "executor": {executor}, "disk": {disk}, '
        f'"gpus": {cache.gpus}, "probed_s_ago": {ago!r}}}}}'
    )
    return web.Response(text=text, content_type="application/json")


async def datasets(request: web.Request) -> web.Response:
    after = request.query.get("after", "")
    limit = page_limit(request)

    async def build(state: State) -> Page:
        found, next_after = datasets_page(state, after=after, limit=limit)
        return page_body("", "datasets", await encode_chunked(found, _same), next_after)

    return page_response(request, await request.app[PAGES].get(("datasets", after, limit), build))


async def dataset(request: web.Request) -> web.Response:
    view = dataset_view(request.app[READ_SIDE].state(), request.match_info["name"])
    if view is None:
        raise web.HTTPNotFound()
    return web.json_response(view)


async def projects(request: web.Request) -> web.Response:
    after = request.query.get("after", "")
    limit = page_limit(request)

    async def build(state: State) -> Page:
        found, next_after = projects_page(state, after=after, limit=limit)
        return page_body("", "projects", await encode_chunked(found, _same), next_after)

    return page_response(request, await request.app[PAGES].get(("projects", after, limit), build))


async def project(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    after = int_param(request, "after", 0, 0, MAX_POSITION)
    limit = page_limit(request)

    async def build(state: State) -> Page | None:
        if not any(j.project == name for j in state.jobs.values()):
            return None
        ids, next_after = job_ids_page(state, project=name, after=after, limit=limit)
        return await jobs_page(state, ids, next_after, fields=f'"name": {json.dumps(name)}')

    return page_response(request, await request.app[PAGES].get(("project", name, after, limit), build))


def _same(entry: dict[str, Any]) -> dict[str, Any]:
    return entry


async def events(request: web.Request) -> web.Response:
    """A page of the log. `next_after` is where to poll from next however full the page (the
    log's end when it is empty); `next` is null once the page reaches the log's end."""
    side = request.app[READ_SIDE]
    after = int_param(request, "after", 0, 0, MAX_POSITION)
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    page = await side.store.read(after, limit)
    next_after = page[-1].seq if page else after
    found = await encode_chunked(page, recorded_json)
    more = len(page) == limit and next_after < side.store.last_seq
    body = f'{{"events": {found}, "next": {next_after if more else "null"}, "next_after": {next_after}}}'
    return page_response(request, Page(body.encode(), next_after if more else None))


async def state_at(request: web.Request) -> web.StreamResponse:
    side = request.app[READ_SIDE]
    live = side.state()
    at = int_param(request, "at", live.last_seq, 0, MAX_POSITION)
    if at >= live.last_seq:
        return await send_pieces(request, await request.app[STATE_ANSWER].pieces())
    folded = await asyncio.to_thread(load_state_at_path, side.db_path, at)
    return await send_pieces(request, await state_pieces(folded))


async def gpus(request: web.Request) -> web.Response:
    side = request.app[READ_SIDE]
    found, probed_s_ago = _gpus(side, side.state())
    return web.json_response({"gpus": found, "probed_s_ago": probed_s_ago})


async def metrics(request: web.Request) -> web.Response:
    side, hub = request.app[READ_SIDE], request.app[SSE_HUB]
    state = side.state()
    found, _ = _gpus(side, state)
    scrape = Scrape(
        state=state,
        now=time.time(),
        version=__version__,
        uptime_s=time.monotonic() - side.started_monotonic,
        healthy=side.health()[0],
        last_seq=side.store.last_seq,
        gpus=found,
        sse_clients=hub.clients(),
        sse_dropped=hub.dropped,
        sse_buffered_bytes=hub.buffered_bytes(),
        notify=side.notify(),
        executor=side.executor(),
        disk=side.disk(),
    )
    return web.Response(body=render(scrape), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())


async def events_stream(request: web.Request) -> web.StreamResponse:
    after = int_param(request, "after", -1, 0, MAX_POSITION)
    try:
        return await request.app[SSE_HUB].events(request, None if after < 0 else after)
    except StreamRefused as e:
        return error(e.status, e.code, e.message)


PAGE = Path(__file__).with_name("page") / "index.html"
_STATES_SLOT = "/*JOB_STATES*/null"
"""Where the page's script gets the job states, so it groups jobs by the daemon's own names."""


async def page(request: web.Request) -> web.Response:
    """The read-only status page: one static file, no build step, nothing fetched from elsewhere;
    its script reads this API and follows /v1/events/stream with EventSource."""
    text = await asyncio.to_thread(PAGE.read_text, "utf-8")
    text = text.replace(_STATES_SLOT, json.dumps(page_states()), 1)
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-cache"})


def make_app(side: ReadSide) -> web.Application:
    app = web.Application(middlewares=[errors_and_auth], handler_args={"max_field_size": MAX_HEADER_FIELD})
    app[READ_SIDE] = side
    app[STATUS_CACHE] = _StatusCache()
    changes = JobChanges(side.state().last_seq)
    side.store.add_listener(changes.recorded)
    app[PAGES] = PageCache(side.state, changes)
    answer = app[STATE_ANSWER] = StateAnswer(side.state)
    side.store.add_listener(answer.recorded)
    hub = app[SSE_HUB] = SseHub(side.store, side.state, side.db_path.parent, side.sse)

    async def start_sse(_: web.Application) -> None:
        await hub.start()

    async def close_sse(_: web.Application) -> None:
        await hub.close()

    app.on_startup.append(start_sse)
    app.on_shutdown.append(close_sse)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/events/stream", events_stream)
    app.router.add_get("/v1/state", state_at)
    app.router.add_get("/v1/jobs", jobs)
    app.router.add_get("/v1/jobs/{job}", job)
    app.router.add_get("/v1/jobs/{job}/events", job_events)
    app.router.add_get("/v1/jobs/{job}/metrics", job_metrics)
    app.router.add_get("/v1/jobs/{job}/artifacts", job_artifacts)
    app.router.add_get("/v1/jobs/{job}/logs", job_logs)
    app.router.add_get("/v1/jobs/{job}/logs/stream", job_log_stream)
    app.router.add_get("/v1/datasets", datasets)
    app.router.add_get("/v1/datasets/{name}", dataset)
    app.router.add_get("/v1/datasets/{name}/rows", dataset_rows)
    app.router.add_get("/v1/datasets/{name}/jobs", dataset_jobs)
    app.router.add_get("/v1/projects", projects)
    app.router.add_get("/v1/projects/{name}", project)
    app.router.add_get("/v1/gpus", gpus)
    app.router.add_get("/v1/notify", notify_targets)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/", page)
    return app
