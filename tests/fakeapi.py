"""A stand-in for the daemon's read API, for the client commands' unit tests: canned bodies served
over real HTTP (the client's own urllib path), list endpoints paged either way a daemon may page
them: `next` (null on the last page) or the older `next_after`."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["FakeApi", "fake_api"]

STATUS = {
    "version": "0.3.0",
    "healthy": True,
    "uptime_s": 12,
    "last_seq": 3,
    "gpus": {"count": 0},
    "executor": {"kind": "local"},
    "jobs": {"queued": 2, "succeeded": 1},
}


def job(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"job-{i}", "state": "queued", "task_type": "sft", "reason": "waits"}


def event(seq: int) -> dict[str, Any]:
    return {"seq": seq, "ts": 1.0e9 + seq, "stream": "intake", "type": "FileSeen", "data": {"n": seq}}


@dataclass
class FakeApi:
    jobs: int = 3
    events: int = 3
    page: int = 500
    cursor: Literal["next", "next_after"] = "next"
    log: bytes = b"line one\nline two\n"
    asked: list[str] = field(default_factory=list)
    url: str = ""

    def answer(self, target: str) -> tuple[int, Any]:
        self.asked.append(target)
        parts = urllib.parse.urlsplit(target)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        after = int(query.get("after", 0))
        limit = min(int(query.get("limit", self.page)), self.page)
        path = parts.path
        if path == "/v1/status":
            return 200, STATUS
        if path == "/v1/gpus":
            return 200, {"gpus": [], "probed_s_ago": 1}
        if path == "/v1/jobs":
            ids = [i for i in range(1, self.jobs + 1) if i > after][:limit]
            more = bool(ids) and ids[-1] < self.jobs
            return 200, {"jobs": [job(i) for i in ids], self.cursor: ids[-1] if more else None}
        if path == "/v1/events":
            seqs = [s for s in range(1, self.events + 1) if s > after][:limit]
            more = bool(seqs) and seqs[-1] < self.events
            if self.cursor == "next":
                return 200, {"events": [event(s) for s in seqs], "next": seqs[-1] if more else None}
            return 200, {"events": [event(s) for s in seqs], "next_after": seqs[-1] if seqs else after}
        if path == "/v1/jobs/job-1/logs":
            text = self.log[int(query.get("offset", 0)) :].decode()
            return 200, {"text": text, "next_offset": len(self.log), "size": len(self.log)}
        if path == "/v1/jobs/job-1":
            return 200, {**job(1), "spec": {}, "progress": {}}
        return 404, {"error": {"message": f"no {path}"}}


@contextmanager
def fake_api(api: FakeApi) -> Iterator[FakeApi]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = api.answer(self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
