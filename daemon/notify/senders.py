"""The three ways a notification leaves the daemon: a signed webhook POST, an apprise URL, a command.

Each `send` either returns (the target acknowledged) or raises DeliveryFailed with a reason fit for
the log and the API: the status, the timeout or the error's kind, never the URL's path, a query or
a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import apprise
from standardwebhooks import Webhook

from daemon import __version__
from daemon.core.config import NotifyTarget
from daemon.core.notify import Notification, summary

__all__ = ["DeliveryFailed", "Sender", "make_sender", "where"]


class DeliveryFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sender(Protocol):
    async def send(self, n: Notification, body: str, msg_id: str) -> None: ...

    async def close(self) -> None: ...


def where(target: NotifyTarget) -> tuple[str, str]:
    """(kind, where) for people: a webhook's scheme, host and port, an apprise URL's scheme, a
    command's program; paths, queries and arguments may hold tokens, so they are left out."""
    if target.url:
        parts = urlsplit(target.url)
        return "webhook", f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    if target.command:
        return "command", target.command[0]
    scheme = target.apprise.get_secret_value().split("://", 1)[0]
    return "apprise", f"{scheme}://…"


class WebhookSender:
    """Standard Webhooks: `webhook-id` stable per event and target, `webhook-timestamp` of this
    attempt, `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""

    def __init__(self, target: NotifyTarget) -> None:
        self._url = target.url
        self._hook = Webhook(target.secret.get_secret_value())
        self._timeout = target.timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def send(self, n: Notification, body: str, msg_id: str) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": f"llmtraind/{__version__}"})
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._hook.sign(msg_id, now, body),
        }
        try:
            async with self._session.post(
                self._url,
                data=body.encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as resp:
                if not 200 <= resp.status < 300:
                    raise DeliveryFailed(f"HTTP {resp.status}")
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self._timeout:g} s") from None
        except aiohttp.ClientConnectorError as e:
            raise DeliveryFailed(
                f"cannot connect: {e.os_error.strerror or type(e.os_error).__name__}"
            ) from None
        except aiohttp.ClientError as e:
            raise DeliveryFailed(f"{type(e).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AppriseSender:
    """A short text for a person through one apprise URL (Slack, ntfy, e-mail, json://, ...). apprise
    is synchronous, so it runs in a thread, bounded by apprise's own call timeout."""

    def __init__(self, target: NotifyTarget, status_url: str) -> None:
        self._url = target.apprise.get_secret_value()
        self._timeout = target.timeout_s
        self.status_url = status_url

    def _notify(self, title: str, text: str) -> None:
        ap = apprise.Apprise()
        if not ap.add(self._url):
            raise DeliveryFailed("apprise does not understand this URL")
        result = ap.notify(body=text, title=title, timeout=self._timeout)
        if not result:
            errors = [e.message for e in result.logs() if e.level in ("ERROR", "WARNING")]
            raise DeliveryFailed(
                f"apprise: {result.status.name.lower()}" + (f": {errors[-1]}" if errors else "")
            )

    async def send(self, n: Notification, body: str, msg_id: str) -> None:
        title, text = summary(n, self.status_url)
        try:
            await asyncio.wait_for(asyncio.to_thread(self._notify, title, text), self._timeout + 5)
        except TimeoutError:
            raise DeliveryFailed(f"apprise did not return within {self._timeout:g} s") from None

    async def close(self) -> None:
        return None


class CommandSender:
    """argv without a shell, the JSON payload on stdin; exit 0 acknowledges. It runs in a session of
    its own, so a timeout kills what it started too."""

    def __init__(self, target: NotifyTarget) -> None:
        self._argv = list(target.command)
        self._timeout = target.timeout_s

    async def send(self, n: Notification, body: str, msg_id: str) -> None:
        env = os.environ | {"WEBHOOK_ID": msg_id, "NOTIFY_TYPE": n.type}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            raise DeliveryFailed(f"cannot run {self._argv[0]}: {e.strerror}") from None
        try:
            _, err = await asyncio.wait_for(proc.communicate(body.encode()), self._timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise DeliveryFailed(f"still running after {self._timeout:g} s: killed") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        if proc.returncode != 0:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise DeliveryFailed(f"exit status {proc.returncode}" + (f": {last[0][:200]}" if last[0] else ""))

    async def close(self) -> None:
        return None


def make_sender(target: NotifyTarget, status_url: str = "") -> Sender:
    if target.url:
        return WebhookSender(target)
    if target.command:
        return CommandSender(target)
    return AppriseSender(target, status_url)
