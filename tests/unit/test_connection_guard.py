"""The connection guard's bookkeeping without sockets: the cap it runs with, and the accept loop's
out-of-descriptors error counted into one line instead of a traceback each time."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket

import pytest
from aiohttp import web

from daemon.http.guard import ACCEPT_OUT_OF_RESOURCE, ConnectionGuard, connection_cap


@pytest.mark.parametrize(
    ("soft", "configured", "cap"),
    [(65536, 2048, 2048), (1024, 2048, 512), (1024, 100, 100), (256, 2048, 128)],
)
def test_the_cap_leaves_descriptors_for_the_rest(
    monkeypatch: pytest.MonkeyPatch, soft: int, configured: int, cap: int
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (soft, soft))
    assert connection_cap(configured) == cap


def test_accept_errors_are_one_line_per_interval_and_the_rest_passes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> list[dict[str, object]]:
        loop = asyncio.get_running_loop()
        others: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _loop, context: others.append(context))

        async def handler(_request: web.BaseRequest) -> web.Response:
            return web.Response()

        guard = ConnectionGuard(web.Server(handler), 10, 5.0, loop=loop, report_every_s=0.1)
        guard.install()
        with socket.socket() as sock:
            for _ in range(100):
                loop.call_exception_handler(
                    {
                        "message": ACCEPT_OUT_OF_RESOURCE,
                        "exception": OSError(errno.EMFILE, "Too many open files"),
                    }
                )
            loop.call_exception_handler({"message": "something else", "socket": sock})
            await asyncio.sleep(0.3)
        guard.uninstall()
        loop.call_exception_handler({"message": "after uninstall"})
        return others

    with caplog.at_level(logging.WARNING, logger="daemon.http.guard"):
        others = asyncio.run(main())
    assert [c["message"] for c in others] == ["something else", "after uninstall"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "failed (100 times in the last 0.1 s): EMFILE" in lines[0]
    assert "Traceback" not in caplog.text
