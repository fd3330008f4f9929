"""Bytes in, bytes out: one line's bytes to text and JSON, and a checked row to the line ms-swift reads.

Reading is stricter than Python's json, because what it lets through (NaN, a repeated key, an unpaired
surrogate) fails in ms-swift's reader or reads differently elsewhere. Writing passes a line through
unchanged whenever it can, because serialising is the most expensive step of the whole pass.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from daemon.core.datasets.formats import DatasetFormat
from daemon.core.datasets.rows import _GET_CONTENT, _GET_ROLE, _VALID_ORDERS, _new_row, _Row
from daemon.core.datasets.rules import _RowError

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse repeated keys: Python's json keeps the last copy, other readers the first or neither."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        key = Counter(k for k, _ in pairs).most_common(1)[0][0]
        raise _RowError(key, "this key appears twice in one object", "keep one copy of it")
    return obj


def _no_constants(name: str) -> Any:
    raise _RowError(None, f"{name} is not valid JSON", "write a finite number, or null for a missing value")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constants)
_Scan = Callable[[str, int], tuple[Any, int]]
_SCAN: _Scan = _DECODER.scan_once  # type: ignore[attr-defined]  # what decode() calls, undeclared in the stubs
_SCAN_PLAIN: _Scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_STRING = json.encoder.encode_basestring
"""What `_ENCODE` writes a string as (ensure_ascii=False)."""
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False, allow_nan=False).encode


def _decode(raw: bytes) -> str:
    if b"\x00" in raw:
        column = f"byte column {raw.index(0) + 1}"
        raise _RowError(
            None, "NUL byte; the file looks binary or UTF-16", "save it as UTF-8 text", column=column
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _RowError(
            None,
            f"byte 0x{raw[e.start]:02X} is not valid UTF-8; save the file as UTF-8",
            "it is probably Latin-1 or Windows-1252: re-save it as UTF-8, e.g. "
            "`iconv -f WINDOWS-1252 -t UTF-8 NAME.jsonl > fixed.jsonl`",
            column=f"byte column {e.start + 1}",
        ) from None


def _parse(text: str) -> Any:
    """The line's JSON value. The scanner is called directly: a row that starts and ends its value
    exactly where the line does (nearly all of them) needs none of `decode`'s whitespace handling;
    anything else, errors included, takes `decode` and its worded errors."""
    try:
        obj, end = _SCAN(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return _parse_in_detail(text)
    if end != len(text):
        return _parse_in_detail(text)
    return obj


def _plain_row(text: str, raw: bytes) -> tuple[DatasetFormat, _Row] | None:
    """The format and row of a line that is `{"messages": [role/content string pairs]}` in a valid
    order or `{"text": "..."}`, as detection and the row's check would give them; None for any other
    line, which the caller then reads and checks in full.

    These are the commonest rows, and this reads them without `_unique_keys`, whose Python call per
    object costs most of a short row's parse. No key can have been dropped as a repeat: a line's
    colons are one after each key plus those inside its strings (which read back the same when no
    `\\u003a` escape is in the line), and these keys and roles hold none, so the colons of the
    contents plus the dicts' keys add up to the line's only if every key of the line was kept.
    """
    if (b"\\" in raw and b"\\u003" in raw) or b"<" in raw or b'"type"' in raw:  # or it may carry media
        return None
    try:
        obj, end = _SCAN_PLAIN(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    if end != len(text) or type(obj) is not dict or len(obj) != 1:
        return None
    messages = obj.get("messages")
    if messages is None:
        document = obj.get("text")
        if type(document) is not str or not document or raw.count(b":") != 1 + document.count(":"):
            return None
        return "pretrain_text", _new_row((obj, "", len(document), None, True, False, False))
    try:
        # An order not seen yet, or not a list of dicts, raises: the full check words or learns it.
        roles = _VALID_ORDERS[tuple(map(_GET_ROLE, messages))]
        contents = "".join(map(_GET_CONTENT, messages))
    except (TypeError, KeyError):
        return None
    keys = 1 + 2 * len(messages)
    if sum(map(len, messages)) != keys - 1 or raw.count(b":") != keys + contents.count(":"):
        return None
    return "sft_messages", _new_row((obj, roles, len(contents), None, True, False, False))


def _parse_in_detail(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except _RowError:
        raise
    except json.JSONDecodeError as e:
        hint = _json_hint(text)
        raise _RowError(None, f"invalid JSON: {e.msg}", hint, column=f"column {e.colno}") from None
    except ValueError:
        raise _RowError(None, "a number has too many digits to read", "write it with fewer digits") from None
    except RecursionError:
        raise _RowError(None, "the JSON is nested too deeply to read", "flatten the row") from None


def _json_hint(text: str) -> str:
    start = text.lstrip()[:1]
    if start == "[":
        return "write one JSON object per line (JSONL), not a JSON array"
    if start != "{":
        return "each line of a .jsonl file is one JSON object; plain text for pretraining goes in a .txt file"
    if text.strip() == "{":
        return "write each object on one line (JSONL), not pretty-printed over several lines"
    return (
        "each line must be one complete JSON object: check the quotes, commas and brackets near that column"
    )


def _same_as_read(row: _Row, raw: bytes) -> bool:
    """Whether ms-swift reads `raw` as exactly `row.out`, so the line can be written unchanged.

    The line is strict UTF-8 without NaN or repeated keys by now. What is left: a surrogate escape
    (paired ones are fine, but telling them apart costs more than re-serialising the rare line that
    has one) and a bare CR, which some line readers take for a line break.
    """
    return row.plain and b"\r" not in raw and not (b"\\" in raw and _SURROGATE_ESCAPE.search(raw))


def _pair_line(out: dict[str, Any], raw: bytes) -> str:
    """A pair row's line, byte for byte what `_ENCODE` writes for it, without the encoder's
    per-call set-up, which costs more than the short strings of a typical pair.

    Its strings all come from `raw`. A line without a backslash has no escape, so none of its
    strings holds a quote, a backslash or a control character (those must be escaped in JSON), and
    the encoder writes each of them as it is between quotes."""
    messages = out["messages"]
    user, chosen, rejected = messages[-2]["content"], messages[-1]["content"], out["rejected_response"]
    system = messages[0]["content"] if len(messages) == 3 else None
    if b"\\" in raw:
        user, chosen, rejected = _STRING(user), _STRING(chosen), _STRING(rejected)
        system = None if system is None else _STRING(system)
    else:
        user, chosen, rejected = f'"{user}"', f'"{chosen}"', f'"{rejected}"'
        system = None if system is None else f'"{system}"'
    head = "" if system is None else f'{{"role": "system", "content": {system}}}, '
    return (
        f'{{"messages": [{head}{{"role": "user", "content": {user}}}, '
        f'{{"role": "assistant", "content": {chosen}}}], "rejected_response": {rejected}}}\n'
    )


def _serialise(row: _Row, raw: bytes) -> bytes:
    try:
        if row.paired:
            return _pair_line(row.out, raw).encode("utf-8")
        if _same_as_read(row, raw):
            return raw + b"\n"
        return (_ENCODE(row.out) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise _RowError(
            None,
            "a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text",
            "write characters beyond U+FFFF as UTF-8, or as a full surrogate pair such as \\ud83d\\ude00",
        ) from None
