"""The dataset validator's fast paths give exactly what the general path gives: the same rows, lines,
errors and stats, on any input."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from daemon.core.datasets import DatasetReport, DatasetValidator, validator
from daemon.core.datasets.codec import _ENCODE, _pair_line, _parse, _parse_in_detail, _plain_row
from daemon.core.datasets.rows import _CHECKS, _detect, _pair_row, _preference_in_detail, _preference_row
from daemon.core.datasets.rules import _RowError

ROLES = ["system", "user", "assistant", "tool", "human"]
LETTERS = {"s": "system", "u": "user", "a": "assistant", "t": "tool"}
texts = st.sampled_from(["a", "b:c", ":", "::x", "\\u003a", "<image>", '"type"', "é", "\u2028", "\r", ""])
words = st.text(max_size=6) | texts
keys = st.sampled_from(["messages", "role", "content", "loss", "text", "prompt", "chosen", "rejected"])
scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, 1e400]) | words


def _member(key: str, value: str) -> str:
    """Objects are written member by member, so a key can repeat (json.dumps cannot write that)."""
    return f"{json.dumps(key)}: {value}"


def _value(draw: st.DrawFn) -> str:
    return json.dumps(draw(scalars), ensure_ascii=draw(st.booleans()), allow_nan=True)


@st.composite
def messages(draw: st.DrawFn) -> str:
    """Mostly a valid order of role/content strings; now and then a bad role, order or value, a
    repeated or missing key or an extra one."""
    pattern = draw(st.sampled_from(["ua", "sua", "uaua", "uata", "ua", "a", "uu", ""]))
    items = []
    for letter in pattern:
        role = draw(st.sampled_from([LETTERS[letter]] * 12 + ROLES))
        content = json.dumps(draw(words), ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 12)) == 0:
            content = _value(draw)
        pairs = [("role", json.dumps(role)), ("content", content)]
        if draw(st.integers(0, 12)) == 0:
            pairs.append(draw(st.sampled_from([("role", '"user"'), ("content", '"x:y"'), ("loss", "true")])))
        if draw(st.integers(0, 12)) == 0:
            pairs = pairs[1:]
        items.append("{" + ", ".join(_member(k, v) for k, v in pairs) + "}")
    return "[" + ", ".join(items) + "]"


@st.composite
def lines(draw: st.DrawFn) -> str:
    """Conversation rows near the plain shape, pairs, and anything else, with repeated keys, colons in
    strings, escapes, NaN and stray whitespace now and then."""
    kind = draw(st.sampled_from(["chat", "chat", "text", "pair", "any"]))
    if kind == "text":
        pairs = [("text", json.dumps(draw(words), ensure_ascii=draw(st.booleans())))]
        if draw(st.integers(0, 6)) == 0:
            pairs.append(draw(st.sampled_from([("text", '"b"'), ("doc_id", "1"), ("x", '"a:b"')])))
    elif kind == "chat":
        pairs = [("messages", draw(messages()))]
        if draw(st.integers(0, 8)) == 0:
            pairs.append(draw(st.sampled_from([("messages", "[]"), ("rank", "4"), ("x", '"a:b"')])))
    elif kind == "pair":
        pairs = [(k, _value(draw)) for k in ("prompt", "chosen", "rejected")]
        if draw(st.integers(0, 3)) == 0:
            pairs.append(draw(st.sampled_from([("system", '"s"'), ("metadata", "{}"), ("chosen", '"z"')])))
    else:
        pairs = [(draw(keys), _value(draw)) for _ in range(draw(st.integers(0, 3)))]
    text = "{" + ", ".join(_member(k, v) for k, v in pairs) + "}"
    return (
        draw(st.sampled_from([""] * 9 + [" "])) + text + draw(st.sampled_from([""] * 12 + [" ", "x", "NaN"]))
    )


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except _RowError as e:
        return "error", (e.field, e.problem, e.hint, e.where)


@settings(max_examples=400, deadline=None)
@given(text=lines())
@example(text='{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}')
@example(text='{"messages": [{"role": "user", "role": "user", "content": "a"}, {"role": "assistant"}]}')
@example(text='{"messages": [{"role": "user", "content": "\\u003a"}, {"role": "assistant", "content": "b"}]}')
@example(text='{"text": "a", "text": "\\u003a"}')
@example(  # the escape's colon would make up for the repeated key's in a count of the line's colons
    text='{"messages": [{"role": "user", "role": "user", "content": "\\u003a"}, {"role": "assistant", "content": "b"}]}'
)
def test_parse_and_plain_row_read_as_the_general_path(text: str) -> None:
    assert _outcome(_parse, text) == _outcome(_parse_in_detail, text)
    raw = text.encode()
    _validate(raw)  # the full check learns the conversation's order, if valid, as a file's first row does
    plain = _plain_row(text, raw)
    if plain is not None:
        obj = _parse_in_detail(text)  # raises on a repeated key: the quick read must not miss one
        fmt, row = plain
        assert _detect(obj) == fmt
        assert row == _CHECKS[fmt](obj)


@settings(max_examples=300, deadline=None)
@given(text=lines())
def test_preference_check_is_its_detailed_check(text: str) -> None:
    try:
        obj = _parse_in_detail(text)
    except _RowError:
        return
    if type(obj) is dict:
        assert _outcome(_preference_row, obj) == _outcome(_preference_in_detail, obj)


@settings(max_examples=300, deadline=None)
@given(
    prompt=st.text(), chosen=st.text(), rejected=st.text(), system=st.none() | st.text(), ascii=st.booleans()
)
@example(prompt='say "hi"', chosen="a\nb", rejected="\\", system="\x00", ascii=False)
@example(prompt="中", chosen="é", rejected="\u2028", system=None, ascii=False)
def test_pair_line_is_what_the_encoder_writes(
    prompt: str, chosen: str, rejected: str, system: str | None, ascii: bool
) -> None:
    """From the line the strings were read from: with or without escapes in it."""
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "system": system}
    try:
        raw = json.dumps(row, ensure_ascii=ascii).encode()
    except UnicodeEncodeError:  # a lone surrogate: only escaped is it a line
        raw = json.dumps(row).encode()
    out = _pair_row(prompt, chosen, rejected, system, scored=False).out
    assert _pair_line(out, raw) == _ENCODE(out) + "\n"


def _validate(data: bytes) -> tuple[list[bytes], DatasetReport]:
    v = DatasetValidator("f.jsonl", max_errors=50)
    out = v.feed(data)
    out += v.flush()
    return out, v.finish()


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(lines(), min_size=1, max_size=6))
def test_validator_gives_what_the_general_path_gives(rows: list[str]) -> None:
    data = "".join(row + "\n" for row in rows).encode()
    fast = _validate(data)
    with mock.patch.object(validator, "_plain_row", lambda text, raw: None):
        general = _validate(data)
    assert fast == general
