"""The gate every request passes: any method but GET and HEAD is 405, whatever the path; with
`[api] token` set, every route but /healthz needs it; every error is `{"error": {"code", "message"}}`
with its status (a handler's HTTPNotFound, and the HTTPBadRequest of `int_param`, become one here).
A browser cannot add a header to EventSource, so the status page is opened once as `/?token=T`: that
sets the token as an HttpOnly, SameSite=Strict cookie (as Jupyter does) which every route then
accepts in place of the header.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from daemon.http.openapi import TOKEN_COOKIE
from daemon.http.readside import READ_SIDE

__all__ = ["error", "errors_and_auth", "int_param"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
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
    """The scheme's name is case-insensitive (RFC 7235): `bearer` and `BEARER` are `Bearer`."""
    scheme, _, given = request.headers.get("Authorization", "").strip(" ").partition(" ")
    bearer = scheme.lower() == "bearer" and _same(given.lstrip(" "), token)
    return bearer or _same(request.cookies.get(TOKEN_COOKIE, ""), token)


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
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        refused = error(405, "method_not_allowed", f"{request.method} is not allowed: this API is read-only")
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
            return error(401, "unauthorized", "send 'Authorization: Bearer <token>' ([api] token)")
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return error(404, "not_found", f"no such resource: {request.path}")
    except web.HTTPMethodNotAllowed:
        refused = error(405, "method_not_allowed", f"{request.method} is not allowed here")
        refused.headers["Allow"] = "GET, HEAD"
        return refused
    except web.HTTPBadRequest as e:
        return error(400, "bad_request", e.reason)
