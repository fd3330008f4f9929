"""The report on one dataset file, and whether its data can feed a given job."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel

from daemon.core.datasets.formats import _FEEDS, DatasetFormat, RlhfType, TaskType
from daemon.core.datasets.stats import _FROZEN, DatasetStats

__all__ = ["DatasetReport", "LineError", "LoraHints", "can_feed"]


class LineError(BaseModel):
    """One problem, worded for the person who will fix the file."""

    model_config = _FROZEN
    line: int | None
    """1-based line number; None for a problem with the whole file."""
    field: str | None
    """Where in the row, e.g. `messages[1].role`; None when the whole line is at fault."""
    message: str
    hint: str


class LoraHints(BaseModel):
    """LoRA settings that every row stating them agrees on; a job may take them as defaults."""

    model_config = _FROZEN
    target_modules: list[str] | None = None
    rank: int | None = None


class DatasetReport(BaseModel):
    model_config = _FROZEN
    format: DatasetFormat | None
    task_types: list[TaskType]
    rlhf_types: list[RlhfType]
    rows: int
    bytes: int
    errors: list[LineError]
    error_count: int
    stats: DatasetStats
    lora_hints: LoraHints | None = None

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.rows > 0


def can_feed(
    report_or_format: DatasetReport | DatasetFormat, task_type: str, rlhf_type: str | None = None
) -> str | None:
    """None when the data can feed the task, else a sentence naming the dataset format and the task."""
    if isinstance(report_or_format, DatasetReport):
        fmt: str | None = report_or_format.format
        if not report_or_format.ok:
            return f"the dataset ({fmt or 'no valid rows'}) failed validation, so it cannot feed a {task_type} job"
    else:
        fmt = report_or_format
    if fmt is None or fmt not in _FEEDS:
        return f"{fmt!r} is not a dataset format, so it cannot feed a {task_type} job"
    tasks, rlhf_types = _FEEDS[fmt]
    if task_type not in tasks:
        known = "" if task_type in get_args(TaskType) else " (task types are sft, lora, pretrain and rl)"
        return f"a {fmt} dataset cannot feed a {task_type} job{known}; it feeds {', '.join(tasks)}"
    if task_type != "rl" or rlhf_type is None or rlhf_type in rlhf_types:
        return None
    return (
        f"a {fmt} dataset cannot feed an rl job with rlhf_type {rlhf_type}; "
        f"it feeds rlhf_type {', '.join(rlhf_types)}"
    )
