"""The routes under /v1/jobs: the list, one job, its events, metrics, artifacts, and its log as
pages or as an SSE stream."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiohttp import web

from daemon.core.events import JobProgress
from daemon.core.state import Job, State
from daemon.core.streams import job_stream
from daemon.http.logtail import job_log_path
from daemon.http.middleware import error, int_param
from daemon.http.openapi import MAX_POSITION
from daemon.http.paging import PAGES, Page, encode_chunked, jobs_page, page_body, page_limit, page_response
from daemon.http.readside import READ_SIDE, SSE_HUB
from daemon.http.sse import StreamRefused
from daemon.http.views import JOB_STATES, artifacts_view, job_ids_page, job_view, recorded_json

__all__ = [
    "job",
    "job_artifacts",
    "job_events",
    "job_log_stream",
    "job_logs",
    "job_metrics",
    "jobs",
    "read_log_page",
]


def _job(request: web.Request) -> tuple[State, Job]:
    state = request.app[READ_SIDE].state()
    ref = request.match_info["job"]
    job = state.find_job(ref)
    if job is None:
        raise web.HTTPNotFound()
    return state, job


async def jobs(request: web.Request) -> web.Response:
    asked = request.query.get("state") or None
    job_states = None if asked is None else tuple(asked.split(","))
    for job_state in job_states or ():
        if job_state not in JOB_STATES:
            raise web.HTTPBadRequest(
                reason=f"state must be one of {', '.join(JOB_STATES)}, got {job_state[:40]!r}"
            )
    after = int_param(request, "after", 0, 0, MAX_POSITION)
    before = int_param(request, "before", 0, 0, MAX_POSITION) or None
    limit = page_limit(request)
    project = request.query.get("project") or None
    cursor = "after" if before is None else "before"

    async def build(state: State) -> Page:
        ids, next_cursor = job_ids_page(
            state, job_states=job_states, project=project, after=after, before=before, limit=limit
        )
        return await jobs_page(state, ids, next_cursor, cursor=cursor)

    key = ("jobs", job_states, project, after, before, limit)
    return page_response(request, await request.app[PAGES].get(key, build), cursor)


async def job(request: web.Request) -> web.Response:
    state, found = _job(request)
    return web.json_response(job_view(state, found, detail=True))


async def job_events(request: web.Request) -> web.Response:
    """The job's events by seq, a page at a time (a long run records thousands of progress events)."""
    _, found = _job(request)
    after = int_param(request, "after", 0, 0, MAX_POSITION)
    limit = page_limit(request)
    newer = await request.app[READ_SIDE].store.read_stream(job_stream(found.id), after, limit + 1)
    page = newer[:limit]
    next_cursor = page[-1].seq if len(newer) > limit else None
    return page_response(
        request, page_body("", "events", await encode_chunked(page, recorded_json), next_cursor)
    )


async def job_metrics(request: web.Request) -> web.Response:
    """Every recorded metrics record of the job (all attempts), oldest first."""
    _, found = _job(request)
    recorded = await request.app[READ_SIDE].store.read_stream(job_stream(found.id))
    records = [
        {"ts": r.ts} | r.event.model_dump(exclude={"type", "job_id"})
        for r in recorded
        if isinstance(r.event, JobProgress)
    ]
    return web.json_response({"job": found.id, "metrics": records})


async def job_artifacts(request: web.Request) -> web.Response:
    _, found = _job(request)
    return web.json_response(
        {
            "job": found.id,
            "final_checkpoint": found.final_checkpoint,
            "final_model": found.final_model,
            "artifacts": artifacts_view(found),
            "pruned": [{"attempt": run.attempt, "path": path} for run in found.runs for path in run.pruned],
        }
    )


MAX_LOG_PAGE = 1 << 20


def read_log_page(path: Path, offset: int, limit: int) -> tuple[bytes, int]:
    """Bytes [offset, offset+limit) of the log, cut after the last full line when there is one,
    and the log's size. Blocking: call from a thread."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return b"", 0
    cut = data.rfind(b"\n") + 1
    return (data[:cut] if cut and offset + len(data) < size else data), size


async def job_logs(request: web.Request) -> web.Response:
    """A page of the job's log (every attempt's output, one after another), by byte offset."""
    side = request.app[READ_SIDE]
    _, found = _job(request)
    offset = int_param(request, "offset", 0, 0, MAX_POSITION)
    limit = int_param(request, "limit", 65536, 1, MAX_LOG_PAGE)
    path = job_log_path(found, side.db_path.parent)
    data, size = (b"", 0) if path is None else await asyncio.to_thread(read_log_page, path, offset, limit)
    return web.json_response(
        {
            "job": found.id,
            "offset": offset,
            "next_offset": offset + len(data),
            "size": size,
            "text": data.decode("utf-8", "replace"),
        }
    )


async def job_log_stream(request: web.Request) -> web.StreamResponse:
    _, found = _job(request)
    after = int_param(request, "after", -1, 0, MAX_POSITION)
    try:
        return await request.app[SSE_HUB].job_log(request, found, None if after < 0 else after)
    except StreamRefused as e:
        return error(e.status, e.code, e.message)
