"""The client commands load only the client: `--help` and the commands that read the API import no
aiohttp, no pydantic, nothing of the daemon's own machinery (app, HTTP server, runs, the event
catalogue) and no torch or swift, so that they start in a fraction of a second. Each command runs
in a fresh interpreter against a stand-in API, which then reports every module it had loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakeapi import FakeApi, fake_api

pytestmark = pytest.mark.timeout(60)

RUN = """
import json, sys
from daemon.cli.main import main
try:
    rc = main(sys.argv[2:])
except SystemExit as e:
    rc = e.code
with open(sys.argv[1], "w") as f:
    json.dump(sorted(sys.modules), f)
sys.exit(rc)
"""

FORBIDDEN = (
    "aiohttp",
    "pydantic",
    "pydantic_core",
    "yaml",
    "torch",
    "swift",
    "apprise",
    "daemon.app",
    "daemon.http",
    "daemon.runs",
    "daemon.intake",
    "daemon.notify",
    "daemon.core.config",
    "daemon.core.events",
    "daemon.core.fold",
    "daemon.log.sqlite",
    "daemon.log.store",
)
"""Packages (and their submodules) a client command must not load."""


def loaded(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(out), *argv], capture_output=True, text=True, timeout=30
    )
    return done, json.loads(out.read_text())


def forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_help_loads_no_command(tmp_path: Path) -> None:
    done, modules = loaded(tmp_path, "--help")
    assert done.returncode == 0 and "status" in done.stdout, done.stderr
    assert forbidden(modules) == []


@pytest.mark.parametrize(
    "command",
    [["status"], ["gpus"], ["jobs"], ["jobs", "--json"], ["show", "job-1"], ["logs", "job-1"], ["events"]],
)
def test_a_client_command_loads_only_the_client(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "llmtraind.toml"
    config.write_text('[paths]\nstate = "state"\n[api]\ntoken = "t"\n[swift]\noffline = true\n')
    with fake_api(FakeApi()) as api:
        done, modules = loaded(tmp_path, *command, "--config", str(config), "--url", api.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert forbidden(modules) == []
