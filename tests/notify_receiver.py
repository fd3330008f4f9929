"""A loopback webhook receiver for the notification tests: an aiohttp server in a thread of its own
that checks every Standard Webhooks signature with the `standardwebhooks` package, as a user's
receiver would, and can answer 500, never answer, or be down and come back on the same port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes long!!").decode()

Mode = Literal["ok", "fail", "hang"]


@dataclass
class Got:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    verified: bool


@dataclass
class Receiver:
    secret: str = SECRET
    mode: Mode = "ok"
    got: list[Got] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        if not self.port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        verified = False
        if "webhook-signature" in request.headers:
            try:
                Webhook(self.secret).verify(raw, dict(request.headers))
                verified = True
            except WebhookVerificationError:
                verified = False
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "fail":
            return web.Response(status=500)
        self.got.append(Got(request.path, dict(request.headers), json.loads(raw), time.monotonic(), verified))
        return web.Response(status=204)

    def start(self) -> Receiver:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def hooks(self) -> list[Got]:
        return [g for g in self.got if g.path == "/hook"]

    def wait(self, n: int, timeout: float = 20, path: str = "/hook") -> list[Got]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [g for g in self.got if g.path == path]
            if len(found) >= n:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{len(self.got)} deliveries, waited for {n} at {path}")


@contextlib.contextmanager
def receiving(mode: Mode = "ok") -> Any:
    r = Receiver(mode=mode).start()
    try:
        yield r
    finally:
        r.stop()


def webhook_target(name: str, url: str, on: str = '["file.rejected"]', extra: str = "") -> str:
    return f"""
[[notify]]
name = "{name}"
url = "{url}"
secret = "{SECRET}"
on = {on}
{extra}
"""
