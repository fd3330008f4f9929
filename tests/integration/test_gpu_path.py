"""The GPU path through a real daemon, where no GPU exists: the probe is the scripted fake
(gpus.py, `LLMTRAIND_TEST_FAKE_GPUS`), everything else is real: placement, the run's
CUDA_VISIBLE_DEVICES, our processes told from foreign ones by session, waiting reasons, an
out-of-memory retried because a foreign process shared the GPU, and cancel. The runs are the
fake of tests/fakeswift.py, which records the GPU environment it was started with."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from daemon.runs.gpus import FAKE_GPUS_ENV
from tests.daemon_proc import Daemon, session_members
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_restart import config, events_of
from tests.integration.test_runs import finished, job, job_yaml, maybe_job, sft_rows, wait_state

pytestmark = pytest.mark.timeout(180)

OOM = (
    "Traceback (most recent call last):\n"
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity"
    " of 79.10 GiB of which 1.06 GiB is free.\n"
)


class FakeBox:
    """Two fake H100s; `place` rewrites which processes each one shows (atomically: the daemon
    re-reads the file at every probe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.place({})

    def place(self, processes: dict[int, list[int]]) -> None:
        spec = {
            "count": 2,
            "processes": {str(i): [[pid, 1000] for pid in pids] for i, pids in processes.items()},
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec))
        os.replace(tmp, self.path)


def gpus(d: Daemon) -> list[dict[str, Any]]:
    code, body = d.get("/v1/gpus")
    assert code == 200
    return list(body["gpus"])


def swift_pid(body: dict[str, Any]) -> int:
    return int(json.loads((Path(body["run"]["run_dir"]) / "supervisor.json").read_text())["child_pid"])


def test_placement_ownership_shared_oom_and_cancel_on_fake_gpus(
    daemon_factory: type[Daemon], tmp_path: Path, stranger: int
) -> None:
    box = FakeBox(tmp_path / "gpus.json")
    env = {
        FAKE_GPUS_ENV: str(box.path),
        "LLMTRAIND_GPUS_DEVICES": "auto",
        "LLMTRAIND_RUNS_GPU_PROBE_S": "0.2",
        "FAKE_STEP_S": "0.1",
    }
    d = daemon_factory(tmp_path / "d", extra_config=config(write_wrapper(tmp_path)), env=env).start()
    box.place({1: [stranger]})
    oom_model = fake_model(tmp_path / "a", exit_status=1, stderr=OOM)
    (oom_model / "hold").touch()  # a ends (out of memory) when the test says
    d.drop("chat.jsonl", sft_rows())
    d.drop("a.yaml", job_yaml(oom_model, "lora", dataset="chat", max_steps=5, retries=1, priority=5))
    d.drop("b.yaml", job_yaml(fake_model(tmp_path / "b"), "lora", dataset="chat", max_steps=3000))

    # a takes GPU 0; GPU 1 has a foreign process, so b waits and says why.
    a = d.wait_for(
        "a running with its swift pid",
        lambda: ((j := maybe_job(d, "a")).get("run") or {}).get("pid") and j,
        30,
    )
    assert a["state"] == "running" and a["run"]["gpus"] == [0] and a["run"]["gpu_uuids"] == ["GPU-fake-0000"]
    b = wait_state(d, "b", ("queued",), 10)
    d.wait_for("b's reason", lambda: "foreign process" in (job(d, "b")["reason"] or ""), 10)
    recorded = Path(a["run"]["output_dir"]) / "fake_env.json"
    d.wait_for("the run's GPU environment recorded", recorded.exists, 30)
    fake_env = json.loads(recorded.read_text())
    assert fake_env["CUDA_VISIBLE_DEVICES"] == "GPU-fake-0000"
    assert fake_env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert b["run"] is None

    # a's own swift on GPU 0 is ours, not foreign; the stranger on GPU 1 is.
    box.place({0: [swift_pid(a)], 1: [stranger]})
    d.wait_for("a's process seen as ours", lambda: len(gpus(d)[0]["processes"]) == 1, 10)
    g0, g1 = gpus(d)
    assert g0["lease"]["name"] == "a" and g0["foreign_processes"] == 0
    assert g1["lease"] is None and g1["foreign_processes"] == 1 and g1["processes"][0]["pid"] == stranger
    table = d.cli("gpus").stdout.splitlines()
    assert (
        f"{a['id']} a" in table[1]
        and table[1].endswith(" -")
        and table[2].endswith(f"pid {stranger} (1,000 MiB)")
    )

    # The stranger moves onto a's GPU: b gets GPU 1, and a's out-of-memory counts as transient.
    box.place({0: [swift_pid(a), stranger]})
    b = d.wait_for("b running", lambda: (j := job(d, "b"))["state"] == "running" and j, 20)
    assert b["run"]["gpus"] == [1]
    d.wait_for("the stranger seen on GPU 0", lambda: gpus(d)[0]["foreign_processes"] == 1, 10)
    (oom_model / "hold").unlink()
    a = d.wait_for("a's first attempt to end", lambda: (j := job(d, "a"))["run"]["exit"] and j, 30)
    assert a["run"]["gpu_shared"] == [0], "GpuShared was recorded for a's run"
    first = a["run"]["exit"]
    assert first["failure"]["kind"] == "out_of_memory" and first["failure"]["transient"], first
    assert "another process was using the GPU" in first["failure"]["reason"] and first["retry"]
    a = d.wait_for(
        "a's retry waiting", lambda: "foreign process" in ((j := job(d, "a"))["reason"] or "") and j, 10
    )
    assert a["state"] == "queued", a

    # The stranger leaves and the fixed model lets the retry succeed on GPU 0.
    (oom_model / "exit_status").unlink()
    (oom_model / "stderr").unlink()
    box.place({})
    a = finished(d, "a", 60)
    assert a["state"] == "succeeded" and a["run"]["attempt"] == 2 and a["run"]["gpus"] == [0], a

    # Cancel b: cancelled, GPU 1 released, nothing of its session left.
    d.cli("cancel", "b")
    b = finished(d, "b", 30)
    assert b["state"] == "cancelled" and b["run"]["exit"]["stopped"] == "cancel"
    sid = json.loads((Path(b["run"]["run_dir"]) / "supervisor.json").read_text())["sid"]
    assert session_members(sid) == []
    assert all(g["lease"] is None for g in gpus(d))
    types = [e["type"] for e in events_of(d, "a")]
    assert types.count("JobStarted") == 2 and types.count("RunExited") == 2 and types.count("GpuShared") == 1
