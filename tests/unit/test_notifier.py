"""The notifier against a real event log in a temporary folder and a command target (a tiny Python
script that appends its stdin to a file): cursors recorded and resumed, a new target starting at the
log's end, a long skip recorded once, a reload, and the daemon.unhealthy alert."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from daemon.core.config import NotifyTarget
from daemon.core.events import FileRejected, JobsWaiting, NewEvent
from daemon.core.streams import INTAKE_STREAM, SCHEDULER_STREAM
from daemon.log.projector import Projector
from daemon.log.store import EventStore
from daemon.notify import notifier as notifier_module
from daemon.notify.notifier import Notifications


def _target(out: Path, name: str = "cmd", **kw: object) -> NotifyTarget:
    script = f"import sys\nopen({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    return NotifyTarget.model_validate({"name": name, "command": [sys.executable, "-c", script]} | kw)


def _rejected(i: int) -> NewEvent:
    return NewEvent(
        FileRejected(
            drop=f"d{i}", filename=f"b{i}.jsonl", kind="dataset", summary="s", problems="", kept_as="k"
        )
    )


def _got(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


async def _until(check: object, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _open(path: Path) -> tuple[EventStore, Projector, Notifications]:
    store = await EventStore.open(path)
    projector = await Projector.start(store, 1000)
    return store, projector, Notifications(store, lambda: projector.state)


async def test_a_new_target_starts_at_the_end_and_a_restart_resumes_at_its_cursor(tmp_path: Path) -> None:
    out, db = tmp_path / "out", tmp_path / "state" / "log.db"
    store, _, notify = await _open(db)
    await store.append(INTAKE_STREAM, [_rejected(0)])
    await notify.start([_target(out)])
    await store.append(INTAKE_STREAM, [_rejected(1)])
    await _until(lambda: notify.view()[0]["delivered"] == 1)  # the command exited 0, not just wrote
    await notify.stop()
    await store.append(INTAKE_STREAM, [_rejected(2)])
    await store.close()

    store, _, notify = await _open(db)
    await notify.start([_target(out)])
    await _until(lambda: len(_got(out)) == 2)
    await asyncio.sleep(0.3)
    assert [g["data"]["filename"] for g in _got(out)] == ["b1.jsonl", "b2.jsonl"]  # type: ignore[index]
    types = [r.event.type for r in await store.read_stream("notify:cmd")]
    assert types == ["NotifyCursor", "NotifyDelivered", "NotifyDelivered"]
    await notify.stop()
    await store.close()


async def test_a_long_run_of_unwanted_events_is_skipped_with_one_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifier_module, "SKIP_RECORD_EVERY", 20)
    store, _, notify = await _open(tmp_path / "state" / "log.db")
    await notify.start([_target(tmp_path / "out")])
    for i in range(25):
        await store.append(SCHEDULER_STREAM, [NewEvent(JobsWaiting(reasons={"1": f"r{i}"}))])
    await _until(lambda: notify.view()[0]["cursor"] == store.last_seq)
    await asyncio.sleep(0.2)
    cursors = [r.event for r in await store.read_stream("notify:cmd")]
    assert len(cursors) == 2 and cursors[-1].seq >= 20  # type: ignore[union-attr]
    await notify.stop()
    await store.close()


async def test_reload_removes_changes_and_adds_targets(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    store, _, notify = await _open(tmp_path / "state" / "log.db")
    await notify.start([_target(a, "a")])
    await notify.reconfigure([_target(b, "b")])
    await store.append(INTAKE_STREAM, [_rejected(0)])
    await _until(lambda: len(_got(b)) == 1)
    await asyncio.sleep(0.2)
    assert _got(a) == [] and [t["name"] for t in notify.view()] == ["b"]
    await notify.reconfigure([_target(b, "b", on=["dataset.accepted"])])
    await store.append(INTAKE_STREAM, [_rejected(1)])
    await asyncio.sleep(0.5)
    assert len(_got(b)) == 1
    await notify.stop()
    await store.close()


async def test_unhealthy_is_sent_once_each_time_health_turns_bad(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store, _, notify = await _open(tmp_path / "state" / "log.db")
    await notify.start([_target(out, on=["daemon.unhealthy"])])
    health = iter(
        [(True, ""), (False, "event log not writable"), (False, "still"), (True, ""), (False, "again")]
    )
    watch = asyncio.create_task(notify.watch_health(lambda: next(health, (True, "")), 0.01))
    await _until(lambda: len(_got(out)) == 2)
    watch.cancel()
    reasons = [g["data"]["reason"] for g in _got(out)]  # type: ignore[index]
    assert reasons == ["event log not writable", "again"]
    assert [r.event.type for r in await store.read_stream("notify:cmd")] == ["NotifyCursor"]
    await notify.stop()
    await store.close()


async def test_a_command_that_fails_is_retried_then_given_up_and_the_cursor_moves_on(tmp_path: Path) -> None:
    store, _, notify = await _open(tmp_path / "state" / "log.db")
    failing = NotifyTarget(
        name="f", command=(sys.executable, "-c", "import sys; sys.exit('nope')"), attempts=2, backoff_s=0.01
    )
    await notify.start([failing])
    await store.append(INTAKE_STREAM, [_rejected(0)])
    await _until(lambda: notify.view()[0]["given_up"] == 1)
    await notify.stop()
    (given_up,) = [r.event for r in await store.read_stream("notify:f") if r.event.type == "NotifyGivenUp"]
    assert given_up.reason == "exit status 1: nope" and given_up.attempts == 2
    await store.close()
