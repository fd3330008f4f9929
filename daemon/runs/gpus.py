"""GPU discovery: NVML when a driver is present, nothing when not, and a fake for tests.

NVML calls block (and can take tens of milliseconds on a busy box), so every probe runs in a thread.
All probes share one interface and one contract test suite.

The fake is the hardware edge's stand-in where no GPU exists: in-process tests script it directly;
a daemon under test reads it from the JSON file `LLMTRAIND_TEST_FAKE_GPUS` names, re-read at
every probe so the test can start and stop "foreign" GPU processes while the daemon runs:
`{"count": 2, "memory_mib": 81920, "processes": {"0": [[pid, used_mib], ...]}}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from daemon.core.gpus import GpuProbe, GpuProcess, GpuStatus

__all__ = [
    "FAKE_GPUS_ENV",
    "FakeGpuProbe",
    "NoGpuProbe",
    "NvmlProbe",
    "make_probe",
]

log = logging.getLogger(__name__)
_MIB = 1024 * 1024
FAKE_GPUS_ENV = "LLMTRAIND_TEST_FAKE_GPUS"


class NoGpuProbe:
    """`[gpus] devices = "none"`, or no NVIDIA driver: the CPU slots are all there is."""

    kind = "none"

    async def snapshot(self) -> list[GpuStatus]:
        return []


def _selected(gpus: list[GpuStatus], devices: Sequence[int | str] | None) -> list[GpuStatus]:
    if devices is None:
        return gpus
    wanted = {str(d) for d in devices}
    return [g for g in gpus if str(g.index) in wanted or g.uuid in wanted]


class NvmlProbe:
    """nvidia-ml-py; a missing driver or library means no GPUs, never an error."""

    kind = "nvml"

    def __init__(self, devices: Sequence[int | str] | None = None) -> None:
        self.devices = devices
        self._ready = False
        self.error = ""

    async def snapshot(self) -> list[GpuStatus]:
        return await asyncio.to_thread(self._snapshot_sync)

    def _init(self) -> bool:
        import pynvml

        if not self._ready:
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as e:
                self.error = f"NVML unavailable: {e}"
                return False
            self._ready = True
        return True

    def _snapshot_sync(self) -> list[GpuStatus]:
        import pynvml

        if not self._init():
            return []
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            try:
                out.append(self._device(pynvml, i))
            except pynvml.NVMLError as e:
                log.warning("GPU %d: NVML query failed: %s", i, e)
        return _selected(out, self.devices)

    @staticmethod
    def _device(nv: Any, index: int) -> GpuStatus:
        h = nv.nvmlDeviceGetHandleByIndex(index)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        util = nv.nvmlDeviceGetUtilizationRates(h)
        procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
        name = nv.nvmlDeviceGetName(h)
        uuid = nv.nvmlDeviceGetUUID(h)
        return GpuStatus(
            index=index,
            uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
            name=name.decode() if isinstance(name, bytes) else str(name),
            memory_total_mib=int(mem.total) // _MIB,
            memory_used_mib=int(mem.used) // _MIB,
            utilization_pct=int(util.gpu),
            processes=tuple(GpuProcess(int(p.pid), int(p.usedGpuMemory or 0) // _MIB) for p in procs),
        )


class FakeGpuProbe:
    """A scripted box for tests: GPUs whose processes and memory the test changes at will, directly
    (`set_processes`) or, for a daemon in another process, through a `script` file."""

    kind = "fake"

    def __init__(
        self,
        count: int,
        memory_mib: int = 81_920,
        name: str = "Fake H100",
        *,
        script: Path | None = None,
        devices: Sequence[int | str] | None = None,
    ) -> None:
        self._gpus = [GpuStatus(i, f"GPU-fake-{i:04d}", name, memory_mib, 0, 0) for i in range(count)]
        self.script = script
        self.devices = devices

    @classmethod
    def from_script(cls, script: Path, devices: Sequence[int | str] | None = None) -> FakeGpuProbe:
        spec = _read_script(script)
        return cls(
            int(spec.get("count", 1)), int(spec.get("memory_mib", 81_920)), script=script, devices=devices
        )

    def set_processes(self, index: int, processes: Sequence[GpuProcess]) -> None:
        used = sum(p.used_mib for p in processes)
        self._gpus[index] = replace(self._gpus[index], processes=tuple(processes), memory_used_mib=used)

    async def snapshot(self) -> list[GpuStatus]:
        if self.script is not None:
            spec = await asyncio.to_thread(_read_script, self.script)
            procs: Mapping[str, Sequence[Sequence[int]]] = spec.get("processes", {})
            for g in self._gpus:
                self.set_processes(
                    g.index, [GpuProcess(int(p), int(m)) for p, m in procs.get(str(g.index), [])]
                )
        else:
            await asyncio.sleep(0)
        return _selected(list(self._gpus), self.devices)


def _read_script(path: Path) -> dict[str, Any]:
    spec = json.loads(path.read_text())
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a fake GPU script is a JSON object")
    return spec


def make_probe(
    devices: Literal["auto", "none"] | Sequence[int | str], environ: Mapping[str, str] = os.environ
) -> GpuProbe:
    if devices == "none":
        return NoGpuProbe()
    selected = None if devices == "auto" else list(devices)
    script = environ.get(FAKE_GPUS_ENV)
    if script:
        log.warning("GPUs are the fake ones scripted in %s (%s is set: a test hook)", script, FAKE_GPUS_ENV)
        return FakeGpuProbe.from_script(Path(script), selected)
    return NvmlProbe(selected)
