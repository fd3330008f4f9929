"""What the builders of one file share while it is parsed, and validation that reports each error
at the key the file wrote, which may be an alias or a `swift:` entry rather than the field's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from daemon.core.jobs.problems import Report, show
from daemon.core.jobs.secrets import SecretRef
from daemon.core.jobs.trust import CodePolicy

if TYPE_CHECKING:
    from daemon.core.swift_args import SwiftArgs


_M = TypeVar("_M", bound=BaseModel)


@dataclass
class _Ctx:
    """What the builders share: the report, notes, and which file key set each canonical field."""

    filename: str
    swift_args: SwiftArgs
    report: Report
    policy: CodePolicy = field(default_factory=CodePolicy)
    notes: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, SecretRef] = field(default_factory=dict)
    """Secret swift arguments by reference, from `swift:` and a deploy job's `api_key`."""

    def add(self, key: str, message: str, hint: str = "") -> None:
        self.report.add(key, message, hint)

    def key(self, target: str) -> str:
        return self.origin.get(target, target)


def _describe(error: ErrorDetails) -> tuple[str, str]:
    ctx = error.get("ctx") or {}
    if error["type"] == "job_file":
        return str(ctx.get("message", error["msg"])), str(ctx.get("hint", ""))
    if error["type"] == "missing":
        return "this key is required", ""
    return f"{error['msg']} (got {show(error.get('input'))})", ""


def _validate(model: type[_M], values: Mapping[str, Any], c: _Ctx) -> _M | None:
    """Validate, reporting each error at the file key that supplied the value."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            where = ".".join([c.key(loc[0]), *loc[1:]]) if loc else ""
            c.add(where, *_describe(error))
        return None
