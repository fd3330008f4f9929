"""schemas/ is generated from the code and must never be stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from daemon.cli.schemas import check_schemas, render_schemas, write_schemas


def test_checked_in_schemas_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "schemas", "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_a_stale_schema_is_named(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    assert check_schemas(tmp_path) == []
    (tmp_path / "events.schema.json").write_text("{}")
    assert check_schemas(tmp_path) == ["events.schema.json"]
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "schemas", "--check", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "events.schema.json is stale" in result.stderr


def test_schemas_are_json_schema_documents() -> None:
    for name, text in render_schemas().items():
        doc = json.loads(text)
        if name == "openapi.json":
            assert doc["openapi"].startswith("3.1") and "/v1/status" in doc["paths"]
            continue
        assert doc["$schema"].startswith("https://json-schema.org/") and doc["$id"].endswith(name)
