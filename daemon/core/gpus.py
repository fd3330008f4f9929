"""The GPUs as every part sees them: what a probe reports, and the interface every probe keeps.

The scheduler places on these values, the API shows them, and the probes (NVML, none, the fake)
produce them, so they live here rather than beside any one probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["GpuProbe", "GpuProcess", "GpuStatus"]


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    used_mib: int


@dataclass(frozen=True, slots=True)
class GpuStatus:
    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_used_mib: int
    utilization_pct: int
    processes: tuple[GpuProcess, ...] = field(default=())


class GpuProbe(Protocol):
    kind: str

    async def snapshot(self) -> list[GpuStatus]:
        """The managed GPUs as they are now, in index order."""
        ...
