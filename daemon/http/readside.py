"""What the API may look at, and the app keys its handlers find it under: apart from the routes, so
that every route module and the middleware reach it without importing the app factory."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon.core.state import State
from daemon.http.sse import SseHub, SseSettings
from daemon.log.store import EventStore

if TYPE_CHECKING:
    from daemon.core.gpus import GpuStatus

__all__ = ["READ_SIDE", "SSE_HUB", "GpuReading", "ReadSide"]

GpuReading = tuple["Sequence[GpuStatus]", float]
"""The GPUs as last probed, and when (time.monotonic())."""


def _no_gpus() -> GpuReading:
    return [], time.monotonic()


def _no_trouble() -> str:
    return ""


def _no_targets() -> list[dict[str, Any]]:
    return []


def _no_disk() -> Mapping[str, Any]:
    return {}


def _local() -> Mapping[str, Any]:
    return {"kind": "local", "slurm": None}


@dataclass
class ReadSide:
    """What the API may look at: the live state, the log (read only), the last GPU probe (owned by
    the scheduling loop) and the daemon's health."""

    state: Callable[[], State]
    store: EventStore
    db_path: Path
    started_monotonic: float
    token: str = ""
    gpus: Callable[[], GpuReading] = _no_gpus
    sse: SseSettings = field(default_factory=SseSettings)
    intake_trouble: Callable[[], str] = _no_trouble
    """What keeps the inbox from finishing its work (the state's disk is full, ...), or ""."""
    runs_trouble: Callable[[], str] = _no_trouble
    """What the runs did that the log has not taken yet (its lock is held elsewhere, the disk is
    full), or "": the log's own probe may pass while a run's records still wait."""
    notify: Callable[[], list[dict[str, Any]]] = _no_targets
    executor: Callable[[], Mapping[str, Any]] = _local
    disk: Callable[[], Mapping[str, Any]] = _no_disk
    """The state folder's free space against `[runs] min_free_disk_gib` (`daemon.core.disk`)."""
    """Who places runs, and for Slurm the cluster as sinfo and squeue last showed it."""
    """The notification targets as the notifier shows them (never a secret)."""

    def health(self) -> tuple[bool, str]:
        if not self.store.healthy:
            return False, self.store.last_error
        trouble = self.intake_trouble()
        if trouble:
            return False, f"intake: {trouble}"
        trouble = self.runs_trouble()
        return (False, f"runs: {trouble}") if trouble else (True, "")


READ_SIDE = web.AppKey("read_side", ReadSide)
SSE_HUB = web.AppKey("sse_hub", SseHub)
