"""Dataset files dropped into the inbox: detect the line format, check every row, convert to ms-swift's JSONL.

The inbox adapter reads a dropped file once, in chunks, while it hashes it; this module only ever sees
those bytes. So intake and `llmtraind check` share one code path, a 10 GB file costs one pass, and
memory stays bounded by `max_line_bytes` plus one chunk. Problems are collected per line with a hint,
because the person who dropped the file reads them in `inbox/rejected/NAME.error.txt` and should be able
to fix every line in one go instead of one per retry.

Rules (the contract; they are what the error file and the README explain)

Container
- `NAME.txt`: every non-blank line is one pretraining document, converted to `{"text": LINE}`
  (format `plain_text`). `NAME.jsonl`: every non-blank line is one JSON object.
- Strict UTF-8. An invalid byte is reported with its line and byte column; Latin-1 / Windows-1252 files
  fail here (save the file as UTF-8). A UTF-8 byte-order mark at the very start is dropped.
- `\\n` and `\\r\\n` line ends are both accepted; a missing final newline is fine. Blank (whitespace-only)
  lines are skipped but still counted, so line numbers match an editor's.
- NUL bytes are rejected: they mean a binary or UTF-16 file.
- A line may hold at most `max_line_bytes` bytes, its newline not counted. A longer line is reported
  and skipped without ever being held whole.
- JSON: NaN and Infinity are rejected (not JSON; swift's reader fails on them), so is a key repeated in
  one object (readers disagree on which copy wins), and so is a string holding an unpaired surrogate
  escape such as `"\\ud83d"` (it cannot be written as UTF-8).
- A file with no rows is an error. Each bad line reports its first problem; the report keeps the first
  `max_errors` problems and counts all of them.

Rows
- Optional keys may be null, which means absent. Unknown keys are errors, with a did-you-mean.
- The format is detected per row. A file holds one format, decided by its first valid row; a later row
  of another format is an error. The one exception: `sft_messages` and `lora_messages` rows mix freely,
  and the file is `lora_messages` as soon as any row carries `target_modules` or `rank`.
- A conversation (`messages`) is a list of `{"role", "content"}` objects (`loss` and `loss_scale` may be
  added, as ms-swift allows). `content` is a string; `role` is system, user, assistant or tool. Order: at
  most one system message, first; then a user turn; never two user or two assistant turns in a row; tool
  messages only after an assistant turn (or another tool message), and the assistant answers a tool
  result before the next user turn; the last message is the assistant's.

Formats (`DatasetFormat`), with the keys each row may carry
- `sft_messages`: messages; conversation_id, system_prompt, input_template, task_tags, metadata.
- `lora_messages`: as sft_messages, plus target_modules (non-empty list of names) and/or rank (>= 1).
- `pretrain_text`: text (non-empty); doc_id, metadata. `plain_text`: the lines of a `.txt` file.
- `pretrain_messages`: messages holding exactly one assistant message (ms-swift's pretraining form);
  doc_id, metadata.
- `preference`: prompt, chosen, rejected (chosen != rejected, or swift fails); system, metadata.
- `scored_responses`: prompt, responses (>= 2 of `{"content", "score"}`, scores finite numbers, not all
  equal); system, metadata. The highest score is chosen and the lowest rejected (ties: the first listed
  wins); their contents must differ.
- `swift_preference`: messages ending with the chosen answer, plus rejected_response (differs from the
  chosen answer) or rejected_messages (a conversation whose last answer differs from it), not both.
- `kto`: messages plus label (true or false).

Conversion (one output line per row, what ms-swift 4.6 reads)
- messages formats keep `messages` and drop the bookkeeping keys. system_prompt becomes a leading
  system message unless the conversation has one; input_template must contain `{input}`, which is
  replaced by each user message's content.
- preference and scored_responses become `{"messages": [system?, user prompt, assistant chosen],
  "rejected_response": rejected}`; pretrain_text and plain_text become `{"text": ...}`; swift_preference
  and kto keep their swift keys.
- A row that already is its own output (`{"messages": [role/content pairs]}` or `{"text": ...}`) is
  passed through byte for byte when ms-swift provably reads it the same (see `_same_as_read`):
  serialising is the most expensive step of the whole pass. Every other row is written with
  `json.dumps(..., ensure_ascii=False)`.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Literal, NamedTuple, Self, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DatasetFormat",
    "DatasetReport",
    "DatasetStats",
    "DatasetValidator",
    "KtoLine",
    "LineError",
    "LoraHints",
    "LoraMessagesLine",
    "Message",
    "PreferenceLine",
    "PreferenceStats",
    "PretrainMessagesLine",
    "PretrainTextLine",
    "RlhfType",
    "ScoredResponse",
    "ScoredResponsesLine",
    "SftMessagesLine",
    "SwiftPreferenceLine",
    "TaskType",
    "TurnStats",
    "can_feed",
    "line_models",
]

DatasetFormat = Literal[
    "sft_messages",
    "lora_messages",
    "pretrain_text",
    "plain_text",
    "pretrain_messages",
    "preference",
    "scored_responses",
    "swift_preference",
    "kto",
]
TaskType = Literal["sft", "lora", "pretrain", "rl"]
RlhfType = Literal["dpo", "orpo", "simpo", "cpo", "rm", "kto", "ppo", "grpo"]
Role = Literal["system", "user", "assistant", "tool"]

_PAIRWISE: tuple[RlhfType, ...] = ("dpo", "orpo", "simpo", "cpo", "rm", "ppo", "grpo")
_CHAT: tuple[tuple[TaskType, ...], tuple[RlhfType, ...]] = (("sft", "lora", "rl"), ("ppo", "grpo"))
_FEEDS: dict[str, tuple[tuple[TaskType, ...], tuple[RlhfType, ...]]] = {
    "sft_messages": _CHAT,
    "lora_messages": _CHAT,
    "pretrain_text": (("pretrain",), ()),
    "plain_text": (("pretrain",), ()),
    "pretrain_messages": (("pretrain",), ()),
    "preference": (("rl",), _PAIRWISE),
    "scored_responses": (("rl",), _PAIRWISE),
    "swift_preference": (("rl",), _PAIRWISE),
    "kto": (("rl",), ("kto",)),
}
_LOOKS: dict[str, str] = {
    "sft_messages": "messages with user and assistant turns",
    "lora_messages": "messages plus target_modules or rank",
    "pretrain_text": "text",
    "plain_text": "plain text",
    "pretrain_messages": "messages with only an assistant turn",
    "preference": "prompt, chosen and rejected",
    "scored_responses": "prompt and scored responses",
    "swift_preference": "messages plus rejected_response or rejected_messages",
    "kto": "messages plus label",
}
_CHAT_EXTRAS = frozenset({"conversation_id", "system_prompt", "input_template", "task_tags", "metadata"})
_KEYS: dict[str, frozenset[str]] = {
    "sft_messages": _CHAT_EXTRAS | {"messages"},
    "lora_messages": _CHAT_EXTRAS | {"messages", "target_modules", "rank"},
    "pretrain_text": frozenset({"text", "doc_id", "metadata"}),
    "pretrain_messages": frozenset({"messages", "doc_id", "metadata"}),
    "preference": frozenset({"prompt", "chosen", "rejected", "system", "metadata"}),
    "scored_responses": frozenset({"prompt", "responses", "system", "metadata"}),
    "swift_preference": frozenset({"messages", "rejected_response", "rejected_messages"}),
    "kto": frozenset({"messages", "label"}),
}
_ALL_KEYS = frozenset().union(*_KEYS.values())
_CHAT_FAMILY = frozenset({"sft_messages", "lora_messages"})
_MESSAGE_KEYS = frozenset({"role", "content", "loss", "loss_scale"})
_RESPONSE_KEYS = frozenset({"content", "score"})
_ROLES = frozenset(get_args(Role))
_NEXT_ROLES: dict[str | None, frozenset[str]] = {
    None: frozenset({"system", "user"}),
    "system": frozenset({"user"}),
    "user": frozenset({"assistant"}),
    "assistant": frozenset({"user", "tool"}),
    "tool": frozenset({"assistant", "tool"}),
}
_ROLE_ALIASES = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "ai": "assistant",
}
_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
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


class _RowError(ValueError):
    """One problem in one row. A ValueError, so the pydantic line models can raise the same rules."""

    def __init__(self, field: str | None, problem: str, hint: str, *, column: str = "") -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem
        self.hint = hint
        self.where = field or column
        """What the message names after the line number: the field, or a column for unreadable lines."""


# ---------------------------------------------------------------------------------------------------
# Rules shared by the hand-written fast checks and the published pydantic line models


def _check_order(roles: Sequence[str], field: str) -> None:
    """Raise on the first role out of place: swift's chat templates assume strict alternation."""
    prev: str | None = None
    for i, role in enumerate(roles):
        if role not in _NEXT_ROLES[prev]:
            problem, hint = _order_text(prev, role)
            raise _RowError(f"{field}[{i}].role", problem, hint)
        prev = role
    if prev != "assistant":
        raise _RowError(
            f"{field}[{len(roles) - 1}].role",
            f"the conversation ends with a {prev} message; it must end with the assistant's answer",
            "add the assistant's reply as the last message, or remove the trailing message",
        )


def _order_text(prev: str | None, role: str) -> tuple[str, str]:
    if role not in _ROLES:
        guess = _ROLE_ALIASES.get(role.lower()) or next(
            iter(difflib.get_close_matches(role, _ROLES, 1)), None
        )
        lead = f"did you mean {guess!r}? " if guess else ""
        return f"unknown role {role!r}", f"{lead}use system, user, assistant or tool"
    if role == "system":
        return "a system message may only come first", "move it to the start of the conversation"
    if prev is None or prev == "system":
        return (
            f"the first turn (after an optional system message) must be the user's, not {role}",
            "start the conversation with a user message",
        )
    if role == prev:
        other = "assistant" if role == "user" else "user"
        return f"two {role} messages in a row", f"merge them into one, or put the {other}'s turn between them"
    if role == "tool":
        return "a tool message must follow an assistant message", "put the assistant's tool call before it"
    return (
        "after a tool result the assistant must answer before the next user turn",
        "add the assistant's reply after the tool message",
    )


def _check_single_assistant(count: int) -> None:
    if count != 1:
        raise _RowError(
            "messages",
            f"a pretraining document in messages form holds exactly one assistant message, not {count}",
            'put the whole document in one assistant message, or write {"text": "..."} instead',
        )


def _check_template(template: str | None) -> None:
    if template is not None and "{input}" not in template:
        raise _RowError(
            "input_template",
            "has no {input} placeholder",
            'put {input} where the user\'s message goes, e.g. "Question: {input}"',
        )


def _check_lora_keys(given: set[str]) -> None:
    if not given & {"target_modules", "rank"}:
        raise _RowError(None, "a LoRA row carries target_modules or rank", "add one, or use sft_messages")


def _check_pair(chosen: str, rejected: str, field: str) -> None:
    if chosen == rejected:
        raise _RowError(
            field,
            "is the same text as the chosen answer; ms-swift refuses such pairs",
            "give a worse answer as the rejected one, or drop the row",
        )


def _check_one_rejected(has_response: bool, has_messages: bool) -> None:
    if has_response == has_messages:
        problem = "has both" if has_response else "needs one of"
        raise _RowError(
            None,
            f"a swift preference row {problem} rejected_response and rejected_messages",
            "give the rejected answer either as a string (rejected_response) or as a conversation",
        )


def _scored_pair(scores: Sequence[float], contents: Sequence[str]) -> tuple[int, int]:
    """Pick (chosen, rejected) indexes; the first listed wins a tie so the pick never depends on sorting."""
    best = max(range(len(scores)), key=scores.__getitem__)
    worst = min(range(len(scores)), key=scores.__getitem__)
    if scores[best] == scores[worst]:
        raise _RowError(
            "responses",
            f"all {len(scores)} responses have the same score ({scores[best]}), so none is preferred",
            "give better responses higher scores, or drop the row",
        )
    if contents[best] == contents[worst]:
        raise _RowError(
            f"responses[{worst}].content",
            f"the lowest-scored response has the same content as the highest-scored one (responses[{best}])",
            "the chosen and rejected answers must differ: fix the scores or the texts",
        )
    return best, worst


# ---------------------------------------------------------------------------------------------------
# Published line models: one per JSON line format, the source of schemas/dataset-*.json


_LINE = ConfigDict(extra="forbid", strict=True, frozen=True)
_Number = Annotated[float, Field(allow_inf_nan=False)]
_Name = Annotated[str, Field(min_length=1)]


class Message(BaseModel):
    """One turn of a conversation, as ms-swift reads it."""

    model_config = _LINE
    role: Role
    content: str
    loss: bool | None = None
    loss_scale: _Number | None = None


_ORDER_RULE = (
    "At most one system message, first; then a user turn; user and assistant turns alternate; tool "
    "messages follow an assistant turn (or another tool message) and are answered by the assistant; "
    "the last message is the assistant's."
)


class _ChatLine(BaseModel):
    model_config = _LINE
    messages: Annotated[list[Message], Field(min_length=1, description=_ORDER_RULE)]


class SftMessagesLine(_ChatLine):
    """A supervised conversation; the bookkeeping keys are the management API's and are dropped."""

    conversation_id: str | int | None = None
    system_prompt: str | None = None
    input_template: str | None = None
    task_tags: list[str] | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check_order([m.role for m in self.messages], "messages")
        _check_template(self.input_template)
        return self


class LoraMessagesLine(SftMessagesLine):
    """A conversation carrying per-row LoRA settings; they become the report's lora_hints."""

    target_modules: Annotated[list[_Name], Field(min_length=1)] | None = None
    rank: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _lora_rules(self) -> Self:
        _check_lora_keys(self.model_fields_set)
        return self


class PretrainTextLine(BaseModel):
    """One pretraining document."""

    model_config = _LINE
    text: Annotated[str, Field(min_length=1)]
    doc_id: str | int | None = None
    metadata: dict[str, Any] | None = None


class PretrainMessagesLine(_ChatLine):
    """One pretraining document in ms-swift's messages form: a single assistant message."""

    messages: Annotated[list[Message], Field(min_length=1, description="Exactly one assistant message.")]
    doc_id: str | int | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check_single_assistant(len(self.messages))
        if self.messages[0].role != "assistant":
            raise _RowError("messages[0].role", "must be assistant", "use role assistant")
        return self


class PreferenceLine(BaseModel):
    """A preference pair in the management API's form."""

    model_config = _LINE
    prompt: str
    chosen: str
    rejected: str
    system: str | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check_pair(self.chosen, self.rejected, "rejected")
        return self


class ScoredResponse(BaseModel):
    """One candidate answer with its score; higher is better."""

    model_config = _LINE
    content: str
    score: _Number


class ScoredResponsesLine(BaseModel):
    """Scored candidates; the best and the worst become a preference pair."""

    model_config = _LINE
    prompt: str
    responses: Annotated[list[ScoredResponse], Field(min_length=2)]
    system: str | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _scored_pair([r.score for r in self.responses], [r.content for r in self.responses])
        return self


class SwiftPreferenceLine(_ChatLine):
    """ms-swift's own preference row: messages end with the chosen answer."""

    rejected_response: str | None = None
    rejected_messages: Annotated[list[Message], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check_order([m.role for m in self.messages], "messages")
        chosen = self.messages[-1].content
        _check_one_rejected(self.rejected_response is not None, self.rejected_messages is not None)
        if self.rejected_response is not None:
            _check_pair(chosen, self.rejected_response, "rejected_response")
        if self.rejected_messages is not None:
            _check_order([m.role for m in self.rejected_messages], "rejected_messages")
            _check_pair(chosen, self.rejected_messages[-1].content, "rejected_messages")
        return self


class KtoLine(_ChatLine):
    """ms-swift's KTO row: one conversation judged desirable (true) or not (false)."""

    label: bool

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check_order([m.role for m in self.messages], "messages")
        return self


_LINE_MODELS: dict[str, type[BaseModel]] = {
    "sft_messages": SftMessagesLine,
    "lora_messages": LoraMessagesLine,
    "pretrain_text": PretrainTextLine,
    "pretrain_messages": PretrainMessagesLine,
    "preference": PreferenceLine,
    "scored_responses": ScoredResponsesLine,
    "swift_preference": SwiftPreferenceLine,
    "kto": KtoLine,
}


def line_models() -> dict[str, type[BaseModel]]:
    """The JSON line formats' models, for publishing schemas.

    Validation itself is hand-written: it is faster than validating through these models (about 18
    against 23 µs for a 2 KB conversation, before either has produced any output) and it words each
    error for a person. The tests hold the two to the same verdict on every row. `plain_text` has no
    model: its lines are not JSON.
    """
    return dict(_LINE_MODELS)


# ---------------------------------------------------------------------------------------------------
# The report


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class LineError(BaseModel):
    """One problem, worded for the person who will fix the file."""

    model_config = _FROZEN
    line: int | None
    """1-based line number; None for a problem with the whole file."""
    field: str | None
    """Where in the row, e.g. `messages[1].role`; None when the whole line is at fault."""
    message: str
    hint: str


class TurnStats(BaseModel):
    model_config = _FROZEN
    min: int
    mean: float
    max: int


class PreferenceStats(BaseModel):
    """Mean lengths in characters; a rejected answer much shorter than the chosen one is a known bias."""

    model_config = _FROZEN
    prompt_chars_mean: float
    chosen_chars_mean: float
    rejected_chars_mean: float


class DatasetStats(BaseModel):
    """Over the converted rows: what the model will see."""

    model_config = _FROZEN
    rows: int = 0
    characters: int = 0
    turns: TurnStats | None = None
    role_counts: dict[str, int] = {}
    preference: PreferenceStats | None = None


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


# ---------------------------------------------------------------------------------------------------
# Row checks (hand-written for speed; the tests hold them to the same verdicts as the models above)

_ROLE_LETTERS = {"system": "s", "user": "u", "assistant": "a", "tool": "t"}
_ROLE_NAMES = {letter: role for role, letter in _ROLE_LETTERS.items()}
_CHAT_PATTERN = re.compile(r"s?ua(?:ua|t+a)*")
"""The order rules of `_check_order` over one letter per role, so a valid conversation costs one match."""
_VALID_ORDERS: dict[tuple[str, ...], str] = {}
_VALID_ORDERS_KEPT = 1024
_GET_ROLE = operator.itemgetter("role")
_GET_CONTENT = operator.itemgetter("content")


class _Row(NamedTuple):
    out: dict[str, Any]
    roles: str
    """One letter per message of the output (see _ROLE_LETTERS), for the stats."""
    chars: int
    pair: tuple[int, int, int] | None
    """Characters of prompt, chosen, rejected, for preference rows."""
    plain: bool
    """The row is exactly `out`: `{"messages": [role/content pairs]}` or `{"text": ...}`."""


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
            roles = _valid_order(tuple(map(_GET_ROLE, messages)))
            chars = len("".join(map(_GET_CONTENT, messages)))
        except (TypeError, KeyError):
            pass
        else:
            if roles and sum(map(len, messages)) == 2 * len(messages):
                return roles, chars, True
    return _conversation_in_detail(messages, field)


def _valid_order(roles: tuple[str, ...]) -> str:
    """The role letters if the order is valid, else "". Remembers valid orders: files repeat a few."""
    letters = _VALID_ORDERS.get(roles)
    if letters is None:
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


def _detect(row: dict[str, Any]) -> DatasetFormat:
    """Name the row's format from its keys alone, so every later complaint can be specific."""
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


def _chat_row(row: dict[str, Any], fmt: str) -> _Row:
    roles, chars, plain = _conversation(row.get("messages"), "messages")
    if len(row) == 1:
        return _Row(row, roles, chars, None, plain)
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


def _pair_row(prompt: str, chosen: str, rejected: str, system: str | None) -> _Row:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}]
    chars = len(prompt) + len(chosen) + len(rejected)
    roles = "ua"
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
        chars += len(system)
        roles = "sua"
    out = {"messages": messages, "rejected_response": rejected}
    return _Row(out, roles, chars, (len(prompt), len(chosen), len(rejected)), False)


def _preference_row(row: dict[str, Any]) -> _Row:
    _check_keys(row, _KEYS["preference"])
    prompt: str = _required(row, "prompt", (str,))
    chosen: str = _required(row, "chosen", (str,))
    rejected: str = _required(row, "rejected", (str,))
    _check_pair(chosen, rejected, "rejected")
    _optional(row, "metadata", (dict,))
    return _pair_row(prompt, chosen, rejected, _optional(row, "system", (str,)))


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
    return _pair_row(prompt, contents[best], contents[worst], system)


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
    "sft_messages": functools.partial(_chat_row, fmt="sft_messages"),
    "lora_messages": functools.partial(_chat_row, fmt="lora_messages"),
    "pretrain_text": _pretrain_text_row,
    "pretrain_messages": _pretrain_messages_row,
    "preference": _preference_row,
    "scored_responses": _scored_row,
    "swift_preference": _swift_preference_row,
    "kto": _kto_row,
}


# ---------------------------------------------------------------------------------------------------
# Bytes in, bytes out


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


def _serialise(row: _Row, raw: bytes) -> bytes:
    if _same_as_read(row, raw):
        return raw + b"\n"
    try:
        return (_ENCODE(row.out) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise _RowError(
            None,
            "a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text",
            "write characters beyond U+FFFF as UTF-8, or as a full surrogate pair such as \\ud83d\\ude00",
        ) from None


# ---------------------------------------------------------------------------------------------------
# The streaming validator

_T = TypeVar("_T")
_ROLE_PATTERNS_KEPT = 4096


class _Agreement(Generic[_T]):
    """Keeps a value while every row that states it states the same one."""

    def __init__(self) -> None:
        self.value: _T | None = None
        self.conflict = False

    def add(self, value: _T | None) -> None:
        if value is None or self.conflict:
            return
        if self.value is None:
            self.value = value
        elif value != self.value:
            self.conflict = True

    def result(self) -> _T | None:
        return None if self.conflict else self.value


class _Tally:
    """Running sums, so the stats cost constant memory whatever the file's size.

    Conversations are counted per role pattern ("ua", "sua", ...): real files repeat a few patterns,
    so a row costs one dict update instead of one per message. The patterns are folded into role and
    turn counts at the end, or whenever too many distinct ones pile up.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.chars = 0
        self.patterns: dict[str, int] = {}
        self.roles: Counter[str] = Counter()
        self.turns: Counter[int] = Counter()
        self.pair_rows = 0
        self.prompt_chars = self.chosen_chars = self.rejected_chars = 0

    def add(self, row: _Row) -> None:
        self.rows += 1
        self.chars += row.chars
        if row.roles:
            count = self.patterns.get(row.roles)
            if count is None and len(self.patterns) >= _ROLE_PATTERNS_KEPT:
                self._fold()
            self.patterns[row.roles] = (count or 0) + 1
        if row.pair is not None:
            self.pair_rows += 1
            self.prompt_chars += row.pair[0]
            self.chosen_chars += row.pair[1]
            self.rejected_chars += row.pair[2]

    def _fold(self) -> None:
        for pattern, count in self.patterns.items():
            self.turns[len(pattern)] += count
            for letter, times in Counter(pattern).items():
                self.roles[_ROLE_NAMES[letter]] += times * count
        self.patterns.clear()

    def stats(self) -> DatasetStats:
        self._fold()
        turns = None
        if self.turns:
            mean = sum(n * count for n, count in self.turns.items()) / self.turns.total()
            turns = TurnStats(min=min(self.turns), mean=round(mean, 2), max=max(self.turns))
        pair = None
        if self.pair_rows:
            pair = PreferenceStats(
                prompt_chars_mean=round(self.prompt_chars / self.pair_rows, 2),
                chosen_chars_mean=round(self.chosen_chars / self.pair_rows, 2),
                rejected_chars_mean=round(self.rejected_chars / self.pair_rows, 2),
            )
        roles = dict(sorted(self.roles.items()))
        return DatasetStats(
            rows=self.rows, characters=self.chars, turns=turns, role_counts=roles, preference=pair
        )


class DatasetValidator:
    """Feed a dataset file's bytes in chunks of any size; get swift-ready lines back and, at the end, a report.

    Use: `v.feed(chunk)` for every chunk, then `v.flush()` (a last line without a newline is only
    complete at the end of the input), then `v.finish()`. Write every line the first two return.
    """

    def __init__(
        self, filename: str, *, max_line_bytes: int = 16 * 1024 * 1024, max_errors: int = 20
    ) -> None:
        name = filename.lower()
        if not name.endswith((".jsonl", ".txt")):
            raise ValueError(f"{filename!r}: a dataset file's name ends in .jsonl or .txt")
        if max_line_bytes < 1 or max_errors < 0:
            raise ValueError("max_line_bytes must be at least 1 and max_errors at least 0")
        self._plain_text = name.endswith(".txt")
        self._max_line = max_line_bytes
        self._max_errors = max_errors
        self._pending = bytearray()
        self._skipping = False
        self._lines = 0
        self._errors: list[LineError] = []
        self._error_count = 0
        self._format: DatasetFormat | None = None
        self._format_line = 0
        self._tally = _Tally()
        self._modules: _Agreement[tuple[str, ...]] = _Agreement()
        self._rank: _Agreement[int] = _Agreement()
        self._report: DatasetReport | None = None
        self.rows_done = 0
        """Rows accepted so far."""
        self.bytes_done = 0
        """Bytes fed so far."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Check the lines this chunk completes; return their converted lines, each ending in a newline."""
        if self._report is not None:
            raise RuntimeError("feed() after finish()")
        self.bytes_done += len(chunk)
        out: list[bytes] = []
        pieces = chunk.split(b"\n")
        for piece in pieces[:-1]:
            self._end_line(piece, out)
        self._hold(pieces[-1])
        return out

    def flush(self) -> list[bytes]:
        """End of input: check the last line if it had no newline; return its converted line, if any."""
        out: list[bytes] = []
        if self._skipping or self._pending:
            self._end_line(b"", out)
        return out

    def finish(self) -> DatasetReport:
        """The report. Call flush() first: a last line without a newline must not be lost."""
        if self._report is not None:
            return self._report
        if self._pending or self._skipping:
            raise RuntimeError("finish() before flush(): the last line has not been checked and written")
        if self._tally.rows == 0 and self._error_count == 0:
            self._error(
                None, None, "the file has no rows (it is empty or only blank lines)", "put one row per line"
            )
        fmt = self._format
        tasks, rlhf_types = _FEEDS[fmt] if fmt is not None else ((), ())
        self._report = DatasetReport(
            format=fmt,
            task_types=list(tasks),
            rlhf_types=list(rlhf_types),
            rows=self._tally.rows,
            bytes=self.bytes_done,
            errors=list(self._errors),
            error_count=self._error_count,
            stats=self._tally.stats(),
            lora_hints=self._lora_hints(),
        )
        return self._report

    def _lora_hints(self) -> LoraHints | None:
        modules, rank = self._modules.result(), self._rank.result()
        if modules is None and rank is None:
            return None
        return LoraHints(target_modules=None if modules is None else list(modules), rank=rank)

    def _end_line(self, piece: bytes, out: list[bytes]) -> None:
        self._lines += 1
        if self._skipping:
            self._skipping = False
            return
        if self._pending:
            piece = bytes(self._pending) + piece
            self._pending.clear()
        self._take_line(piece, out)

    def _hold(self, rest: bytes) -> None:
        """Keep the start of an unfinished line, unless it is already too long: then drop it and skip on."""
        if self._skipping or not rest:
            return
        if len(self._pending) + len(rest) > self._max_line:
            self._pending.clear()
            self._skipping = True
            self._too_long(self._lines + 1)
        else:
            self._pending += rest

    def _too_long(self, n: int) -> None:
        self._error(
            n,
            None,
            f"line {n} is longer than {self._max_line} bytes",
            "split the row, or check that the file has newlines between rows (JSONL: one object per line)",
        )

    def _take_line(self, raw: bytes, out: list[bytes]) -> None:
        n = self._lines
        if len(raw) > self._max_line:
            self._too_long(n)
            return
        if n == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw or raw.isspace():
            return
        try:
            out.append(self._convert(n, raw))
        except _RowError as e:
            message = f"line {n}, {e.where}: {e.problem}" if e.where else f"line {n}: {e.problem}"
            self._error(n, e.field, message, e.hint)

    def _convert(self, n: int, raw: bytes) -> bytes:
        text = _decode(raw)
        fmt: DatasetFormat = "plain_text"
        obj: Any = None
        if self._plain_text:
            row = _Row({"text": text}, "", len(text), None, False)
        else:
            obj = _parse(text)
            fmt = self._detect_in_file(obj)
            row = _CHECKS[fmt](obj)
        line = _serialise(row, raw)
        if self._format is None:
            self._format, self._format_line = fmt, n
        if fmt == "lora_messages":
            self._format = fmt  # one LoRA row makes a file of conversations lora_messages
            modules = obj.get("target_modules")
            self._modules.add(None if modules is None else tuple(modules))
            self._rank.add(obj.get("rank"))
        self._tally.add(row)
        self.rows_done += 1
        return line

    def _detect_in_file(self, obj: object) -> DatasetFormat:
        if type(obj) is not dict:
            raise _RowError(
                None, f"expected a JSON object, not {_kind(obj)}", 'write each row as {"key": value}'
            )
        fmt = _detect(obj)
        known = self._format
        if known is None or fmt == known or (fmt in _CHAT_FAMILY and known in _CHAT_FAMILY):
            return fmt
        raise _RowError(
            None,
            f"looks like {fmt} data ({_LOOKS[fmt]}), "
            f"but the file was detected as {known} from line {self._format_line}",
            "a dataset file holds one format: move rows of the other format to a file of their own",
        )

    def _error(self, line: int | None, field: str | None, message: str, hint: str) -> None:
        self._error_count += 1
        if len(self._errors) < self._max_errors:
            self._errors.append(LineError(line=line, field=field, message=message, hint=hint))
