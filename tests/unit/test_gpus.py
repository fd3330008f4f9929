"""One contract for every GPU probe: the real NVML adapter, the no-GPU probe and the test fake."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.core.gpus import GpuProbe, GpuProcess, GpuStatus
from daemon.runs.gpus import FAKE_GPUS_ENV, FakeGpuProbe, NoGpuProbe, NvmlProbe, make_probe

pytestmark = pytest.mark.timeout(30)


def scripted(tmp: Path) -> GpuProbe:
    script = tmp / "gpus.json"
    script.write_text(json.dumps({"count": 3, "memory_mib": 1000, "processes": {"1": [[4242, 300]]}}))
    return make_probe("auto", {FAKE_GPUS_ENV: str(script)})


PROBES: dict[str, Callable[[Path], GpuProbe]] = {
    "nvml": lambda _: NvmlProbe(),
    "nvml-selected": lambda _: NvmlProbe(devices=[0]),
    "none": lambda _: NoGpuProbe(),
    "fake": lambda _: FakeGpuProbe(4),
    "fake-scripted": scripted,
}


@pytest.mark.parametrize("make", PROBES.values(), ids=PROBES.keys())
async def test_probe_contract(make: Callable[[Path], GpuProbe], tmp_path: Path) -> None:
    probe = make(tmp_path)
    gpus = await probe.snapshot()
    if not gpus and isinstance(probe, NvmlProbe):
        pytest.skip(f"no NVIDIA GPU here: NVML found none ({probe.error or 'it counts 0 devices'})")
    assert all(isinstance(g, GpuStatus) for g in gpus)
    assert [g.index for g in gpus] == sorted(g.index for g in gpus)
    assert len({g.uuid for g in gpus}) == len(gpus)
    for g in gpus:
        assert 0 <= g.memory_used_mib <= g.memory_total_mib
        assert 0 <= g.utilization_pct <= 100
        assert all(p.pid > 0 and p.used_mib >= 0 for p in g.processes)
    assert await probe.snapshot() == gpus or probe.kind == "nvml"


async def test_nvml_without_a_driver_is_no_gpus_not_an_error() -> None:
    probe = NvmlProbe()
    gpus = await probe.snapshot()
    if gpus:
        pytest.skip(f"NVML found {len(gpus)} GPU(s) here: the no-driver path needs a box without one")
    assert "NVML unavailable" in probe.error


async def test_fake_reports_processes_and_memory() -> None:
    probe = FakeGpuProbe(2, memory_mib=1000)
    probe.set_processes(1, [GpuProcess(pid=4242, used_mib=300)])
    gpus = await probe.snapshot()
    assert gpus[1].processes == (GpuProcess(4242, 300),) and gpus[1].memory_used_mib == 300
    assert gpus[0].processes == ()


def test_make_probe_follows_the_config() -> None:
    assert make_probe("none").kind == "none"
    assert make_probe("auto").kind == "nvml"
    probe = make_probe([0, "GPU-x"])
    assert isinstance(probe, NvmlProbe) and probe.devices == [0, "GPU-x"]


async def test_a_scripted_fake_follows_its_file_and_the_device_selection(tmp_path: Path) -> None:
    script = tmp_path / "gpus.json"
    script.write_text(json.dumps({"count": 3, "memory_mib": 1000}))
    probe = make_probe([0, "GPU-fake-0002"], {FAKE_GPUS_ENV: str(script)})
    assert isinstance(probe, FakeGpuProbe)
    assert [(g.index, g.processes) for g in await probe.snapshot()] == [(0, ()), (2, ())]
    script.write_text(json.dumps({"count": 3, "processes": {"2": [[7, 100], [8, 50]]}}))
    gpus = await probe.snapshot()
    assert gpus[1].processes == (GpuProcess(7, 100), GpuProcess(8, 50)) and gpus[1].memory_used_mib == 150
    assert make_probe("none", {FAKE_GPUS_ENV: str(script)}).kind == "none"
