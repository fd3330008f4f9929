"""The routes under /v1/datasets/{name}/ that the status page's dataset view reads: the first rows of
the dataset as swift reads them, and the jobs that read it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from daemon.core.layout import StateLayout
from daemon.core.state import State
from daemon.http.middleware import int_param
from daemon.http.openapi import MAX_POSITION, MAX_SAMPLE_ROWS, SAMPLE_BYTES
from daemon.http.paging import PAGES, Page, page_body, page_limit, page_response
from daemon.http.readside import READ_SIDE
from daemon.http.views import dataset_jobs_page

__all__ = ["dataset_jobs", "dataset_rows", "sample_rows"]


def sample_rows(path: Path, rows: int) -> list[dict[str, Any]] | None:
    """The first `rows` lines of a JSONL file, read from its first SAMPLE_BYTES only, so one huge row
    cannot make the answer huge: a line cut there, or one that is not JSON, comes as text. None when
    the file is gone. Blocking: call from a thread."""
    try:
        with open(path, "rb") as f:
            head = f.read(SAMPLE_BYTES + 1)
    except FileNotFoundError:
        return None
    cut = len(head) > SAMPLE_BYTES
    lines = head[:SAMPLE_BYTES].split(b"\n")
    if not cut and lines and not lines[-1]:
        lines.pop()
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines[:rows]):
        whole = not (cut and i == len(lines) - 1)
        text = line.decode("utf-8", "replace")
        try:
            data = json.loads(text) if whole else None
        except ValueError:
            data = None
        out.append({"row": i + 1, "data": data, "text": None if data is not None else text, "cut": not whole})
    return out


async def dataset_rows(request: web.Request) -> web.Response:
    side = request.app[READ_SIDE]
    state = side.state()
    name = request.match_info["name"]
    sha = state.dataset_names.get(name)
    if sha is None:
        raise web.HTTPNotFound()
    limit = int_param(request, "limit", 5, 1, MAX_SAMPLE_ROWS)
    path = StateLayout(side.db_path.parent).converted_dataset(sha)
    rows = await asyncio.to_thread(sample_rows, path, limit)
    body = {
        "name": name,
        "sha256": sha,
        "rows_total": state.datasets[sha].rows,
        "available": rows is not None,
    }
    return web.json_response(body | {"rows": rows or []})


async def dataset_jobs(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    after = int_param(request, "after", 0, 0, MAX_POSITION)
    limit = page_limit(request)

    async def build(state: State) -> Page | None:
        found = dataset_jobs_page(state, name, after=after, limit=limit)
        return None if found is None else page_body("", "jobs", json.dumps(found[0]), found[1])

    return page_response(request, await request.app[PAGES].get(("dataset_jobs", name, after, limit), build))
