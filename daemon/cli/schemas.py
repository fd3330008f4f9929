"""The published JSON Schemas in schemas/, generated from the models the daemon validates with, and
the API's OpenAPI document.

Editors and other tools read these files; `llmtraind schemas --check` (run by the tests) fails when
they no longer match the code, so they cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.core.config import Config
from daemon.core.datasets import line_models
from daemon.core.events import EVENT_ADAPTER
from daemon.core.jobs import job_file_schema
from daemon.http.openapi import openapi_spec

__all__ = ["SCHEMA_DIR", "check_schemas", "render_schemas", "write_schemas"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
_BASE = "https://llmtraind.invalid/schemas/"


def _config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["properties"].pop("source", None)
    return schema


_SOURCES: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "events.schema.json": ("llmtraind event (the data column of the event log)", EVENT_ADAPTER.json_schema),
    "config.schema.json": ("llmtraind.toml", _config_schema),
    "job.schema.json": ("llmtraind job file (inbox/*.yaml)", job_file_schema),
}

_SOURCES.update(
    {
        f"dataset-{name}.schema.json": (
            f"one line of a {name} dataset (inbox/*.jsonl)",
            model.model_json_schema,
        )
        for name, model in line_models().items()
    }
)


_DOCUMENTS: dict[str, Callable[[], dict[str, Any]]] = {"openapi.json": openapi_spec}
"""Published as they are (not JSON Schemas): the API's OpenAPI document, as /openapi.json serves it."""


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_schemas() -> dict[str, str]:
    out = {}
    for name, (title, make) in _SOURCES.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": _BASE + name,
            "title": title,
        }
        schema.update({k: v for k, v in make().items() if k != "title"})
        out[name] = _dump(schema)
    out.update({name: _dump(make()) for name, make in _DOCUMENTS.items()})
    return out


def _stale(directory: Path) -> dict[str, str]:
    """The schema files that are missing or differ from what the code generates, with their new text."""
    return {
        name: text
        for name, text in render_schemas().items()
        if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in _stale(directory).items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files that are missing or differ from what the code generates."""
    return list(_stale(directory))
