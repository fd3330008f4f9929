"""What the processes of a hung run were doing: `py-spy dump` of each when py-spy is installed
(Python stacks, every thread), otherwise what /proc gives (state, wait channel and, for root, the
kernel stack of each thread). Written into the run's folder before the run is stopped. Blocking:
call from a thread."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["dump_stacks", "session_pids"]

_PY_SPY_S = 20.0


def session_pids(session: int, *, live: bool = False) -> list[int]:
    """The processes of session `session` (field 6 of /proc/<pid>/stat; a session outlives its
    leader). `live`: not zombies, which are dead and only wait for their parent (or init) to reap
    them in its own time."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat.rpartition(b")")[2].split()
        if len(fields) > 3 and int(fields[3]) == session and not (live and fields[0] == b"Z"):
            found.append(int(entry))
    return sorted(found)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError as e:
        return f"({e.strerror})"


def _proc(pid: int) -> str:
    lines = [f"cmdline: {_read(f'/proc/{pid}/cmdline').replace(chr(0), ' ')}"]
    try:
        threads = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError:
        threads = []
    for tid in threads:
        base = f"/proc/{pid}/task/{tid}"
        state = next((s for s in _read(f"{base}/status").splitlines() if s.startswith("State:")), "")
        lines.append(f"thread {tid} {_read(f'{base}/comm')}: {state} wchan {_read(f'{base}/wchan')}")
        stack = _read(f"{base}/stack")
        lines += [f"    {line}" for line in stack.splitlines()]
    return "\n".join(lines)


def _py_spy(py_spy: str, pid: int) -> str:
    try:
        done = subprocess.run(
            [py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=_PY_SPY_S
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"py-spy failed: {e}"
    return (done.stdout + done.stderr).strip()


def dump_stacks(session: int, folder: Path, why: str) -> Path:
    """Write every process of the run's session to `folder`/hang-<time>.txt; returns that path."""
    py_spy = shutil.which("py-spy")
    parts = [f"llmtraind: {why}", f"tool: {'py-spy dump' if py_spy else '/proc (py-spy is not installed)'}"]
    for pid in session_pids(session):
        parts.append(f"\n=== pid {pid} ===")
        parts.append(_py_spy(py_spy, pid) if py_spy else _proc(pid))
    out = folder / f"hang-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    out.write_text("\n".join(parts) + "\n")
    return out
