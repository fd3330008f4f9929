"""The routes under /v1/jobs: the list, one job, its events, metrics, artifacts, and its log as
pages or as an SSE stream."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from aiohttp import web

from daemon.core.events import JobProgress
from daemon.core.state import Job, State
from daemon.core.streams import job_stream
from daemon.http.logtail import job_log_path
from daemon.http.middleware import error, int_param
from daemon.http.openapi import LIST_PAGE, MAX_PAGE, MAX_POSITION
from daemon.http.readside import READ_SIDE, SSE_HUB
from daemon.http.sse import StreamRefused
from daemon.http.views import JOB_STATES, artifacts_view, job_ids_page, job_view, recorded_json

__all__ = [
    "job",
    "jobs_json",
    "job_artifacts",
    "job_events",
    "job_log_stream",
    "job_logs",
    "job_metrics",
    "jobs",
    "read_log_page",
]


CHUNK = 100
"""Jobs built and encoded between two turns of the event loop (about 2 ms of work)."""


async def jobs_json(state: State, ids: list[int]) -> str:
    """The jobs `ids` as a JSON array, built a chunk at a time with the loop let through between
    chunks: a page of 1,000 jobs is some 30 ms of work, which /healthz would otherwise wait behind,
    once per page asked for at the same time. (A thread would not help: the encoder and the views
    hold the GIL.) A job that changes meanwhile shows as it was when its chunk was built."""
    parts: list[str] = []
    for start in range(0, len(ids), CHUNK):
        if start:
            await asyncio.sleep(0)
        parts.append(json.dumps([job_view(state, state.jobs[i]) for i in ids[start : start + CHUNK]])[1:-1])
    return "[" + ", ".join(parts) + "]"


def _job(request: web.Request) -> tuple[State, Job]:
    state = request.app[READ_SIDE].state()
    ref = request.match_info["job"]
    job = state.find_job(ref)
    if job is None:
        raise web.HTTPNotFound()
    return state, job


async def jobs(request: web.Request) -> web.Response:
    state = request.app[READ_SIDE].state()
    asked = request.query.get("state") or None
    job_states = None if asked is None else asked.split(",")
    for job_state in job_states or ():
        if job_state not in JOB_STATES:
            raise web.HTTPBadRequest(
                reason=f"state must be one of {', '.join(JOB_STATES)}, got {job_state[:40]!r}"
            )
    after = int_param(request, "after", 0, 0, MAX_POSITION)
    before = int_param(request, "before", 0, 0, MAX_POSITION) or None
    limit = int_param(request, "limit", LIST_PAGE, 1, MAX_PAGE)
    project = request.query.get("project") or None
    ids, cursor = job_ids_page(
        state, job_states=job_states, project=project, after=after, before=before, limit=limit
    )
    found = await jobs_json(state, ids)
    if before is not None:
        return web.json_response(text=f'{{"jobs": {found}, "next_before": {json.dumps(cursor)}}}')
    return web.json_response(text=f'{{"jobs": {found}, "next_after": {json.dumps(cursor)}}}')


async def job(request: web.Request) -> web.Response:
    state, found = _job(request)
    return web.json_response(job_view(state, found, detail=True))


async def job_events(request: web.Request) -> web.Response:
    _, found = _job(request)
    recorded = await request.app[READ_SIDE].store.read_stream(job_stream(found.id))
    return web.json_response({"events": [recorded_json(r) for r in recorded]})


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
