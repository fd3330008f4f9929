"""Rules shared by the hand-written row checks and the published line models.

Both raise the same `_RowError` through these functions, so the two cannot drift apart: the tests hold
them to one verdict on every row, and the wording a person reads comes from one place.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import get_args

from daemon.core.datasets.formats import Role

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


class _RowError(ValueError):
    """One problem in one row. A ValueError, so the pydantic line models can raise the same rules."""

    def __init__(self, field: str | None, problem: str, hint: str, *, column: str = "") -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem
        self.hint = hint
        self.where = field or column
        """What the message names after the line number: the field, or a column for unreadable lines."""


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
