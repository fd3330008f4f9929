"""Dataset intake benchmark: validation + conversion against the floor of hashing and parsing each line.

Goal (issue 16): sha256 + DatasetValidator (1 MiB chunks) reaches >= 50 % of the rate of sha256 +
json.loads per line over the same file, for SFT conversations of about 2 KB a row and for short rows
(at most 500 B: short conversations, pretraining text, preference pairs), where the cost per row
rather than per byte decides.

Both sides are measured in the same run and their ratio is asserted, never an absolute rate. The
file is cut into slices of about 1 MiB; each slice is run through the floor and the validator in
turn, five times, and the best CPU time (time.process_time) of each is kept. CPU time leaves out the
time spent waiting for a core on a busy machine, and alternating slice by slice lets a burst of load
elsewhere land on both sides alike.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.core.datasets import DatasetValidator
from tests.bench.measure import Goals

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]

CHUNK = 1 << 20
SLICE = 1 << 20
RUNS = 5
WORDS = (
    "the model learns to answer questions about arithmetic history cooking and code with care "
    "数据 训练 模型 回答 问题 的 一个 请 总结 翻译"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def long_sft(rng: random.Random) -> dict[str, object]:
    """Conversations of 1-3 exchanges (about 2 KB a row), a third with a system message."""
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": _sentence(rng, 15)})
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": _sentence(rng, rng.randint(10, 60))})
        messages.append({"role": "assistant", "content": _sentence(rng, rng.randint(30, 200))})
    return {"messages": messages}


def short_sft(rng: random.Random) -> dict[str, object]:
    """One exchange of a few words (about 250 B a row), a third with a short system message."""
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": _sentence(rng, 3)})
    messages.append({"role": "user", "content": _sentence(rng, rng.randint(2, 12))})
    messages.append({"role": "assistant", "content": _sentence(rng, rng.randint(3, 30))})
    return {"messages": messages}


def short_text(rng: random.Random) -> dict[str, object]:
    """A pretraining document of a sentence (about 220 B a row)."""
    return {"text": _sentence(rng, rng.randint(5, 60))}


def short_pair(rng: random.Random) -> dict[str, object]:
    """A preference pair of short answers (about 300 B a row), converted to swift's form."""
    return {
        "prompt": _sentence(rng, rng.randint(3, 12)),
        "chosen": _sentence(rng, rng.randint(3, 30)),
        "rejected": _sentence(rng, rng.randint(3, 30)),
    }


CASES: list[tuple[str, Callable[[random.Random], dict[str, object]], int, str]] = [
    ("SFT, ~2 KB rows", long_sft, 50_000_000, "sft_messages"),
    ("SFT, short rows", short_sft, 16_000_000, "sft_messages"),
    ("pretraining text, short rows", short_text, 16_000_000, "pretrain_text"),
    ("preference pairs, short rows", short_pair, 16_000_000, "preference"),
]


def write_rows(path: Path, row: Callable[[random.Random], dict[str, object]], target: int) -> tuple[int, int]:
    """Bytes and rows written."""
    rng = random.Random(0)
    size = rows = 0
    with path.open("wb") as f:
        while size < target:
            line = (json.dumps(row(rng), ensure_ascii=False) + "\n").encode()
            f.write(line)
            size += len(line)
            rows += 1
    return size, rows


def slices(data: bytes) -> list[bytes]:
    """Whole lines, about SLICE bytes each."""
    out = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + SLICE)
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end])
        start = end
    return out


def floor_pass(data: bytes) -> None:
    digest = hashlib.sha256()
    for line in data.splitlines(keepends=True):
        digest.update(line)
        json.loads(line)


def validator_pass(data: bytes, fmt: str) -> None:
    digest = hashlib.sha256()
    validator = DatasetValidator("bench.jsonl")
    for start in range(0, len(data), CHUNK):
        chunk = data[start : start + CHUNK]
        digest.update(chunk)
        validator.feed(chunk)
    validator.flush()
    report = validator.finish()
    assert report.ok, report.errors
    assert report.format == fmt


def cpu_seconds(data: bytes, fmt: str) -> tuple[float, float]:
    """CPU seconds of the floor and of the validator over `data`: per slice, the best of RUNS
    alternating runs, summed."""
    floor = ours = 0.0
    for piece in slices(data):
        best_floor = best_ours = float("inf")
        for _ in range(RUNS):
            start = time.process_time()
            floor_pass(piece)
            middle = time.process_time()
            validator_pass(piece, fmt)
            end = time.process_time()
            best_floor, best_ours = min(best_floor, middle - start), min(best_ours, end - middle)
        floor += best_floor
        ours += best_ours
    return floor, ours


def test_validation_rate_against_hash_and_parse_floor(tmp_path: Path) -> None:
    goals = Goals()
    print()
    for name, row, target, fmt in CASES:
        path = tmp_path / "bench.jsonl"
        size, rows = write_rows(path, row, target)
        floor, ours = cpu_seconds(path.read_bytes(), fmt)
        print(
            f"dataset validation, {name} ({size / 1e6:.0f} MB, {size / rows:.0f} B a row): "
            f"sha256+json.loads {size / floor / 1e6:.1f} MB/s, sha256+DatasetValidator "
            f"{size / ours / 1e6:.1f} MB/s ({ours / rows * 1e6:.2f} µs a row), ratio {floor / ours:.2f}"
        )
        goals.check(f"validation / sha256+json.loads, {name}", floor / ours, 0.50, higher_is_better=True)
    goals.assert_met()
