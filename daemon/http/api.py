"""The read-only HTTP API. It sees the folded state, the log's read side and the last GPU probe,
never the runner or the scheduler.

Every answer is JSON (but the SSE streams, /metrics and /openapi.json); every error is
`{"error": {"code", "message"}}` with its status; any method but GET and HEAD is 405, whatever the
path; with `[api] token` set, every route but /healthz needs it. A browser cannot add a header to
EventSource, so the status page is opened once as `/?token=T`: that sets the token as an HttpOnly,
SameSite=Strict cookie (as Jupyter does) which every route then accepts in place of the header.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon import __version__
from daemon.core.events import JobProgress
from daemon.core.state import Job, State, state_to_json
from daemon.core.streams import job_stream
from daemon.http.metrics import CONTENT_TYPE, Scrape, render
from daemon.http.openapi import MAX_POSITION, TOKEN_COOKIE, openapi_spec
from daemon.http.sse import SseHub, SseSettings, StreamRefused, job_log_path
from daemon.http.views import (
    JOB_STATES,
    artifacts_view,
    dataset_view,
    datasets_view,
    gpu_summary,
    gpus_view,
    intake_view,
    job_counts,
    job_view,
    jobs_view,
    projects_view,
    recorded_json,
)
from daemon.log.projector import load_state_at_path
from daemon.log.store import EventStore

if TYPE_CHECKING:
    from daemon.core.gpus import GpuStatus

__all__ = ["GpuReading", "ReadSide", "make_app"]

MAX_PAGE = 1000
MAX_HEADER_FIELD = 16 * 1024
"""aiohttp refuses longer header fields itself (400, text). Its default, 8 KiB, would refuse a 10 kB
Last-Event-ID before the stream could ignore it, as it does every other malformed one."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GpuReading = tuple["Sequence[GpuStatus]", float]
"""The GPUs as last probed, and when (time.monotonic())."""


def _no_gpus() -> GpuReading:
    return [], time.monotonic()


def _no_trouble() -> str:
    return ""


@dataclass
class ReadSide:
    """What the API may look at: the live state, the log (read only), the last GPU probe (owned by
    the scheduling loop) and the daemon's health."""

    state: Callable[[], State]
    store: EventStore
    db_path: Path
    started_monotonic: float
    token: str = ""
    gpus: Callable[[], GpuReading] = _no_gpus
    sse: SseSettings = field(default_factory=SseSettings)
    intake_trouble: Callable[[], str] = _no_trouble
    """What keeps the inbox from finishing its work (the state's disk is full, ...), or ""."""

    def health(self) -> tuple[bool, str]:
        if not self.store.healthy:
            return False, self.store.last_error
        trouble = self.intake_trouble()
        return (False, f"intake: {trouble}") if trouble else (True, "")


READ_SIDE = web.AppKey("read_side", ReadSide)
SSE_HUB = web.AppKey("sse_hub", SseHub)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{name} must be an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise web.HTTPBadRequest(reason=f"{name} must be between {lo} and {hi}, got {value}")
    return value


_PAGE_LOGIN = (
    "<!doctype html><title>llmtraind</title><p>This daemon has an <code>[api] token</code>. "
    "Open <code>/?token=&lt;the token&gt;</code> once; the browser then keeps it as a cookie.</p>\n"
)


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    return _same(header, f"Bearer {token}") or _same(request.cookies.get(TOKEN_COOKIE, ""), token)


def _ask_for_token() -> web.Response:
    return web.Response(status=401, text=_PAGE_LOGIN, content_type="text/html")


def _page_login(offered: str, token: str) -> web.Response:
    """`/?token=T`: a right token is kept as a cookie and the address bar loses it (303 to `/`)."""
    if not _same(offered, token):
        return _ask_for_token()
    found = web.Response(status=303, headers={"Location": "/"})
    found.set_cookie(TOKEN_COOKIE, token, path="/", httponly=True, samesite="Strict")
    return found


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        refused = _error(405, "method_not_allowed", f"{request.method} is not allowed: this API is read-only")
        refused.headers["Allow"] = "GET, HEAD"
        return refused
    side = request.app[READ_SIDE]
    if side.token and request.path != "/healthz":
        offered = request.query.get("token") if request.path == "/" else None
        if offered is not None:
            return _page_login(offered, side.token)
        if not _authorized(request, side.token):
            if request.path == "/":
                return _ask_for_token()
            return _error(401, "unauthorized", "send 'Authorization: Bearer <token>' ([api] token)")
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error(404, "not_found", f"no such resource: {request.path}")
    except web.HTTPMethodNotAllowed:
        refused = _error(405, "method_not_allowed", f"{request.method} is not allowed here")
        refused.headers["Allow"] = "GET, HEAD"
        return refused
    except web.HTTPBadRequest as e:
        return _error(400, "bad_request", e.reason)


async def healthz(request: web.Request) -> web.Response:
    ok, why = request.app[READ_SIDE].health()
    body = {"ok": ok, "reason": why}
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
    text = f'{cache.head}, "uptime_s": {uptime!r}, "gpus": {cache.gpus}, "probed_s_ago": {ago!r}}}}}'
    return web.Response(text=text, content_type="application/json")


def _job(request: web.Request) -> tuple[State, Job]:
    state = request.app[READ_SIDE].state()
    ref = request.match_info["job"]
    job = state.find_job(ref)
    if job is None:
        raise web.HTTPNotFound()
    return state, job


async def jobs(request: web.Request) -> web.Response:
    state = request.app[READ_SIDE].state()
    job_state = request.query.get("state") or None
    if job_state is not None and job_state not in JOB_STATES:
        raise web.HTTPBadRequest(
            reason=f"state must be one of {', '.join(JOB_STATES)}, got {job_state[:40]!r}"
        )
    found = jobs_view(state, job_state=job_state, project=request.query.get("project") or None)
    return web.json_response({"jobs": found})


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
    offset = _int_param(request, "offset", 0, 0, MAX_POSITION)
    limit = _int_param(request, "limit", 65536, 1, MAX_LOG_PAGE)
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


async def datasets(request: web.Request) -> web.Response:
    return web.json_response({"datasets": datasets_view(request.app[READ_SIDE].state())})


async def dataset(request: web.Request) -> web.Response:
    view = dataset_view(request.app[READ_SIDE].state(), request.match_info["name"])
    if view is None:
        raise web.HTTPNotFound()
    return web.json_response(view)


async def projects(request: web.Request) -> web.Response:
    return web.json_response({"projects": list(projects_view(request.app[READ_SIDE].state()).values())})


async def project(request: web.Request) -> web.Response:
    state = request.app[READ_SIDE].state()
    name = request.match_info["name"]
    found = jobs_view(state, project=name)
    if not found:
        raise web.HTTPNotFound()
    return web.json_response({"name": name, "jobs": found})


async def events(request: web.Request) -> web.Response:
    side = request.app[READ_SIDE]
    after = _int_param(request, "after", 0, 0, MAX_POSITION)
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    page = await side.store.read(after, limit)
    next_after = page[-1].seq if page else after
    return web.json_response({"events": [recorded_json(r) for r in page], "next_after": next_after})


async def state_at(request: web.Request) -> web.Response:
    side = request.app[READ_SIDE]
    live = side.state()
    at = _int_param(request, "at", live.last_seq, 0, MAX_POSITION)
    if at >= live.last_seq:
        return web.json_response(text=state_to_json(live))
    folded = await asyncio.to_thread(load_state_at_path, side.db_path, at)
    return web.json_response(text=state_to_json(folded))


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
    )
    return web.Response(body=render(scrape), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())


async def events_stream(request: web.Request) -> web.StreamResponse:
    after = _int_param(request, "after", -1, 0, MAX_POSITION)
    try:
        return await request.app[SSE_HUB].events(request, None if after < 0 else after)
    except StreamRefused as e:
        return _error(e.status, e.code, e.message)


async def job_log_stream(request: web.Request) -> web.StreamResponse:
    _, found = _job(request)
    after = _int_param(request, "after", -1, 0, MAX_POSITION)
    try:
        return await request.app[SSE_HUB].job_log(request, found, None if after < 0 else after)
    except StreamRefused as e:
        return _error(e.status, e.code, e.message)


PAGE = Path(__file__).with_name("page") / "index.html"


async def page(request: web.Request) -> web.Response:
    """The read-only status page: one static file, no build step, nothing fetched from elsewhere;
    its script reads this API and follows /v1/events/stream with EventSource."""
    text = await asyncio.to_thread(PAGE.read_text, "utf-8")
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-cache"})


def make_app(side: ReadSide) -> web.Application:
    app = web.Application(middlewares=[_errors_and_auth], handler_args={"max_field_size": MAX_HEADER_FIELD})
    app[READ_SIDE] = side
    app[STATUS_CACHE] = _StatusCache()
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
    app.router.add_get("/v1/projects", projects)
    app.router.add_get("/v1/projects/{name}", project)
    app.router.add_get("/v1/gpus", gpus)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/", page)
    return app
