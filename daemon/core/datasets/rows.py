"""Row checks, one per JSON line format, hand-written for speed; each returns the row ms-swift will read.

The tests hold them to the same verdicts as the published models in `lines`. A new format's check goes
here, beside its detection in `_detect` and its entry in `_CHECKS`.
"""

from __future__ import annotations

import difflib
import functools
import operator
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from daemon.core.datasets.fields import (
    _check_keys,
    _kind,
    _number,
    _optional,
    _required,
    _string_list,
)
from daemon.core.datasets.formats import (
    _ALL_KEYS,
    _KEYS,
    _MESSAGE_KEYS,
    _RESPONSE_KEYS,
    DatasetFormat,
)
from daemon.core.datasets.rules import (
    _check_one_rejected,
    _check_order,
    _check_pair,
    _check_single_assistant,
    _check_template,
    _RowError,
    _scored_pair,
)

_ROLE_LETTERS = {"system": "s", "user": "u", "assistant": "a", "tool": "t"}
_ROLE_NAMES = {letter: role for role, letter in _ROLE_LETTERS.items()}
_CHAT_PATTERN = re.compile(r"s?ua(?:ua|t+a)*")
"""The order rules of `_check_order` over one letter per role, so a valid conversation costs one match."""
_VALID_ORDERS: dict[tuple[str, ...], str] = {}
_VALID_ORDERS_KEPT = 1024
_GET_ROLE = operator.itemgetter("role")
_GET_CONTENT = operator.itemgetter("content")
_PREFERENCE_KEYS = _KEYS["preference"]


class _Row(NamedTuple):
    out: dict[str, Any]
    roles: str
    """One letter per message of the output (see _ROLE_LETTERS), for the stats."""
    chars: int
    pair: tuple[int, int, int] | None
    """Characters of prompt, chosen, rejected, for preference rows."""
    plain: bool
    """The row is exactly `out`: `{"messages": [role/content pairs]}` or `{"text": ...}`."""
    scored: bool = False
    """The pair was picked from scored responses, so the stats can say how many were."""
    paired: bool = False
    """`out` is `_pair_row`'s: `{"messages": [system?, user, assistant], "rejected_response": ...}`,
    strings only, so its line is written from a template (see `codec._pair_line`)."""


_new_row = functools.partial(tuple.__new__, _Row)
"""_Row from a tuple of all its fields, without the Python-level __new__ of a NamedTuple: the rows
checked most often are built this way."""


def _message(message: object, field: str) -> tuple[str, str]:
    """Check one message in detail: it failed the fast path, or carries ms-swift's optional keys."""
    if type(message) is not dict:
        raise _RowError(
            field, f"must be an object, not {_kind(message)}", 'e.g. {"role": "user", "content": "..."}'
        )
    _check_keys(message, _MESSAGE_KEYS, field)
    role: str = _required(message, "role", (str,), field)
    content: str = _required(message, "content", (str,), field)
    _optional(message, "loss", (bool,), field)
    _number(message, "loss_scale", field, required=False)
    return role, content


def _conversation(messages: object, field: str) -> tuple[str, int, bool]:
    """Check a conversation; return its role letters, its content characters and whether it is plain.

    This is the hot path, so the common case (role/content string pairs in a valid order) is checked
    with a few C-level calls; anything else goes through the message-by-message checks that word the
    error.
    """
    if type(messages) is list and messages:
        try:
            order = tuple(map(_GET_ROLE, messages))
            roles = _VALID_ORDERS.get(order) or _valid_order(order)
            chars = len("".join(map(_GET_CONTENT, messages)))
        except (TypeError, KeyError):
            pass
        else:
            if roles and sum(map(len, messages)) == 2 * len(messages):
                return roles, chars, True
    return _conversation_in_detail(messages, field)


def _valid_order(roles: tuple[str, ...]) -> str:
    """The role letters if the order is valid, else "". Remembers valid orders in `_VALID_ORDERS`,
    which the caller looks in first: files repeat a few."""
    letters = "".join(map(_ROLE_LETTERS.__getitem__, roles))
    if not _CHAT_PATTERN.fullmatch(letters):
        return ""
    if len(_VALID_ORDERS) < _VALID_ORDERS_KEPT:
        _VALID_ORDERS[roles] = letters
    return letters


def _conversation_in_detail(messages: object, field: str) -> tuple[str, int, bool]:
    if type(messages) is not list or not messages:
        got = "an empty list" if messages == [] else _kind(messages)
        example = '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
        raise _RowError(
            field, f"must be a non-empty list of messages, not {got}", f'e.g. "{field}": {example}'
        )
    pairs = [_message(m, f"{field}[{i}]") for i, m in enumerate(messages)]
    _check_order([role for role, _ in pairs], field)
    roles = "".join(_ROLE_LETTERS[role] for role, _ in pairs)
    return roles, sum(len(content) for _, content in pairs), False


def _assistant_only(messages: object) -> bool:
    if type(messages) is not list or not messages or type(messages[0]) is not dict:
        return False
    return messages[0].get("role") == "assistant" and all(
        type(m) is dict and m.get("role") == "assistant" for m in messages
    )


def _detect(row: object) -> DatasetFormat:
    """Name the row's format from its keys alone, so every later complaint can be specific."""
    if type(row) is not dict:
        raise _RowError(None, f"expected a JSON object, not {_kind(row)}", 'write each row as {"key": value}')
    if "messages" in row:
        if "rejected_response" in row or "rejected_messages" in row:
            return "swift_preference"
        if "label" in row:
            return "kto"
        if "target_modules" in row or "rank" in row:
            return "lora_messages"
        return "pretrain_messages" if _assistant_only(row["messages"]) else "sft_messages"
    if "responses" in row:
        return "scored_responses"
    if "chosen" in row or "rejected" in row or "prompt" in row:
        return "preference"
    if "text" in row:
        return "pretrain_text"
    keys = ", ".join(repr(key) for key in list(row)[:6]) or "none"
    guesses = [close[0] for key in row if (close := difflib.get_close_matches(key, sorted(_ALL_KEYS), 1))]
    lead = f"did you mean {guesses[0]!r}? " if guesses else ""
    raise _RowError(
        None,
        f"cannot tell the row's format from its keys ({keys})",
        f"{lead}a row needs messages, text, prompt with chosen and rejected, or prompt with responses",
    )


def _sft_row(row: dict[str, Any]) -> _Row:
    if len(row) == 1:  # only messages: nothing to drop or apply, the common case
        roles, chars, plain = _conversation(row["messages"], "messages")
        return _Row(row, roles, chars, None, plain)
    return _chat_row(row, "sft_messages")


def _lora_row(row: dict[str, Any]) -> _Row:
    return _chat_row(row, "lora_messages")


def _chat_row(row: dict[str, Any], fmt: str) -> _Row:
    roles, chars, _plain = _conversation(row.get("messages"), "messages")
    _check_keys(row, _KEYS[fmt])
    _optional(row, "conversation_id", (str, int))
    _string_list(row, "task_tags", names=False)
    _optional(row, "metadata", (dict,))
    if fmt == "lora_messages":
        _string_list(row, "target_modules", names=True)
        rank = _optional(row, "rank", (int,))
        if rank is not None and rank < 1:
            raise _RowError("rank", f"must be 1 or more, not {rank}", 'e.g. "rank": 8')
    messages: list[dict[str, Any]] = row["messages"]
    template: str | None = _optional(row, "input_template", (str,))
    _check_template(template)
    if template is not None:
        messages = [_templated(m, template) if m["role"] == "user" else m for m in messages]
    system: str | None = _optional(row, "system_prompt", (str,))
    if system is not None and roles[0] != "s":
        messages = [{"role": "system", "content": system}, *messages]
        roles = "s" + roles
    chars = sum(len(m["content"]) for m in messages)
    return _Row({"messages": messages}, roles, chars, None, False)


def _templated(message: dict[str, Any], template: str) -> dict[str, Any]:
    return {**message, "content": template.replace("{input}", message["content"])}


def _pretrain_text_row(row: dict[str, Any]) -> _Row:
    _check_keys(row, _KEYS["pretrain_text"])
    text: str = _required(row, "text", (str,))
    if not text:
        raise _RowError("text", "is empty", "drop the row, or put the document's text in it")
    _optional(row, "doc_id", (str, int))
    _optional(row, "metadata", (dict,))
    return _Row({"text": text}, "", len(text), None, len(row) == 1)


def _pretrain_messages_row(row: dict[str, Any]) -> _Row:
    _check_keys(row, _KEYS["pretrain_messages"])
    messages: list[Any] = row["messages"]
    _check_single_assistant(len(messages))
    _role, content = _message(messages[0], "messages[0]")
    _optional(row, "doc_id", (str, int))
    _optional(row, "metadata", (dict,))
    plain = len(row) == 1 and len(messages[0]) == 2
    return _Row({"messages": messages}, "a", len(content), None, plain)


def _pair_row(prompt: str, chosen: str, rejected: str, system: str | None, *, scored: bool) -> _Row:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}]
    chars = len(prompt) + len(chosen) + len(rejected)
    roles = "ua"
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
        chars += len(system)
        roles = "sua"
    out = {"messages": messages, "rejected_response": rejected}
    return _new_row((out, roles, chars, (len(prompt), len(chosen), len(rejected)), False, scored, True))


def _preference_row(row: dict[str, Any]) -> _Row:
    """A good row passes one combined test; a bad one goes through `_preference_in_detail`, which words its first problem."""
    prompt, chosen, rejected = row.get("prompt"), row.get("chosen"), row.get("rejected")
    system, metadata = row.get("system"), row.get("metadata")
    if (
        type(prompt) is str
        and type(chosen) is str
        and type(rejected) is str
        and chosen != rejected
        and (system is None or type(system) is str)
        and (metadata is None or type(metadata) is dict)
        and row.keys() <= _PREFERENCE_KEYS
    ):
        return _pair_row(prompt, chosen, rejected, system, scored=False)
    return _preference_in_detail(row)


def _preference_in_detail(row: dict[str, Any]) -> _Row:
    _check_keys(row, _PREFERENCE_KEYS)
    prompt: str = _required(row, "prompt", (str,))
    chosen: str = _required(row, "chosen", (str,))
    rejected: str = _required(row, "rejected", (str,))
    _check_pair(chosen, rejected, "rejected")
    _optional(row, "metadata", (dict,))
    return _pair_row(prompt, chosen, rejected, _optional(row, "system", (str,)), scored=False)


def _scored_row(row: dict[str, Any]) -> _Row:
    _check_keys(row, _KEYS["scored_responses"])
    prompt: str = _required(row, "prompt", (str,))
    responses: list[Any] = _required(row, "responses", (list,))
    if len(responses) < 2:
        count = len(responses)
        raise _RowError("responses", f"needs at least 2 responses to compare, not {count}", "add another one")
    scores: list[float] = []
    contents: list[str] = []
    for i, response in enumerate(responses):
        field = f"responses[{i}]"
        if type(response) is not dict:
            example = '{"content": "...", "score": 0.9}'
            raise _RowError(field, f"must be an object, not {_kind(response)}", f"e.g. {example}")
        _check_keys(response, _RESPONSE_KEYS, field)
        contents.append(_required(response, "content", (str,), field))
        scores.append(_number(response, "score", field, required=True))
    _optional(row, "metadata", (dict,))
    system: str | None = _optional(row, "system", (str,))
    best, worst = _scored_pair(scores, contents)
    return _pair_row(prompt, contents[best], contents[worst], system, scored=True)


def _swift_preference_row(row: dict[str, Any]) -> _Row:
    _check_keys(row, _KEYS["swift_preference"])
    roles, chars, _plain = _conversation(row["messages"], "messages")
    messages: list[dict[str, Any]] = row["messages"]
    response: str | None = _optional(row, "rejected_response", (str,))
    rejected_messages: Any = row.get("rejected_messages")
    _check_one_rejected(response is not None, rejected_messages is not None)
    chosen: str = messages[-1]["content"]
    prompt: str = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if response is not None:
        rejected, field = response, "rejected_response"
        out: dict[str, Any] = {"messages": messages, "rejected_response": response}
    else:
        _conversation(rejected_messages, "rejected_messages")
        rejected, field = rejected_messages[-1]["content"], "rejected_messages"
        out = {"messages": messages, "rejected_messages": rejected_messages}
    _check_pair(chosen, rejected, field)
    pair = (len(prompt), len(chosen), len(rejected))
    return _Row(out, roles, chars + len(rejected), pair, False)


def _kto_row(row: dict[str, Any]) -> _Row:
    _check_keys(row, _KEYS["kto"])
    roles, chars, _plain = _conversation(row["messages"], "messages")
    label: bool = _required(row, "label", (bool,))
    return _Row({"messages": row["messages"], "label": label}, roles, chars, None, False)


_CHECKS: dict[str, Callable[[dict[str, Any]], _Row]] = {
    "sft_messages": _sft_row,
    "lora_messages": _lora_row,
    "pretrain_text": _pretrain_text_row,
    "pretrain_messages": _pretrain_messages_row,
    "preference": _preference_row,
    "scored_responses": _scored_row,
    "swift_preference": _swift_preference_row,
    "kto": _kto_row,
}
