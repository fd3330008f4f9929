"""The dataset formats: their names, the jobs each can feed, and the keys each one's rows may carry.

Intake, the job checks and the API speak of datasets in these names, so they sit apart from how a
row is checked. A new format (the multimodal media rows to come) starts here: its name, what it feeds,
how it looks in an error message and its keys; then its line model in `lines` and its check in `rows`.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["DatasetFormat", "RlhfType", "Role", "TaskType"]

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
_PAIR_FAMILY = frozenset({"preference", "scored_responses"})
"""Formats whose rows mix in one file, as the management API's own RL example does: every row becomes
a pair, so nothing downstream can tell them apart."""
_MESSAGE_KEYS = frozenset({"role", "content", "loss", "loss_scale"})
_RESPONSE_KEYS = frozenset({"content", "score"})
