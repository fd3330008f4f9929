"""The bundled swift argument list, its file format, and introspection in a child interpreter."""

from __future__ import annotations

import importlib.util
import json
import stat
import sys
from pathlib import Path

import pytest

from daemon.core.swift_args import (
    BUNDLED_VERSION,
    COMMAND_CLASSES,
    SwiftArgs,
    SwiftArgsError,
    bundled,
    introspect,
)


def test_bundled_list_covers_every_command() -> None:
    args = bundled()
    assert args.version == BUNDLED_VERSION == "4.6.0"
    assert set(args.commands) == set(COMMAND_CLASSES)
    assert {"model", "dataset", "tuner_type", "lora_rank", "learning_rate"} <= args.names("sft")
    assert {"rlhf_type", "reward_model", "num_ppo_epochs"} <= args.names("rlhf")
    assert "rlhf_type" not in args.names("sft")
    assert {"adapters", "merge_lora", "quant_method"} <= args.names("export")
    assert {"port", "host", "served_model_name"} <= args.names("deploy")
    # 3.x spellings are gone in 4.x: the list must not accept them.
    assert "train_type" not in args.names("sft")
    assert "dtype" not in args.names("sft")


def test_unknown_command_has_no_names() -> None:
    assert bundled().names("megatron") == frozenset()


def test_json_round_trip_is_stable() -> None:
    args = bundled()
    text = args.to_json()
    again = SwiftArgs.from_json(text)
    assert again == args
    assert again.to_json() == text
    body = json.loads(text)
    assert body["commands"]["sft"] == sorted(body["commands"]["sft"])


def test_bundled_file_is_in_canonical_form() -> None:
    path = Path(__file__).parents[2] / "daemon" / "core" / "data" / f"swift_args-{BUNDLED_VERSION}.json"
    assert path.read_text(encoding="utf-8") == bundled().to_json()


@pytest.mark.parametrize(
    "text",
    ["", "[]", "{}", '{"ms_swift_version": "1"}', '{"ms_swift_version": 1, "commands": {"sft": []}}', "nope"],
)
def test_bad_list_is_an_error(text: str) -> None:
    with pytest.raises(SwiftArgsError):
        SwiftArgs.from_json(text)


def _fake_python(tmp_path: Path, body: str) -> str:
    """An executable that stands in for an interpreter: introspect only runs it and reads stdout."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_introspect_reads_what_the_interpreter_prints(tmp_path: Path) -> None:
    listing = SwiftArgs.from_json('{"ms_swift_version": "9.9", "commands": {"sft": ["model"]}}')
    (tmp_path / "out.json").write_text(listing.to_json(), encoding="utf-8")
    python = _fake_python(tmp_path, f"cat '{tmp_path / 'out.json'}'")
    assert await introspect(python) == listing


async def test_introspect_failure_names_the_interpreter(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "echo 'No module named swift' >&2; exit 3")
    with pytest.raises(SwiftArgsError, match=r"exit 3\).*\n.*No module named swift"):
        await introspect(python)


async def test_introspect_missing_interpreter(tmp_path: Path) -> None:
    with pytest.raises(SwiftArgsError, match="cannot run"):
        await introspect(str(tmp_path / "no-such-python"))


async def test_introspect_hang_is_killed(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "exec sleep 30")
    with pytest.raises(SwiftArgsError, match="within"):
        await introspect(python, timeout_s=0.2)


async def test_introspect_garbage_output(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "echo hello")
    with pytest.raises(SwiftArgsError, match="not a swift argument list"):
        await introspect(python)


@pytest.mark.swift
@pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="ms-swift is not installed")
async def test_installed_swift_matches_bundled_list() -> None:
    """The bundled file is what `python -m daemon.core.swift_args` prints for ms-swift 4.6.0."""
    found = await introspect(sys.executable)
    if found.version != BUNDLED_VERSION:
        pytest.skip(f"installed ms-swift is {found.version}, the bundled list is {BUNDLED_VERSION}")
    assert found == bundled()
