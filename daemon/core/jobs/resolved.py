"""What intake filled in or replaced in a job, and from where: kept in the recorded spec so that
`llmtraind show` and the API can say `model qwen-7b -> /models/Qwen-7B ([models])`."""

from __future__ import annotations

from daemon.core.jobs.values import _Frozen

__all__ = ["Resolution"]


class Resolution(_Frozen):
    """One key of the job as intake settled it on this box."""

    key: str
    """The spec's key (`model`, `reward_model`, `model_type`, `swift.reward_model_type`, ...)."""
    given: str | None = None
    """What the file wrote; None when it wrote nothing and the value was inferred."""
    value: str
    """What the job runs with."""
    source: str
    """Where the value came from: `[models]`, `Hugging Face cache`, `config.json (Qwen2ForCausalLM)`."""

    def __str__(self) -> str:
        if self.given is None:
            return f"{self.key} {self.value} ({self.source})"
        return f"{self.key} {self.given} -> {self.value} ({self.source})"
