"""Old event shapes are lifted on read, never rewritten (upcasting)."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest

from daemon.core.events import EVENT_TYPES, DaemonStopped, Event, decode_event, upcast


def test_current_schema_decodes_straight() -> None:
    ev = DaemonStopped(pid=3, reason="signal")
    assert decode_event("DaemonStopped", 1, ev.model_dump_json()) == ev


def test_upcasters_chain_from_old_schema_to_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pretend v3 of DaemonStopped, whose v1 had `why` and v2 had `reason` but no `pid`."""
    monkeypatch.setattr(DaemonStopped, "schema_version", 3)

    def v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
        return {"type": d["type"], "reason": d["why"]}

    def v2_to_v3(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "pid": 0}

    chain = {("DaemonStopped", 1): v1_to_v2, ("DaemonStopped", 2): v2_to_v3}
    lifted = upcast("DaemonStopped", 1, {"type": "DaemonStopped", "why": "old"}, chain)
    assert DaemonStopped.model_validate(lifted) == DaemonStopped(pid=0, reason="old")
    with pytest.raises(ValueError, match="no upcaster for DaemonStopped schema 2 -> 3"):
        upcast("DaemonStopped", 2, {}, {("DaemonStopped", 1): v1_to_v2})


def test_a_newer_schema_than_the_code_is_an_error() -> None:
    with pytest.raises(ValueError, match="newer than this daemon"):
        decode_event("DaemonStopped", 99, json.dumps({"type": "DaemonStopped", "pid": 1, "reason": ""}))


def test_unknown_types_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        decode_event("Nope", 1, "{}")


def test_the_catalogue_and_the_union_agree() -> None:
    union_members = typing.get_args(typing.get_args(Event)[0])
    assert {cls.model_fields["type"].default for cls in union_members} == set(EVENT_TYPES)
    for name, cls in EVENT_TYPES.items():
        assert cls.model_fields["type"].default == name
