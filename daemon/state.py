"""State is a fold over the log: `apply(state, recorded)` is the only way it changes.

`apply` is deterministic and does no I/O; it updates the accumulator it is given and returns it
(a reduce's accumulator, owned by the fold), which keeps a replay of a million events linear.
Callers that need an older state fold again or load a snapshot; nobody else mutates a State.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import TypeAdapter

from .events import DaemonStarted, DaemonStopped, GpuSeen, Recorded

__all__ = ["STATE_SCHEMA", "DaemonInfo", "State", "apply", "fold", "state_from_json", "state_to_json"]

STATE_SCHEMA = 1
"""Bump when State's shape changes: snapshots of another schema are ignored and the log is replayed."""


@dataclass(slots=True)
class DaemonInfo:
    version: str
    pid: int
    host: str
    boot_id: str
    config_digest: str
    started_ts: float
    stopped_ts: float | None = None
    gpus: list[GpuSeen] = field(default_factory=list)


@dataclass(slots=True)
class State:
    """Plain slotted dataclasses, not pydantic models: the fold assigns millions of attributes on a
    long replay, and pydantic's validating __setattr__ made that the dominant cost."""

    schema_version: int = STATE_SCHEMA
    last_seq: int = 0
    daemon: DaemonInfo | None = None
    daemon_starts: int = 0
    unclean_stops: int = 0
    """Starts that found the previous daemon had not recorded DaemonStopped (a crash or kill -9)."""


def _daemon_started(state: State, rec: Recorded, ev: DaemonStarted) -> None:
    if state.daemon is not None and state.daemon.stopped_ts is None:
        state.unclean_stops += 1
    state.daemon_starts += 1
    state.daemon = DaemonInfo(
        version=ev.version,
        pid=ev.pid,
        host=ev.host,
        boot_id=ev.boot_id,
        config_digest=ev.config_digest,
        started_ts=rec.ts,
        gpus=list(ev.gpus),
    )


def _daemon_stopped(state: State, rec: Recorded, ev: DaemonStopped) -> None:
    if state.daemon is not None and state.daemon.pid == ev.pid:
        state.daemon.stopped_ts = rec.ts


def apply(state: State, rec: Recorded) -> State:
    """Fold one recorded event into `state` and return it."""
    ev = rec.event
    match ev:
        case DaemonStarted():
            _daemon_started(state, rec, ev)
        case DaemonStopped():
            _daemon_stopped(state, rec, ev)
    state.last_seq = rec.seq
    return state


_STATE_ADAPTER: TypeAdapter[State] = TypeAdapter(State)


def state_to_json(state: State) -> str:
    return _STATE_ADAPTER.dump_json(state).decode()


def state_from_json(text: str | bytes) -> State:
    return _STATE_ADAPTER.validate_json(text)


def fold(events: Iterable[Recorded], state: State | None = None) -> State:
    acc = State() if state is None else state
    for rec in events:
        acc = apply(acc, rec)
    return acc
