"""What a `swift deploy` run says about its server, read from its output. Pure.

swift deploy binds the host and port it is given, except that a port already taken silently moves
to the next free one (up to +99), so where the server really listens is known only from uvicorn's
start-up line in the run's log (swift-cli.md). The daemon then asks that address's /health.
"""

from __future__ import annotations

import re

__all__ = ["listening_url", "local_url"]

_LISTENING_RE = re.compile(rb"Uvicorn running on (https?://[^\s()]+)")
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104 (read from a log, never bound)


def listening_url(output: bytes) -> str | None:
    """The base URL in the last uvicorn start-up line of `output`, if there is one."""
    found = _LISTENING_RE.findall(output)
    return found[-1].decode("ascii", "replace").rstrip("/") if found else None


def local_url(url: str) -> str:
    """`url` with a wildcard host (a server bound to every address) replaced by loopback, for the
    daemon's own requests to it."""
    scheme, sep, rest = url.partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or not colon:
        return url
    return f"{scheme}://{_WILDCARDS.get(host, host)}:{port}"
