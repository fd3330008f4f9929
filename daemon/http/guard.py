"""Bounds on the API's connections: how many may be open at once, and how long one may take to send
a request's headers. Anyone who can reach the port can open sockets without a token; unbounded,
about 20,000 half-open ones used up the daemon's file descriptors, which stopped intake with the
API, and every refused accept was a traceback. Here a connection past the cap is answered 503 and
closed at once, a silent one is closed after the header timeout, and what happens to many
connections is one log line per interval, not one per connection."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["ConnectionGuard", "GuardedSite", "connection_cap"]

log = logging.getLogger(__name__)

REPORT_EVERY_S = 10.0
ACCEPT_OUT_OF_RESOURCE = "socket.accept() out of system resource"
"""The message asyncio's accept loop gives its exception handler on EMFILE, ENFILE, ENOBUFS or
ENOMEM; it then stops accepting for a second and tries again by itself."""

_REFUSAL = json.dumps(
    {
        "error": {
            "code": "too_many_connections",
            "message": "too many open connections ([api] max_connections)",
        }
    }
).encode()
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL), _REFUSAL)
)


def connection_cap(configured: int) -> int:
    """The cap to run with: the configured one, lowered so that the open-file limit still leaves
    room (512 descriptors, or half the limit if that is less) for the log, intake and runs."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    room = soft - min(512, soft // 2)
    if configured <= room:
        return configured
    log.info(
        "[api] max_connections = %d lowered to %d: the open-file limit is %d (LimitNOFILE=, ulimit -n)",
        configured,
        room,
        soft,
    )
    return room


_Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class _Tally:
    """Counts what happens to many connections and logs each kind once per interval, so a flood
    costs a few lines however many sockets it opens."""

    def __init__(self, loop: asyncio.AbstractEventLoop, every_s: float) -> None:
        self._loop = loop
        self._every_s = every_s
        self._counts: dict[str, int] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, message: str) -> None:
        """`message` is a format with one `%d` for the count and one `%g` for the interval."""
        self._counts[message] = self._counts.get(message, 0) + 1
        if self._handle is None:
            self._handle = self._loop.call_later(self._every_s, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        counts, self._counts = self._counts, {}
        for message, n in counts.items():
            log.warning(message, n, self._every_s)


class _Refused(asyncio.Protocol):
    """A connection past the cap: the 503 fits in an empty socket buffer, so closing frees the
    descriptor straight away whether or not the client ever reads."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard.refused()
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSED)
        transport.close()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted while open, and closed if its first request's
    headers are not in by the deadline (aiohttp's keep-alive timeout, set to the same value, bounds
    the wait for each later request)."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._deadline, self._timer = self._guard.opened(self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        headers_late = self._timer is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._guard.closed(headers_late and self._guard.past(self._deadline))
        self._inner.connection_lost(exc)

    def _expire(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class ConnectionGuard:
    """The protocol factory for the API's listening socket: aiohttp's own (`web.Server`) behind a
    count of open connections and a header deadline. Also the event loop's exception handler for
    the accept loop's out-of-descriptors error, which it counts instead of logging a traceback."""

    def __init__(
        self,
        server: web.Server,
        max_connections: int,
        header_timeout_s: float,
        *,
        loop: asyncio.AbstractEventLoop,
        report_every_s: float = REPORT_EVERY_S,
    ) -> None:
        self._server = server
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self._loop = loop
        self._tally = _Tally(loop, report_every_s)
        self._previous: _Handler | None = None
        self._installed = False

    def __call__(self) -> asyncio.Protocol:
        """Counted here, not in `connection_made`: asyncio makes the protocols of a whole batch of
        accepted sockets before it calls any `connection_made`."""
        if self.open >= self.max_connections:
            return _Refused(self)
        self.open += 1
        return _Guarded(self, self._server())

    def opened(self, expire: Callable[[], None]) -> tuple[float, asyncio.TimerHandle]:
        deadline = self._loop.time() + self.header_timeout_s
        return deadline, self._loop.call_at(deadline, expire)

    def closed(self, timed_out: bool) -> None:
        self.open -= 1
        if timed_out:
            self._tally.add(
                "closed %d connections in the last %g s that sent no request headers within "
                f"{self.header_timeout_s:g} s ([api] header_timeout_s)"
            )

    def past(self, deadline: float) -> bool:
        return self._loop.time() >= deadline

    def refused(self) -> None:
        self._tally.add(
            "refused %d connections in the last %g s: at the cap of "
            f"{self.max_connections} open ([api] max_connections)"
        )

    def install(self) -> None:
        """Take over the loop's exception handler, passing on everything but the accept error."""
        self._previous = self._loop.get_exception_handler()
        self._loop.set_exception_handler(self._on_loop_error)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            self._loop.set_exception_handler(self._previous)
            self._installed = False
        self._tally.flush()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_OUT_OF_RESOURCE:
            exc = context.get("exception")
            code = errno.errorcode.get(getattr(exc, "errno", None) or 0, "?")
            self._tally.add(
                f"accepting a connection failed (%d times in the last %g s): {code}, out of file "
                f"descriptors or memory with {self.open} connections open; retrying each second"
            )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


class GuardedSite(web.BaseSite):
    """A TCP site whose listening socket makes connections through a `ConnectionGuard`; as a site
    of the runner, it stops accepting when the runner cleans up."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int) -> None:
        super().__init__(runner)
        self._guard = guard
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        self._guard.install()

    async def stop(self) -> None:
        self._guard.uninstall()
        await super().stop()
