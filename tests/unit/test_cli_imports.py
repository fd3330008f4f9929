"""The client commands load only the client: `--help` and the commands that read the API import no
aiohttp, no pydantic, nothing of the daemon's own machinery (app, HTTP server, runs, the event
catalogue) and no torch or swift, so that they start in a fraction of a second. The commands run in
a fresh interpreter against a stand-in API, which then reports every module it had loaded."""

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
codes = []
for argv in json.loads(sys.argv[2]):
    try:
        codes.append(main(argv))
    except SystemExit as e:
        codes.append(e.code)
with open(sys.argv[1], "w") as f:
    json.dump({"codes": codes, "modules": sorted(sys.modules)}, f)
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


def loaded(tmp_path: Path, *commands: list[str]) -> tuple[str, list[int], list[str]]:
    """What the commands, run one after another in one fresh interpreter, printed, their exit
    codes, and the modules loaded by the end."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(out), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    return done.stdout, found["codes"], found["modules"]


def forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_help_loads_no_command(tmp_path: Path) -> None:
    stdout, codes, modules = loaded(tmp_path, ["--help"])
    assert codes == [0] and "status" in stdout
    assert forbidden(modules) == []


COMMANDS = [
    ["status"],
    ["gpus"],
    ["jobs"],
    ["jobs", "--json"],
    ["show", "job-1"],
    ["logs", "job-1"],
    ["events"],
]


def test_the_client_commands_load_only_the_client(tmp_path: Path) -> None:
    config = tmp_path / "llmtraind.toml"
    config.write_text('[paths]\nstate = "state"\n[api]\ntoken = "t"\n[swift]\noffline = true\n')
    with fake_api(FakeApi()) as api:
        where = ["--config", str(config), "--url", api.url]
        stdout, codes, modules = loaded(tmp_path, *([*command, *where] for command in COMMANDS))
    assert codes == [0] * len(COMMANDS)
    assert "2 queued, 1 succeeded" in stdout and "line two" in stdout and "FileSeen" in stdout
    assert forbidden(modules) == []
