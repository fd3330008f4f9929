"""The event catalogue: every fact the daemon records, typed and versioned.

Events are immutable once written. When a shape must change, bump the class's `schema_version` and
register an upcaster from the old version: old rows are never rewritten, they are lifted on read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "EVENT_TYPES",
    "DaemonStarted",
    "DaemonStopped",
    "Event",
    "GpuSeen",
    "NewEvent",
    "Recorded",
    "decode_event",
    "upcast",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: ClassVar[int] = 1


class GpuSeen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    index: int
    uuid: str
    name: str
    memory_total_mib: int


class DaemonStarted(_Event):
    """A daemon process took the state directory's lock and began serving."""

    type: Literal["DaemonStarted"] = "DaemonStarted"
    version: str
    config_digest: str
    host: str
    pid: int
    boot_id: str
    gpus: list[GpuSeen] = []


class DaemonStopped(_Event):
    """A daemon process stopped cleanly; its absence before the next DaemonStarted means a crash."""

    type: Literal["DaemonStopped"] = "DaemonStopped"
    pid: int
    reason: str


Event = Annotated[DaemonStarted | DaemonStopped, Field(discriminator="type")]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: dict[str, type[_Event]] = {
    cls.model_fields["type"].default: cls for cls in (DaemonStarted, DaemonStopped)
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(type, from_schema) -> function lifting that shape to from_schema + 1."""


def upcast(
    type_: str, schema: int, data: dict[str, Any], upcasters: Mapping[tuple[str, int], Upcaster]
) -> dict[str, Any]:
    """Lift `data` written at `schema` to the class's current schema through the registered chain."""
    target = EVENT_TYPES[type_].schema_version
    while schema < target:
        step = upcasters.get((type_, schema))
        if step is None:
            raise ValueError(f"no upcaster for {type_} schema {schema} -> {schema + 1}")
        data = step(data)
        schema += 1
    if schema > target:
        raise ValueError(f"{type_} schema {schema} is newer than this daemon understands ({target})")
    return data


def decode_event(type_: str, schema: int, data_json: str) -> Event:
    """Rows written at the current schema validate straight from JSON; older ones are upcast first."""
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        raise ValueError(f"unknown event type {type_!r}")
    if schema == cls.schema_version:
        return cls.__pydantic_validator__.validate_json(data_json)  # type: ignore[no-any-return]
    lifted = upcast(type_, schema, json.loads(data_json), UPCASTERS)
    return EVENT_ADAPTER.validate_python(lifted)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event on its way into the log, with the key that makes its append idempotent."""

    event: Event
    idem_key: str | None = None


class Recorded(NamedTuple):
    """An event as the log holds it: the envelope the fold and the API see (a tuple: replays make
    millions of them)."""

    seq: int
    stream: str
    version: int
    ts: float
    event: Event
