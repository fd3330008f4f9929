from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[type[Daemon]]:
    """Make daemons in tmp_path; every one still running at the end is killed."""
    made: list[Daemon] = []

    class Tracked(Daemon):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(self)

    yield Tracked
    for d in made:
        d.kill()
        d.kill_runs()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deterministic random Qwen2 of reference/swift-cpu.md §2, built once per test session."""
    from daemon.cli.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a one-label scoring head (Qwen2ForSequenceClassification), as a reward
    model for PPO is: swift's PPO reads the reward and value from that head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dest = tmp_path_factory.mktemp("reward") / "tiny-qwen2-rm"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    model.config.pad_token_id = model.config.pad_token_id or 0
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(dest)
    return dest


@pytest.fixture
def stranger() -> Iterator[int]:
    """Somebody else's process, in a session of its own: what a GPU probe reports as foreign. (pid 1
    will not do: in a container it may share the tests' session.)"""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
