"""One contract for every GPU probe: the real NVML adapter, the no-GPU probe and the test fake."""

from __future__ import annotations

import pytest

from daemon.gpus import FakeGpuProbe, GpuProbe, GpuProcess, GpuStatus, NoGpuProbe, NvmlProbe, make_probe


def probes() -> list[GpuProbe]:
    return [NvmlProbe(), NoGpuProbe(), FakeGpuProbe(4), NvmlProbe(devices=[0])]


@pytest.mark.parametrize("probe", probes(), ids=lambda p: p.kind)
async def test_probe_contract(probe: GpuProbe) -> None:
    gpus = await probe.snapshot()
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
    if not gpus:
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
