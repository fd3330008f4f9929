"""Published line models: one per JSON line format, the source of schemas/dataset-*.json.

Editors and other tools validate against the schemas; the validator itself runs the faster checks in
`rows`, which the tests hold to the same verdicts as these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.core.datasets.formats import Role
from daemon.core.datasets.media import _check_counts
from daemon.core.datasets.rules import (
    _check_lora_keys,
    _check_one_rejected,
    _check_order,
    _check_pair,
    _check_single_assistant,
    _check_template,
    _RowError,
    _scored_pair,
)

__all__ = [
    "KtoLine",
    "LoraMessagesLine",
    "Message",
    "PreferenceLine",
    "PretrainMessagesLine",
    "PretrainTextLine",
    "ScoredResponse",
    "ScoredResponsesLine",
    "SftMessagesLine",
    "SwiftPreferenceLine",
    "line_models",
]

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


_MEDIA_RULE = "One item per {tag} tag in the messages, in order: a path inside the bundle or a data: URI."


class _MediaLine(BaseModel):
    """ms-swift's multimodal keys (see `media`); the tag counts are checked against them."""

    images: list[_Name] | None = Field(None, description=_MEDIA_RULE.format(tag="<image>"))
    videos: list[_Name] | None = Field(None, description=_MEDIA_RULE.format(tag="<video>"))
    audios: list[_Name] | None = Field(None, description=_MEDIA_RULE.format(tag="<audio>"))
    objects: dict[str, Any] | None = Field(None, description="Grounding: ref and bbox, passed through.")

    def _media_rules(self, rejected: list[Message] | None = None, rejected_images: Any = None) -> None:
        out: dict[str, Any] = {"messages": [m.model_dump() for m in getattr(self, "messages", [])]}
        if rejected is not None:
            out["rejected_messages"] = [m.model_dump() for m in rejected]
        lists = {"images": self.images, "videos": self.videos, "audios": self.audios}
        _check_counts(out, {**lists, "rejected_images": rejected_images})


class SftMessagesLine(_ChatLine, _MediaLine):
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
        self._media_rules()
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


class SwiftPreferenceLine(_ChatLine, _MediaLine):
    """ms-swift's own preference row: messages end with the chosen answer."""

    rejected_response: str | None = None
    rejected_messages: Annotated[list[Message], Field(min_length=1)] | None = None
    rejected_images: list[_Name] | None = Field(None, description="The rejected answer's pictures.")

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
        self._media_rules(self.rejected_messages, self.rejected_images)
        return self


class KtoLine(_ChatLine, _MediaLine):
    """ms-swift's KTO row: one conversation judged desirable (true) or not (false)."""

    label: bool

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check_order([m.role for m in self.messages], "messages")
        self._media_rules()
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
