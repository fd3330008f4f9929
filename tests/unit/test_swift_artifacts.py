"""A run's output directory -> artifacts, with the layouts of reference/swift-cpu.md §5.4."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.runs.swift.artifacts import Artifact, final_checkpoint, final_model, scan_artifacts

LORA_FILES = {
    "README.md": 100,
    "adapter_config.json": 20,
    "adapter_model.safetensors": 1000,
    "additional_config.json": 5,
    "args.json": 50,
    "optimizer.pt": 300,
    "rng_state.pth": 10,
    "scheduler.pt": 3,
    "training_args.bin": 7,
}
FULL_FILES = {
    "config.json": 10,
    "model.safetensors": 4000,
    "tokenizer.json": 100,
    "generation_config.json": 5,
}


def write(root: Path, files: dict[str, int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, size in files.items():
        (root / name).write_bytes(b"x" * size)


def checkpoint(out: Path, step: int, files: dict[str, int], *, complete: bool = True) -> int:
    write(out / f"checkpoint-{step}", files | ({"trainer_state.json": 40} if complete else {}))
    return sum(files.values()) + (40 if complete else 0)


def test_lora_run(tmp_path: Path) -> None:
    write(tmp_path, {"args.json": 900, "logging.jsonl": 300, "val_dataset.jsonl": 70})
    size5 = checkpoint(tmp_path, 5, LORA_FILES)
    size10 = checkpoint(tmp_path, 10, LORA_FILES, complete=False)  # still being written
    (tmp_path / "last-checkpoint").symlink_to("checkpoint-10")
    write(tmp_path / "images", {"train_loss.png": 11})
    write(tmp_path / "runs" / "deep", {"events.out.tfevents.1": 13})
    found = scan_artifacts(tmp_path)
    assert found == [
        Artifact("args", "args.json", 900),
        Artifact("adapter", "checkpoint-10", size10, step=10, complete=False),
        Artifact("adapter", "checkpoint-5", size5, step=5),
        Artifact("other", "images", 11),
        Artifact("last_checkpoint_marker", "last-checkpoint", 0, step=10, target="checkpoint-10"),
        Artifact("logging", "logging.jsonl", 300),
        Artifact("other", "runs", 13),
        Artifact("other", "val_dataset.jsonl", 70),
    ]
    assert final_checkpoint(found) == Artifact("adapter", "checkpoint-5", size5, step=5)


def test_full_run_checkpoints_are_models(tmp_path: Path) -> None:
    size = checkpoint(tmp_path, 10, FULL_FILES | {"optimizer.pt": 800})
    checkpoint(tmp_path, 2, FULL_FILES)
    found = scan_artifacts(tmp_path)
    assert [(a.kind, a.step) for a in found] == [("checkpoint", 10), ("checkpoint", 2)]
    assert final_checkpoint(found) == Artifact("checkpoint", "checkpoint-10", size, step=10)


def test_export_run(tmp_path: Path) -> None:
    write(tmp_path / "model", FULL_FILES | {"args.json": 50, "chat_template.jinja": 3})
    write(tmp_path, {"run.log": 10})
    found = scan_artifacts(tmp_path)
    model = Artifact("merged_model", "model", sum(FULL_FILES.values()) + 53)
    assert found == [model, Artifact("other", "run.log", 10)]
    assert final_checkpoint(found) is None
    assert final_model(found) == model


def test_merged_sibling_directory(tmp_path: Path) -> None:
    """Without --output_dir swift export writes `<checkpoint>-merged` beside the checkpoint."""
    write(tmp_path / "checkpoint-10-merged", FULL_FILES)
    assert scan_artifacts(tmp_path) == [
        Artifact("merged_model", "checkpoint-10-merged", sum(FULL_FILES.values()))
    ]


def test_final_model_of_training_runs(tmp_path: Path) -> None:
    full = tmp_path / "full"
    checkpoint(full, 3, FULL_FILES)
    size = checkpoint(full, 6, FULL_FILES)
    assert final_model(scan_artifacts(full)) == Artifact("checkpoint", "checkpoint-6", size, step=6)
    lora = tmp_path / "lora"
    checkpoint(lora, 6, LORA_FILES)
    assert final_model(scan_artifacts(lora)) is None  # an adapter is not a model by itself


def test_symlink_markers_and_others(tmp_path: Path) -> None:
    checkpoint(tmp_path, 4, LORA_FILES)
    (tmp_path / "best").symlink_to(tmp_path / "checkpoint-4")  # --create_checkpoint_symlink: absolute
    (tmp_path / "last").symlink_to("/gone/elsewhere")
    (tmp_path / "link").symlink_to("checkpoint-4")
    found = {a.path: a for a in scan_artifacts(tmp_path)}
    assert found["best"] == Artifact(
        "last_checkpoint_marker", "best", 0, step=4, target=str(tmp_path / "checkpoint-4")
    )
    assert found["last"] == Artifact("last_checkpoint_marker", "last", 0, step=None, target="/gone/elsewhere")
    assert found["link"] == Artifact("other", "link", 0, target="checkpoint-4")
    assert found["checkpoint-4"].bytes == sum(LORA_FILES.values()) + 40  # links are not followed


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    assert scan_artifacts(tmp_path / "nope") == []
    assert scan_artifacts(tmp_path) == []
    (tmp_path / "file").write_text("x")
    assert scan_artifacts(tmp_path / "file") == []


@pytest.fixture
def vanishing(monkeypatch: pytest.MonkeyPatch) -> dict[Path, list[str]]:
    """Directory -> names deleted right after the scan lists that directory: swift rotating
    checkpoints (save_total_limit) or writing one while the scan runs."""
    doomed: dict[Path, list[str]] = {}
    real = os.scandir

    def scandir(path: Any) -> Any:
        if not isinstance(path, str | Path):  # shutil.rmtree lists by file descriptor
            return real(path)
        with real(path) as it:
            entries = list(it)
        for name in doomed.pop(Path(path), []):
            target = Path(path) / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        return _Listing(entries)

    monkeypatch.setattr(os, "scandir", scandir)
    return doomed


class _Listing:
    """What os.scandir returns, for entries already read."""

    def __init__(self, entries: list[os.DirEntry[str]]) -> None:
        self.entries = entries

    def __iter__(self) -> Iterator[os.DirEntry[str]]:
        return iter(self.entries)

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_entries_that_vanish_during_the_scan_are_skipped(
    tmp_path: Path, vanishing: dict[Path, list[str]]
) -> None:
    checkpoint(tmp_path, 2, LORA_FILES)
    size = checkpoint(tmp_path, 4, LORA_FILES)
    write(tmp_path, {"args.json": 9, "old.txt": 1})
    write(tmp_path / "runs" / "deep", {"events": 5})
    (tmp_path / "last-checkpoint").symlink_to("checkpoint-2")
    vanishing[tmp_path] = ["checkpoint-2", "old.txt", "last-checkpoint"]
    vanishing[tmp_path / "checkpoint-4"] = ["optimizer.pt"]  # listed, gone before its size is read
    vanishing[tmp_path / "runs"] = ["deep"]
    assert scan_artifacts(tmp_path) == [
        Artifact("args", "args.json", 9),
        Artifact("adapter", "checkpoint-4", size - LORA_FILES["optimizer.pt"], step=4),
        Artifact("other", "runs", 0),
    ]


def test_a_checkpoint_directory_that_vanishes_is_skipped(
    tmp_path: Path, vanishing: dict[Path, list[str]]
) -> None:
    checkpoint(tmp_path, 2, LORA_FILES)
    vanishing[tmp_path] = ["checkpoint-2"]
    assert scan_artifacts(tmp_path) == []
