"""/v1/state's builder: the same text as `state_to_json`, built a chunk at a time with the loop let
through, once per seq, and never a mix of two seqs when an event is folded during a build."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.core.events import Event, JobFailed, JobProgress, Recorded
from daemon.core.fold import apply
from daemon.core.state import Dataset, State, state_to_json
from daemon.http import state_answer
from daemon.http.api import ReadSide, make_app
from daemon.http.state_answer import CHUNK, StateAnswer, state_pieces
from daemon.log.store import EventStore
from tests.unit.test_api_reads import job, run

JOBS = 3 * CHUNK + 7
REAL_ENCODE = state_answer._encode


def big_state() -> State:
    state = State()
    for i in range(1, JOBS + 1):
        j = job(i, "succeeded" if i % 2 else "queued", float(i))
        j.spec = {"task_type": "sft", "name": f"é{i}", "swift": {"lr": 1e-4}}
        j.runs.append(run(f"/state/runs/{i}/1/log", ["GPU-fake-0"], 1.0, i))
        state.jobs[i] = j
    state.job_names = {j.name: j.id for j in state.jobs.values()}
    names = [f"chat-{i}" for i in range(2 * CHUNK + 1)]
    state.datasets["a" * 64] = Dataset(
        sha256="a" * 64,
        name=names[0],
        filename="chat.jsonl",
        format="messages",
        task_types=["sft"],
        rlhf_types=[],
        rows=10,
        bytes=100,
        stats={"rows": 10},
        lora_hints=None,
        accepted_ts=1.0,
        accepted_seq=1,
        names=names,
        drops=len(names),
    )
    state.dataset_names = dict.fromkeys(names, "a" * 64)
    state.last_seq = 5000
    return state


@pytest.mark.parametrize("make", [State, big_state])
async def test_the_chunked_text_is_state_to_json_byte_for_byte(make: type[State]) -> None:
    state = make()
    assert b"".join(await state_pieces(state)).decode() == state_to_json(state)


async def test_the_loop_runs_between_chunks() -> None:
    state = big_state()
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    before = turns
    await state_pieces(state)
    task.cancel()
    assert turns - before >= JOBS // CHUNK, "other work ran between the chunks of the jobs"


class Folding:
    """Wraps `_encode`: the first `spoil` builds have events folded (and told to the answer) while
    they run, as the store's listener would tell them."""

    def __init__(self, answer: StateAnswer, state: State, events: list[Event], spoil: int = 1) -> None:
        self.answer, self.state, self.events, self.spoil = answer, state, events, spoil
        self.builds = 0

    async def __call__(self, s: State) -> list[Any]:
        self.builds += 1
        parts = await REAL_ENCODE(s)
        if self.builds <= self.spoil:
            batch = [Recorded(s.last_seq + 1 + n, "job-x", 1, 1.0, e) for n, e in enumerate(self.events)]
            for rec in batch:
                apply(s, rec)
            self.answer.recorded(batch)
        return parts


def progress(job_id: int, step: int) -> JobProgress:
    return JobProgress(job_id=job_id, attempt=1, kind="train", step=step, max_steps=100, percent=float(step))


async def test_one_build_per_seq_and_a_new_one_when_the_state_moves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = big_state()
    answer = StateAnswer(lambda: state)
    folding = Folding(answer, state, [], spoil=0)
    monkeypatch.setattr(state_answer, "_encode", folding)
    first = await asyncio.gather(answer.text(), answer.text(), answer.text())
    assert folding.builds == 1 and list(first) == [state_to_json(state)] * 3
    assert await answer.text() == first[0] and folding.builds == 1
    apply(state, Recorded(state.last_seq + 1, "job-1", 2, 1.0, progress(1, 5)))
    assert await answer.text() == state_to_json(state) and folding.builds == 2


async def test_progress_folded_during_a_build_is_patched_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer is one seq's state: the chunks of the jobs that moved are encoded again."""
    state = big_state()
    answer = StateAnswer(lambda: state)
    folding = Folding(answer, state, [progress(1, 7), progress(JOBS, 9), progress(2 * CHUNK, 3)])
    monkeypatch.setattr(state_answer, "_encode", folding)
    before = state.last_seq
    text = await answer.text()
    assert folding.builds == 1 and state.last_seq == before + 3
    assert text == state_to_json(state)


async def test_any_other_event_folded_during_a_build_starts_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    state = big_state()
    answer = StateAnswer(lambda: state)
    folding = Folding(answer, state, [progress(1, 7), JobFailed(job_id=2, reason="no dataset")])
    monkeypatch.setattr(state_answer, "_encode", folding)
    text = await answer.text()
    assert folding.builds == 2 and state.jobs[2].state == "failed"
    assert text == state_to_json(state)


async def test_events_the_answer_was_not_told_of_start_the_build_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = big_state()
    answer = StateAnswer(lambda: state)
    real = state_answer._encode

    async def untold(s: State) -> list[Any]:
        parts = await real(s)
        if s.last_seq == 5000:
            apply(s, Recorded(s.last_seq + 1, "job-1", 2, 1.0, progress(1, 5)))
        return parts

    monkeypatch.setattr(state_answer, "_encode", untold)
    assert await answer.text() == state_to_json(state) and state.last_seq == 5001


async def test_a_state_that_never_holds_still_is_encoded_in_one_go(monkeypatch: pytest.MonkeyPatch) -> None:
    state = big_state()
    answer = StateAnswer(lambda: state)
    folding = Folding(answer, state, [JobFailed(job_id=4, reason="no dataset")], spoil=100)
    monkeypatch.setattr(state_answer, "_encode", folding)
    assert await answer.text() == state_to_json(state)
    assert folding.builds == 3


async def test_v1_state_sends_the_pieces_as_json(tmp_path: Path) -> None:
    """Through the API: the answer, its length and type; HEAD without a body; once the state moves
    on, the next answer is built anew."""
    state = big_state()
    store = await EventStore.open(tmp_path / "llmtraind.sqlite3")
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(make_app(ReadSide(lambda: state, store, store.path, time.monotonic())))
    )
    await client.start_server()
    try:
        got = await client.get("/v1/state")
        assert got.status == 200 and got.content_type == "application/json" and got.charset == "utf-8"
        body = await got.read()
        assert body.decode() == state_to_json(state) and got.content_length == len(body)
        head = await client.head("/v1/state")
        assert head.status == 200 and head.content_length == len(body) and await head.read() == b""
        apply(state, Recorded(state.last_seq + 1, "job-1", 2, 1.0, progress(1, 42)))
        again = await client.get("/v1/state")
        assert json.loads(await again.read())["jobs"]["1"]["runs"][0]["progress"]["step"] == 42
    finally:
        await client.close()
        await store.close()
