"""Dataset intake benchmark: validation + conversion against the floor of hashing and parsing each line.

Goal: sha256 + DatasetValidator (1 MiB chunks) reaches >= 50 % of the rate of sha256 + json.loads per
line over the same ~50 MB SFT file (rows of about 2 KB). Both are measured in the same run, best of
three, alternating, and the ratio is asserted: both sides share the machine's speed and most of its
noise, where an absolute rate would not.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import pytest

from daemon.core.datasets import DatasetValidator
from tests.bench.measure import Goals

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

CHUNK = 1 << 20
TARGET_BYTES = 50_000_000
WORDS = (
    "the model learns to answer questions about arithmetic history cooking and code with care "
    "数据 训练 模型 回答 问题 的 一个 请 总结 翻译"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def write_sft_file(path: Path) -> int:
    """Conversations of 1-3 exchanges (about 2 KB a row), a third with a system message."""
    rng = random.Random(0)
    size = 0
    with path.open("wb") as f:
        while size < TARGET_BYTES:
            messages = []
            if rng.random() < 0.3:
                messages.append({"role": "system", "content": _sentence(rng, 15)})
            for _ in range(rng.randint(1, 3)):
                messages.append({"role": "user", "content": _sentence(rng, rng.randint(10, 60))})
                messages.append({"role": "assistant", "content": _sentence(rng, rng.randint(30, 200))})
            line = (json.dumps({"messages": messages}, ensure_ascii=False) + "\n").encode()
            f.write(line)
            size += len(line)
    return size


def floor_pass(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for line in f:
            digest.update(line)
            json.loads(line)


def validator_pass(path: Path) -> None:
    digest = hashlib.sha256()
    validator = DatasetValidator(path.name)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            validator.feed(chunk)
    validator.flush()
    report = validator.finish()
    assert report.ok, report.errors
    assert report.format == "sft_messages"


def best_rates(path: Path, size: int, runs: int = 3) -> tuple[float, float]:
    """MB/s of the floor and of the validator, best of `runs`, alternating so a burst of load elsewhere
    on the machine does not land on one side only."""
    floor = ours = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        floor_pass(path)
        middle = time.perf_counter()
        validator_pass(path)
        end = time.perf_counter()
        floor, ours = min(floor, middle - start), min(ours, end - middle)
    return size / floor / 1e6, size / ours / 1e6


def test_validation_rate_against_hash_and_parse_floor(tmp_path: Path) -> None:
    path = tmp_path / "sft_bench.jsonl"
    size = write_sft_file(path)
    floor, ours = best_rates(path, size)
    print(
        f"\ndataset validation, {size / 1e6:.1f} MB SFT JSONL: "
        f"sha256+json.loads {floor:.1f} MB/s, sha256+DatasetValidator {ours:.1f} MB/s, "
        f"ratio {ours / floor:.2f}"
    )
    goals = Goals()
    goals.check("validation / sha256+json.loads", ours / floor, 0.50, higher_is_better=True)
    goals.assert_met()
