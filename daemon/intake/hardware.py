"""What intake asks of this box to tell whether a job can run here: its GPUs and the Python
packages importable by the interpreter that runs swift.

GPUs are seen the way the scheduler's probe sees them (NVML when a driver is present, none
otherwise, the test fake when `LLMTRAIND_TEST_FAKE_GPUS` names one), limited to `[gpus] devices`.
A probe is reused for a short while: intake checks files in bursts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from daemon.core.runnable import Package

__all__ = ["FAKE_GPUS_ENV", "missing_packages", "visible_gpus"]

FAKE_GPUS_ENV = "LLMTRAIND_TEST_FAKE_GPUS"
_REUSE_S = 10.0
_lock = threading.Lock()
_seen: dict[str, tuple[float, tuple[str, ...]]] = {}


def _nvml() -> list[tuple[int, str]]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver: no GPUs, as the scheduler's probe says
        return []
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            found.append((i, uuid.decode() if isinstance(uuid, bytes) else str(uuid)))
        return found
    except pynvml.NVMLError:
        return []
    finally:
        pynvml.nvmlShutdown()


def _fake(path: str) -> list[tuple[int, str]]:
    try:
        count = int(json.loads(Path(path).read_text())["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [(i, f"GPU-fake-{i:04d}") for i in range(count)]


def visible_gpus(
    devices: Literal["auto", "none"] | Sequence[int | str], environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Each GPU the daemon manages here, by index and by UUID (both forms a job may write)."""
    env = os.environ if environ is None else environ
    if devices == "none":
        return ()
    fake = env.get(FAKE_GPUS_ENV, "")
    key = f"{fake}|{devices!r}"
    now = time.monotonic()
    with _lock:
        cached = _seen.get(key)
        if cached is not None and now - cached[0] < _REUSE_S:
            return cached[1]
    found = _fake(fake) if fake else _nvml()
    if devices != "auto":
        wanted = {str(d) for d in devices}
        found = [(i, u) for i, u in found if str(i) in wanted or u in wanted]
    names = tuple(name for i, u in found for name in (str(i), u))
    with _lock:
        _seen[key] = (now, names)
    return names


def missing_packages(packages: Sequence[Package], python: str = "") -> list[Package]:
    """The packages not importable by `python` ('': the daemon's own interpreter)."""
    if not packages:
        return []
    if not python or os.path.realpath(python) == os.path.realpath(sys.executable):
        return [p for p in packages if importlib.util.find_spec(p.module) is None]
    code = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    try:
        done = subprocess.run(
            [python, "-c", code, *(p.module for p in packages)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []  # the interpreter itself is checked when a run starts
    if done.returncode != 0:
        return []
    gone = set(done.stdout.split())
    return [p for p in packages if p.module in gone]
