"""`make gpu-check`: on a box with an NVIDIA GPU (offline is fine), check the GPU path through a real
daemon and print a short report. Without a GPU (no NVML, or NVML sees none) it says so and exits 0.

Checks, each through a daemon started here with `[gpus] devices` set (its own temporary folder):
1. NVML discovery: /v1/gpus lists every GPU NVML sees, with name and memory.
2. A tiny-model LoRA SFT on CUDA: it succeeds on GPU 0 (CUDA_VISIBLE_DEVICES by UUID), its progress
   reaches max_steps, and its metrics carry GPU memory (swift logs `memory(GiB)` only on a GPU).
3. A cancel frees the GPU: a longer run is cancelled once it holds memory; NVML then shows none of
   its processes on the GPU and the used memory back near where it was before.
4. Two one-GPU jobs on a one-GPU box (`devices = [0]`) run one after the other: the second starts
   only after the first's end is recorded.

Run: `make gpu-check` (or `.venv/bin/python -m tests.gpu_check`); exit 1 when a check fails.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.daemon_proc import Daemon
from tests.integration.test_runs import job_yaml, sft_rows


def _nvml() -> tuple[list[dict[str, Any]], str]:
    """What NVML sees (index, uuid, name, memory used MiB, pids), or why it cannot say."""
    try:
        import pynvml
    except ImportError as e:
        return [], f"pynvml is not installed ({e})"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return [], f"NVML does not start: {e}"
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
            found.append(
                {
                    "index": i,
                    "uuid": pynvml.nvmlDeviceGetUUID(h),
                    "name": pynvml.nvmlDeviceGetName(h),
                    "used_mib": mem.used // (1024 * 1024),
                    "pids": sorted(p.pid for p in procs),
                }
            )
        return found, ""
    finally:
        pynvml.nvmlShutdown()


def _daemon(root: Path, devices: str) -> Daemon:
    d = Daemon(root, extra_config="[runs]\npoll_s = 0.5\nschedule_s = 0.5\nstop_grace_s = 10\n")
    d.config.write_text(d.config.read_text().replace('devices = "none"', f"devices = {devices}"))
    return d.start()


def _job(d: Daemon, name: str) -> dict[str, Any]:
    code, body = d.get(f"/v1/jobs/{name}")
    return dict(body) if code == 200 else {}


def _until(d: Daemon, what: str, check: Callable[[], Any], timeout: float) -> Any:
    return d.wait_for(what, check, timeout)


def _ended(d: Daemon, name: str, timeout: float) -> dict[str, Any]:
    return dict(
        _until(
            d,
            f"{name} ended",
            lambda: (j := _job(d, name)) and j["state"] in ("succeeded", "failed", "cancelled") and j,
            timeout,
        )
    )


def _lora(model: Path, max_steps: int) -> str:
    return job_yaml(model, "lora", dataset="chat", max_steps=max_steps, gpus=1)


def check_discovery(root: Path, nvml: list[dict[str, Any]]) -> str:
    d = _daemon(root, '"auto"')
    try:
        code, body = d.get("/v1/gpus")
        assert code == 200, body
        listed = body["gpus"]
        assert [g["uuid"] for g in listed] == [g["uuid"] for g in nvml], (listed, nvml)
        return "; ".join(f"{g['index']}: {g['name']}, {g['memory_total_mib']} MiB" for g in listed)
    finally:
        d.stop()


def check_sft(root: Path, model: Path) -> str:
    d = _daemon(root, "[0]")
    try:
        d.drop("chat.jsonl", sft_rows(32))
        d.drop("cuda.yaml", _lora(model, 20))
        body = _ended(d, "cuda", 600)
        assert body["state"] == "succeeded", body.get("reason")
        run = body["run"]
        assert run["gpus"] == [0] and "GPU-" in run["command"], run["command"]
        code, page = d.get("/v1/jobs/cuda/metrics")
        train = [m for m in page["metrics"] if m["kind"] == "train"]
        memory = [m["memory_gib"] for m in train if m.get("memory_gib") is not None]
        assert train and train[-1]["step"] == 20, train[-1:]
        assert memory, "no GPU memory in the metrics"
        return f"20/20 steps, peak memory {max(memory):.2f} GiB, loss {train[-1]['loss']}"
    finally:
        d.stop()


def check_cancel(root: Path, model: Path, before_mib: int) -> str:
    d = _daemon(root, "[0]")
    try:
        d.drop("chat.jsonl", sft_rows(32))
        d.drop("long.yaml", _lora(model, 100000))
        _until(d, "long on the GPU", lambda: (_job(d, "long").get("progress") or {}).get("step", 0) >= 3, 600)
        held, _ = _nvml()
        ours = held[0]["pids"]  # empty where NVML cannot see this pid namespace's processes
        assert held[0]["used_mib"] > before_mib, "no memory in use on GPU 0 while the run trains"
        cancel = d.cli("cancel", "long", "--wait", "60", timeout=90)
        assert cancel.returncode == 0 and "cancelled" in cancel.stdout, cancel.stdout + cancel.stderr

        def freed() -> dict[str, Any] | None:
            now, _ = _nvml()
            gone = not set(now[0]["pids"]) & set(ours) and now[0]["used_mib"] <= before_mib + 512
            return now[0] if gone else None

        after = _until(d, "the GPU freed (its processes gone, memory within 512 MiB of before)", freed, 60)
        return (
            f"while training {held[0]['used_mib']} MiB used by pids {ours}; after the cancel "
            f"{after['used_mib']} MiB (before: {before_mib} MiB), none of its processes left"
        )
    finally:
        d.stop()


def check_one_after_the_other(root: Path, model: Path) -> str:
    d = _daemon(root, "[0]")
    try:
        d.drop("chat.jsonl", sft_rows(32))
        d.drop("first.yaml", _lora(model, 10))
        d.drop("second.yaml", _lora(model, 10))
        for name in ("first", "second"):
            body = _ended(d, name, 600)
            assert body["state"] == "succeeded", (name, body.get("reason"))
        code, page = d.get("/v1/events?limit=1000")
        names = {j["id"]: j["name"] for j in d.get("/v1/jobs")[1]["jobs"]}
        order = [
            (e["type"], names[e["data"]["job_id"]])
            for e in page["events"]
            if e["type"] in ("JobStarted", "RunExited")
        ]
        assert order == [
            ("JobStarted", "first"),
            ("RunExited", "first"),
            ("JobStarted", "second"),
            ("RunExited", "second"),
        ], order
        return "first started, ended; then second started, ended (one GPU, one run at a time)"
    finally:
        d.stop()


def main() -> int:
    nvml, why = _nvml()
    if not nvml:
        print(f"gpu-check: skipped: no NVIDIA GPU here ({why or 'NVML sees no GPU'})")
        return 0
    from daemon.cli.tinymodel import build_tiny_model

    report: list[tuple[str, bool, str]] = []
    with tempfile.TemporaryDirectory(prefix="llmtraind-gpu-check-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model" / "tiny-qwen2")
        before = nvml[0]["used_mib"]
        checks: list[tuple[str, Callable[[], str]]] = [
            ("NVML discovery through the daemon", lambda: check_discovery(root / "discovery", nvml)),
            ("tiny LoRA SFT on CUDA", lambda: check_sft(root / "sft", model)),
            ("cancel frees the GPU", lambda: check_cancel(root / "cancel", model, before)),
            ("two one-GPU jobs, one after the other", lambda: check_one_after_the_other(root / "two", model)),
        ]
        for title, check in checks:
            started = time.monotonic()
            try:
                detail, ok = check(), True
            except Exception as e:  # a report line per check, whatever failed
                detail, ok = f"{type(e).__name__}: {e}", False
            report.append((title, ok, f"{detail} ({time.monotonic() - started:.0f} s)"))
    print(f"gpu-check on {len(nvml)} GPU(s): " + ", ".join(f"{g['index']} {g['name']}" for g in nvml))
    for title, ok, detail in report:
        print(f"  {'ok  ' if ok else 'FAIL'} {title}: {detail}")
    return 0 if all(ok for _, ok, _ in report) else 1


if __name__ == "__main__":
    sys.exit(main())
