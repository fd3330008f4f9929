"""GET /v1/notify: each notification target, its cursor, lag and last error; never a secret (the
notifier builds the views without them)."""

from __future__ import annotations

from aiohttp import web

from daemon.http.readside import READ_SIDE

__all__ = ["notify_targets"]


async def notify_targets(request: web.Request) -> web.Response:
    side = request.app[READ_SIDE]
    return web.json_response({"targets": side.notify(), "last_seq": side.store.last_seq})
