"""`llmtraind demo`, the README's first command, end to end: it builds the tiny model, starts a daemon,
drops its files, follows the four jobs over the event feed as real swift runs them, and stops."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.swift, pytest.mark.timeout(600)]


def test_the_demo_follows_its_four_jobs_to_the_end(tmp_path: Path) -> None:
    config = tmp_path / "llmtraind.toml"
    config.write_text('[paths]\ninbox = "inbox"\nstate = "state"\n[api]\nport = 0\n')

    done = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--config", str(config), "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )

    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for job in ("demo-sft-lora-1", "demo-merge-1", "demo-dpo-1", "demo-pt-1"):
        assert re.search(rf"^{job}\s+running", out, re.M), out
        assert re.search(rf"^{job}\s+succeeded", out, re.M), out
    assert re.search(r"^demo-sft-lora-1\s+running\s+100% step 2/2 (mean )?loss \d", out, re.M), out
    assert "All 4 demo jobs succeeded." in out
    assert "daemon    stopped (exit status 0)" in out
    assert not (tmp_path / "state" / "daemon.json").exists()
