"""Reading one field of a row by its type, with the error worded for the person who will fix it.

The row checks call these for every key they accept, so each reads a value with a dict lookup and a
type test; only a wrong value pays for wording the message and the example.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from daemon.core.datasets.rules import _RowError

_TYPE_WORDS: dict[type, tuple[str, str]] = {
    str: ("a string", '"..."'),
    list: ("a list", "[...]"),
    dict: ("an object", "{...}"),
    bool: ("true or false", "true"),
    int: ("a whole number", "8"),
}
_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
    list: "a list",
    dict: "an object",
}


def _kind(value: object) -> str:
    return _KIND_NAMES.get(type(value), type(value).__name__)


def _at(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _did_you_mean(word: str, choices: frozenset[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    lead = f"did you mean {close[0]!r}? " if close else ""
    return f"{lead}allowed keys here: {', '.join(sorted(choices))}"


def _check_keys(obj: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> None:
    if obj.keys() <= allowed:
        return
    unknown = next(key for key in obj if key not in allowed)
    raise _RowError(_at(prefix, unknown), f"unknown key {unknown!r}", _did_you_mean(unknown, allowed))


def _type_error(field: str, value: object, kinds: tuple[type, ...]) -> _RowError:
    words, example = _TYPE_WORDS[kinds[0]]
    key = field.rsplit(".", 1)[-1]
    return _RowError(
        field, f"must be {words}, not {_kind(value)}", f'write it as {words}, e.g. "{key}": {example}'
    )


def _required(obj: dict[str, Any], key: str, kinds: tuple[type, ...], prefix: str = "") -> Any:
    value = obj.get(key)
    if type(value) in kinds:
        return value
    if key not in obj:
        words, example = _TYPE_WORDS[kinds[0]]
        raise _RowError(_at(prefix, key), f"{key} is missing", f'add it as {words}, e.g. "{key}": {example}')
    raise _type_error(_at(prefix, key), value, kinds)


def _optional(obj: dict[str, Any], key: str, kinds: tuple[type, ...], prefix: str = "") -> Any:
    value = obj.get(key)
    if value is None or type(value) in kinds:
        return value
    raise _type_error(_at(prefix, key), value, kinds)


def _is_number(value: object) -> bool:
    """Finite int or float, not bool: what a float column in ms-swift's arrow reader can hold."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is not int:
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _number(obj: dict[str, Any], key: str, prefix: str, *, required: bool) -> Any:
    value = obj.get(key)
    if _is_number(value) or (value is None and not required):
        return value
    if key not in obj:
        raise _RowError(_at(prefix, key), f"{key} is missing", f'add it as a number, e.g. "{key}": 0.5')
    raise _RowError(_at(prefix, key), f"must be a finite number, not {_kind(value)}", "write it as e.g. 0.5")


def _string_list(obj: dict[str, Any], key: str, *, names: bool) -> None:
    """A list of strings; `names` also forbids an empty list and empty strings (module names)."""
    items: list[Any] | None = _optional(obj, key, (list,))
    if items is None:
        return
    if names and not items:
        raise _RowError(key, "is an empty list", f'name at least one, e.g. "{key}": ["q_proj", "v_proj"]')
    for i, item in enumerate(items):
        if type(item) is not str or (names and not item):
            raise _RowError(f"{key}[{i}]", f"must be a non-empty string, not {_kind(item)}", "write a name")
