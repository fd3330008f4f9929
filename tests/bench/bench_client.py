"""Client start-up benchmark (issue 16): `llmtraind --help`, `llmtraind status` and `llmtraind jobs`
as a person types them (the installed console script, a fresh interpreter each time) against a real
daemon, beside two baselines run the same way in the same run, interleaved with them: the bare
interpreter (`python -c pass`) and the least any client must do (`python -c` importing json and
urllib.request and GETting /v1/status once).

Goal: `--help` and `status` under 0.3 s wall (median of the runs). The ratios printed say how much
of that is this project's code: start-up over the bare interpreter and over the bare client.

An installed package has its bytecode compiled (pip writes it, or the first run does); a box with
PYTHONDONTWRITEBYTECODE set (as this project's test machines have) compiles every module it imports
from source on every run. The goals are measured as installed, with the bytecode cached in a
folder of this test's own (PYTHONPYCACHEPREFIX: nothing is written into the source tree); the same
two commands without a cache are printed too, as what such a box sees.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bench.measure import Goals, percentile, wait_quiet
from tests.daemon_proc import Daemon

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

RUNS = 20
GOAL_S = 0.3

BARE_CLIENT = """
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v1/status", headers={"Authorization": "Bearer " + sys.argv[2]})
with urllib.request.urlopen(req, timeout=10) as r:
    print(json.loads(r.read())["version"])
"""


def llmtraind() -> list[str]:
    """The console script beside this interpreter, as installed; `python -m daemon` without one."""
    script = Path(sys.executable).parent / "llmtraind"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "daemon"]


def wall_s(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    elapsed = time.perf_counter() - t0
    assert done.returncode == 0, (argv, done.stderr)
    return elapsed


def test_client_commands_start_fast(tmp_path: Path) -> None:
    installed = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    installed["PYTHONPYCACHEPREFIX"] = str(tmp_path / "bytecode")
    uncached = {**installed, "PYTHONDONTWRITEBYTECODE": "1"}
    del uncached["PYTHONPYCACHEPREFIX"]
    daemon = Daemon(tmp_path / "d", token="bench-token").start()
    try:
        config = ["--config", str(daemon.config)]
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], installed),
            "bare urllib GET /v1/status": (
                [sys.executable, "-c", BARE_CLIENT, daemon.url, "bench-token"],
                installed,
            ),
            "llmtraind --help": ([*llmtraind(), "--help"], installed),
            "llmtraind status": ([*llmtraind(), "status", *config], installed),
            "llmtraind jobs": ([*llmtraind(), "jobs", *config], installed),
            "llmtraind --help, no .pyc": ([*llmtraind(), "--help"], uncached),
            "llmtraind status, no .pyc": ([*llmtraind(), "status", *config], uncached),
        }
        for argv, env in commands.values():  # compile the bytecode, warm the page cache
            wall_s(argv, env)
        wait_quiet("client start-up")
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(RUNS):
            for name, (argv, env) in commands.items():
                times[name].append(wall_s(argv, env))
        print(f"\n1-minute load average after the runs: {os.getloadavg()[0]:.2f} (2 cores)")
    finally:
        daemon.stop()

    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(
            f"{name:<28} median {median[name] * 1000:6.1f} ms  p90 {percentile(t, 0.9) * 1000:6.1f} ms  "
            f"min {min(t) * 1000:6.1f} ms"
        )
    bare, client = median["python -c pass"], median["bare urllib GET /v1/status"]
    for name in ("llmtraind --help", "llmtraind status", "llmtraind jobs"):
        print(
            f"{name}: {median[name] / bare:.2f}x python -c pass, {median[name] / client:.2f}x the bare client"
        )
    goals = Goals()
    for name in ("llmtraind --help", "llmtraind status"):
        goals.check(f"{name}, median wall", median[name], GOAL_S, higher_is_better=False, unit=" s")
    goals.assert_met()
