"""What a swift run reports while it trains: per-step metrics, and which of them to keep.

swift writes one record per logging step, per evaluation and for the training summary, twice:
as JSON to `<output_dir>/logging.jsonl` (real numbers, rounded to 8 decimals) and as a Python
`repr` dict to stdout (numbers as strings rounded to 4 significant digits under transformers 5).
The jsonl file is the source; stdout is the fallback for a run whose directory cannot be read.
The last jsonl line of a finished run is a summary naming the final checkpoint; a killed or
crashed run has none (`reference/swift-cpu.md` §5).

Both parsers read text the daemon does not control, so they never raise: anything that is not a
record gives None, and a record's odd fields are left out.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MetricsSampler",
    "RecordKind",
    "RunSummary",
    "StepMetrics",
    "parse_duration",
    "parse_metrics",
    "parse_summary",
]

RecordKind = Literal["train", "eval", "summary"]

_MAX_REPR_CHARS = 65536
"""A stdout record is a few hundred characters; parsing a long Python literal costs far more
memory than the text, so longer lines are not records."""
_NUMBER_RE = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
_STEPS_RE = re.compile(r"\s*([0-9]{1,15})\s*/\s*([0-9]{1,15})\s*")
_DURATION_RE = re.compile(
    r"(?:([0-9]{1,9})d)?\s*(?:([0-9]{1,9})h)?\s*(?:([0-9]{1,9})m)?\s*(?:([0-9]{1,12}(?:\.[0-9]+)?)s)?"
)
_REPR_NONFINITE_RE = re.compile(r"(?<=: )-?(?:nan|inf)(?=[,}])")
"""With `--disable_tqdm true` a NaN loss prints as a bare `nan`, which is not a Python literal."""
_PROGRESS_KEYS = ("global_step/max_steps", "iteration")  # megatron logs `iteration`
_TIME_KEYS = frozenset({"elapsed_time", "remaining_time"})


@dataclass(frozen=True)
class StepMetrics:
    """One record of a run's log, with the fields the API shows typed and every number in `raw`."""

    kind: RecordKind
    """`train`: a logging step; `eval`: an evaluation; `summary`: the end-of-training totals."""
    step: int
    max_steps: int
    percent: float
    """step / max_steps, 0-100."""
    eta_s: float | None
    """swift's estimate of the time left (`remaining_time`)."""
    elapsed_s: float | None
    epoch: float | None
    loss: float | None
    """`loss` for train, `eval_loss` for eval, `train_loss` (the run's mean) for the summary."""
    learning_rate: float | None
    grad_norm: float | None
    token_acc: float | None
    """`token_acc`, or `eval_token_acc` for eval."""
    memory_gib: float | None
    """Peak reserved GPU memory; swift logs it only on a GPU."""
    train_speed: float | None
    """Seconds per step."""
    raw: Mapping[str, float]
    """Every numeric field of the record under swift's own name (rewards/chosen, eval_runtime, ...)."""


@dataclass(frozen=True)
class RunSummary:
    """The last line of a finished run's logging.jsonl: where its checkpoints ended up."""

    last_model_checkpoint: str | None
    best_model_checkpoint: str | None
    best_metric: float | None
    global_step: int | None


def parse_metrics(line: str | bytes) -> StepMetrics | None:
    """A logging.jsonl line or a stdout line -> its record, or None for anything else.

    Text before the last carriage return is dropped (tqdm redraws a bar that way, and in a log
    with stdout and stderr interleaved a record can follow a bar on the same line).
    """
    record = _record(line)
    return _metrics(record) if record is not None else None


def parse_summary(line: str | bytes) -> RunSummary | None:
    """The final logging.jsonl line of a finished run -> RunSummary, or None for any other line."""
    record = _record(line)
    if record is None or "last_model_checkpoint" not in record:
        return None
    step = record.get("global_step")
    return RunSummary(
        last_model_checkpoint=_text(record.get("last_model_checkpoint")),
        best_model_checkpoint=_text(record.get("best_model_checkpoint")),
        best_metric=_number(record.get("best_metric")),
        global_step=step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None,
    )


def parse_duration(value: object) -> float | None:
    """swift's `format_time` text ('45s', '3m 12s', '8h 25m 20s', '1d 2h 3m 4s') or a number -> seconds."""
    number = _number(value)
    if number is not None:
        return number if number >= 0 else None
    if not isinstance(value, str) or not value.strip():
        return None
    match = _DURATION_RE.fullmatch(value.strip())
    if match is None or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class MetricsSampler:
    """Decides which train records of one run become events, so a long run does not flood the log.

    Every record is kept while the run is short (max_steps <= `dense_max_steps`). Beyond that a
    record is kept only when both at least `min_interval_s` seconds and `min_progress` of the run
    have passed since the last kept one, which bounds a run to about 1/min_progress records
    (100 by default) however long it takes. The first and the last step, evaluations and the
    summary are always kept. A record for a step at or before the last kept one (a log read
    twice) is not. Pure apart from its own memory: the caller passes the time, so tests need no
    clock. Use one sampler per run attempt.
    """

    def __init__(
        self, *, dense_max_steps: int = 200, min_interval_s: float = 10.0, min_progress: float = 0.01
    ) -> None:
        self.dense_max_steps = dense_max_steps
        self.min_interval_s = min_interval_s
        self.min_progress = min_progress
        self._last_step: int | None = None
        self._last_time = 0.0

    def seen(self, step: int) -> None:
        """A record up to `step` was kept before (by an earlier daemon): never keep it again."""
        self._last_step = step

    def offer(self, metrics: StepMetrics, now: float) -> bool:
        """Whether to record `metrics`, seen at time `now` (seconds, any monotonic origin)."""
        if metrics.kind != "train":
            return True
        if self._last_step is not None and metrics.step <= self._last_step:
            return False
        if not self._wanted(metrics, now):
            return False
        self._last_step, self._last_time = metrics.step, now
        return True

    def _wanted(self, metrics: StepMetrics, now: float) -> bool:
        if self._last_step is None or metrics.step >= metrics.max_steps:
            return True
        if metrics.max_steps <= self.dense_max_steps:
            return True
        waited = now - self._last_time >= self.min_interval_s
        advanced = metrics.step - self._last_step >= metrics.max_steps * self.min_progress
        return waited and advanced


# ---------------------------------------------------------------------------------------------


def _record(line: str | bytes) -> dict[str, object] | None:
    """The dict a line holds, read as JSON (logging.jsonl) or as a Python literal (stdout)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.rpartition("\r")[2].strip()
    start = text.find("{")
    if start < 0 or not text.endswith("}"):
        return None
    text = text[start:]
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = _literal(text)
    if not isinstance(value, dict):
        return None
    return {key: item for key, item in value.items() if isinstance(key, str)}


def _literal(text: str) -> object:
    if len(text) > _MAX_REPR_CHARS:
        return None
    try:
        return ast.literal_eval(_REPR_NONFINITE_RE.sub("None", text))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _number(value: object) -> float | None:
    """A finite number, or a string holding one (swift prints '6.038'); bools are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = float(value) if abs(value) < 1 << 1000 else math.inf
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and len(value) < 64 and _NUMBER_RE.fullmatch(value):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _steps(record: Mapping[str, object]) -> tuple[int, int] | None:
    for key in _PROGRESS_KEYS:
        value = record.get(key)
        match = _STEPS_RE.fullmatch(value) if isinstance(value, str) else None
        if match is not None:
            return int(match[1]), int(match[2])
    return None


def _kind(record: Mapping[str, object]) -> RecordKind:
    if "train_runtime" in record:
        return "summary"
    if any(key.startswith("eval_") for key in record):
        return "eval"
    return "train"


def _metrics(record: Mapping[str, object]) -> StepMetrics | None:
    steps = _steps(record)
    if steps is None:
        return None
    step, max_steps = steps
    raw = {
        key: number
        for key, value in record.items()
        if key not in _TIME_KEYS and (number := _number(value)) is not None
    }
    kind = _kind(record)
    prefix = {"train": "", "eval": "eval_", "summary": "train_"}[kind]
    return StepMetrics(
        kind=kind,
        step=step,
        max_steps=max_steps,
        percent=min(100.0, 100.0 * step / max_steps) if max_steps > 0 else 0.0,
        eta_s=parse_duration(record.get("remaining_time")),
        elapsed_s=parse_duration(record.get("elapsed_time")),
        epoch=raw.get("epoch"),
        loss=raw.get(f"{prefix}loss"),
        learning_rate=raw.get("learning_rate"),
        grad_norm=raw.get("grad_norm"),
        token_acc=raw.get("eval_token_acc" if kind == "eval" else "token_acc"),
        memory_gib=raw.get("memory(GiB)"),
        train_speed=_seconds_per_step(raw),
        raw=raw,
    )


def _seconds_per_step(raw: Mapping[str, float]) -> float | None:
    """ms-swift 4.x logs s/it; 3.x logged it/s."""
    if "train_speed(s/it)" in raw:
        return raw["train_speed(s/it)"]
    rate = raw.get("train_speed(iter/s)")
    return 1.0 / rate if rate else None
