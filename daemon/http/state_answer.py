"""/v1/state of the live state: the whole state as JSON, built without holding the event loop.

Encoded in one go, 10,000 jobs are 100 ms or more of work on the loop, which /healthz and every
other request wait behind. A thread would not help: the encoder holds the GIL, and the fold changes
the state in place on the loop meanwhile. So the answer is built a chunk of entries at a time with
the loop let through between chunks, and kept until the state moves on: dashboards poll it, and
between two events it does not change.

Unlike a page of /v1/jobs, /v1/state is one seq's state, never the early jobs as they were and the
later ones as they are. Events folded during a build are counted (the store's listener): if they
were all of the kinds that change only their own job's run (progress, artifacts, a run's start or
server, a shared GPU) the chunks holding those jobs are encoded again and the rest stands; after
any other event the build starts again, and after a few such tries the last is encoded in one go,
holding the loop as before.

The answer is the same, byte for byte, as `state_to_json`: each field is encoded by pydantic with
its own type, and a big dict as several smaller dicts of the same type whose bodies follow each
other. It is kept and sent as those pieces: joined, 20 MB would be one more copy on the loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from aiohttp import web
from pydantic import TypeAdapter

from daemon.core.events import ArtifactsFound, GpuShared, JobProgress, Recorded, RunServing, RunStarted
from daemon.core.state import State, state_to_json

__all__ = ["CHUNK", "OWN_JOB_ONLY", "StateAnswer", "send_pieces", "state_pieces"]

CHUNK = 100
"""Entries of a dict encoded between two turns of the loop (a job is some 10 to 50 µs)."""
_TRIES = 3
"""Builds that an event may spoil before the last is made in one go."""
_WRITE_BYTES = 1 << 20
"""Pieces are sent in writes of about this size; each waits while the client has not taken the last."""
OWN_JOB_ONLY = (JobProgress, ArtifactsFound, RunStarted, RunServing, GpuShared)
"""Events whose fold changes nothing but the run of the job they name (daemon.core.fold)."""

_FIELDS: list[tuple[str, TypeAdapter[Any]]] = [
    (f.name, TypeAdapter(hint)) for f in fields(State) for hint in [get_type_hints(State)[f.name]]
]


@dataclass
class _Chunked:
    """One dict field, encoded a chunk of keys at a time."""

    keys: list[list[Any]] = field(default_factory=list)
    texts: list[bytes] = field(default_factory=list)


async def _encode(state: State) -> list[bytes | _Chunked]:
    """Each field's JSON, big dicts in chunks with the loop let through between."""
    out: list[bytes | _Chunked] = []
    for name, adapter in _FIELDS:
        value = getattr(state, name)
        if isinstance(value, dict) and len(value) > CHUNK:
            items = list(value.items())
            chunked = _Chunked()
            for start in range(0, len(items), CHUNK):
                await asyncio.sleep(0)
                part = dict(items[start : start + CHUNK])
                chunked.keys.append(list(part))
                chunked.texts.append(adapter.dump_json(part)[1:-1])
            out.append(chunked)
        else:
            out.append(adapter.dump_json(value))
    return out


def _pieces(parts: Sequence[bytes | _Chunked]) -> list[bytes]:
    """The answer's bytes in order, without copying the chunks."""
    pieces = [b"{"]
    for i, ((name, _), part) in enumerate(zip(_FIELDS, parts, strict=True)):
        pieces.append(f"{',' if i else ''}{json.dumps(name)}:".encode())
        if isinstance(part, bytes):
            pieces.append(part)
            continue
        pieces.append(b"{")
        for c, text in enumerate(part.texts):
            pieces += [b",", text] if c else [text]
        pieces.append(b"}")
    pieces.append(b"}")
    return pieces


def _patch(state: State, parts: list[bytes | _Chunked], jobs: set[int]) -> None:
    """Encode again what events of `OWN_JOB_ONLY` changed: the chunks holding `jobs`, and the
    small fields (last_seq)."""
    for i, (name, adapter) in enumerate(_FIELDS):
        part, value = parts[i], getattr(state, name)
        if isinstance(part, bytes):
            parts[i] = adapter.dump_json(value)
        elif name == "jobs":
            for c, keys in enumerate(part.keys):
                if jobs.intersection(keys):
                    part.texts[c] = adapter.dump_json({k: value[k] for k in keys})[1:-1]


async def state_pieces(state: State) -> list[bytes]:
    """`state_to_json(state)` in pieces, built a chunk at a time: consistent only if no event is
    folded meanwhile (a state folded from the log for ?at=, which nothing else changes)."""
    return _pieces(await _encode(state))


async def send_pieces(request: web.Request, pieces: Sequence[bytes]) -> web.StreamResponse:
    """A 200 JSON answer of `pieces`, written about a megabyte at a time: each write waits while
    the client has not taken the last, and the loop serves others meanwhile."""
    response = web.StreamResponse()
    response.content_type, response.charset = "application/json", "utf-8"
    response.content_length = sum(len(p) for p in pieces)
    await response.prepare(request)
    if request.method != "HEAD":
        batch: list[bytes] = []
        size = 0
        for piece in pieces:
            batch.append(piece)
            size += len(piece)
            if size >= _WRITE_BYTES:
                await response.write(b"".join(batch))
                batch, size = [], 0
        if batch:
            await response.write(b"".join(batch))
    await response.write_eof()
    return response


class StateAnswer:
    """The live state's JSON, built by one build at a time however many ask for it meanwhile, and
    kept until the state moves on. A build in progress answers whoever asks meanwhile: what it
    returns is the state as it stands when the build ends, after they asked. `recorded` must see
    every batch the store commits (EventStore.add_listener)."""

    def __init__(self, state: Callable[[], State]) -> None:
        self._state = state
        self._build: asyncio.Task[list[bytes]] | None = None
        self._pieces: list[bytes] = []
        self._pieces_seq = -1
        self._own_job: set[int] = set()
        self._own_job_events = 0
        self._other_events = 0

    def recorded(self, batch: Sequence[Recorded]) -> None:
        for rec in batch:
            if isinstance(rec.event, OWN_JOB_ONLY):
                self._own_job.add(rec.event.job_id)
                self._own_job_events += 1
            else:
                self._other_events += 1

    async def pieces(self) -> list[bytes]:
        if self._build is None:
            if self._pieces_seq == self._state().last_seq:
                return self._pieces
            self._build = asyncio.get_running_loop().create_task(self._make())
        return await asyncio.shield(self._build)

    async def text(self) -> str:
        return b"".join(await self.pieces()).decode()

    async def _make(self) -> list[bytes]:
        try:
            for _ in range(_TRIES):
                state = self._state()
                seq = state.last_seq
                self._own_job, self._own_job_events, self._other_events = set(), 0, 0
                parts = await _encode(state)
                if self._state() is not state:
                    continue
                moved = state.last_seq - seq
                if moved and (self._other_events or self._own_job_events != moved):
                    continue
                if moved:
                    _patch(state, parts, self._own_job)
                return self._keep(state.last_seq, _pieces(parts))
            state = self._state()
            return self._keep(state.last_seq, [state_to_json(state).encode()])
        finally:
            self._build = None

    def _keep(self, seq: int, pieces: list[bytes]) -> list[bytes]:
        self._pieces, self._pieces_seq = pieces, seq
        return pieces
