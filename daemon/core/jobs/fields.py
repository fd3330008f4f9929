"""Field types the job file formats share, each with the check that refuses a bad value early.

People write YAML: `"2e-5"` for a number, `true` where a number belongs, `"0,1"` for a GPU list, one
item where a list is expected. The before-validators here decide what each of those means before
pydantic checks the type, and every refusal carries a hint so a rejected file says how to fix it.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, NoReturn

from pydantic import BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from daemon.core.jobs.problems import show

_MAX_TIMEOUT_S = 366 * 86400
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DURATION_RE = re.compile(r"\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*([dhms])\s*")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_NAME_HINT = "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64"


def _fail(message: str, hint: str = "") -> NoReturn:
    """Raise a validation error that carries a hint for JobProblem."""
    raise PydanticCustomError("job_file", "{message}", {"message": message, "hint": hint})


def _int_like(value: object) -> object:
    """YAML 1.1 reads `true` as a bool, which Python counts as 1; a number must be written as one."""
    if isinstance(value, bool):
        _fail("expected a number, not true/false")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
        return int(value)
    return value


def _text(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        _fail("text must not contain NUL characters")
    return value


def _word(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(r"[^\s\x00-\x1f\x7f]{1,256}", value):
        _fail(f"{show(value)} must be one word without spaces or control characters")
    return value


def _listify(value: object) -> object:
    """A single item where a list is expected is a list of one (`after: a`, `dataset: x`)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return [value]
    return value


def _split_words(value: object) -> object:
    """`target_modules: "q_proj v_proj"` or "q_proj,v_proj" is a list, as on swift's command line."""
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,]+", value) if part]
    return value


def _job_name(value: object) -> object:
    if isinstance(value, str) and not _NAME_RE.fullmatch(value):
        _fail(f"{show(value)} is not a valid name", f"use {_NAME_HINT} characters")
    return value


def _duration(value: object) -> int:
    """Seconds, or a string such as "2h", "30m", "1h30m", "90s", "1d"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail("a timeout is a number of seconds or a string such as '2h', '30m' or '1h30m'")
    seconds = _duration_seconds(value) if isinstance(value, str) else value
    if not 0 < seconds <= _MAX_TIMEOUT_S:
        _fail(f"timeout {show(value)} must be more than 0 s and at most 366 days")
    return math.ceil(seconds)


def _duration_seconds(text: str) -> float:
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    total, pos = 0.0, 0
    while pos < len(text):
        match = _DURATION_RE.match(text, pos)
        if match is None:
            _fail(f"{show(text)} is not a duration", "write seconds or e.g. '2h', '30m', '1h30m', '1d'")
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    return total if text else _fail("an empty string is not a duration")


def _gpu_ids(value: object) -> tuple[int | str, ...]:
    """GPU indices or UUIDs: [0, 1], "0,1" (the trainer API's gpu_id) or a single 0."""
    items = value.split(",") if isinstance(value, str) else _listify(value)
    if not isinstance(items, list | tuple) or not items:
        _fail('GPUs are a list such as [0, 1] or a string such as "0,1"')
    ids = tuple(_gpu_id(item) for item in items)
    if len(set(ids)) != len(ids):
        _fail("a GPU is listed twice")
    return ids


def _gpu_id(item: object) -> int | str:
    if isinstance(item, str):
        item = item.strip()
        if re.fullmatch(r"[0-9]{1,4}", item):
            return int(item)
        if re.fullmatch(r"(?:GPU|MIG)-[0-9A-Za-z/-]{1,96}", item):
            return item
    elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 10000:
        return item
    _fail(f"{show(item)} is not a GPU index or UUID", "write indices such as 0 or UUIDs such as GPU-5d3c...")


def _one_or_many(item: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]})


_STRING = {"type": "string"}
_PositiveInt = Annotated[int, Field(gt=0), BeforeValidator(_int_like)]
_Count = Annotated[int, Field(ge=0), BeforeValidator(_int_like)]
_PositiveFloat = Annotated[float, Field(gt=0), BeforeValidator(_int_like)]
_Fraction = Annotated[float, Field(ge=0, lt=1), BeforeValidator(_int_like)]
_QuantBits = Annotated[Literal[1, 2, 3, 4, 8], BeforeValidator(_int_like)]
_Text = Annotated[str, BeforeValidator(_text)]
_Word = Annotated[str, BeforeValidator(_word)]
_Names = Annotated[tuple[_Text, ...], BeforeValidator(_listify), Field(min_length=1), _one_or_many(_STRING)]
_Modules = Annotated[
    tuple[_Word, ...], BeforeValidator(_split_words), Field(min_length=1), _one_or_many(_STRING)
]
_JobName = Annotated[str, Field(pattern=f"^{_NAME_RE.pattern}$"), BeforeValidator(_job_name)]


_Duration = Annotated[
    int,
    BeforeValidator(_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]}),
]
_GpuIds = Annotated[
    tuple[int | str, ...],
    BeforeValidator(_gpu_ids),
    _one_or_many({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}),
]
