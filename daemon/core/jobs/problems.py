"""What is wrong with a job file: each problem with its key, line and a hint, collected into one
rejection, so a person fixes every problem in one go rather than one per drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

__all__ = ["JobFileError", "JobProblem", "Report", "show"]


def show(value: object) -> str:
    """A value as a problem quotes it: repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class JobProblem(BaseModel):
    """One thing wrong with a job file, where it is, and how to fix it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    """Dotted path of the key (`swift.lora_rank`, `datasets.1`); empty for the whole file."""
    line: int | None = None
    """1-based line in the file, where known."""
    message: str
    hint: str = ""

    def render(self) -> str:
        where = ", ".join(p for p in (f"line {self.line}" if self.line else "", self.field) if p)
        text = f"- {where}: {self.message}" if where else f"- {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class JobFileError(Exception):
    """The file is not an acceptable job; `str()` is the text for inbox/rejected/NAME.error.txt."""

    def __init__(self, filename: str, errors: Iterable[JobProblem]) -> None:
        self.filename = filename
        self.errors: list[JobProblem] = list(errors)
        count = len(self.errors)
        head = f"{filename}: rejected, {count} problem{'s' if count != 1 else ''}"
        super().__init__("\n".join([head, *(problem.render() for problem in self.errors)]))


class Report:
    """Collects problems, filling in the line of each field from the composed YAML."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines
        self.problems: list[JobProblem] = []

    def add(self, field: str, message: str, hint: str = "") -> None:
        if field.endswith(".0") and field not in self.lines and field[:-2] in self.lines:
            field = field[:-2]  # a single item written where a list is allowed
        self.problems.append(JobProblem(field=field, line=self.line_of(field), message=message, hint=hint))

    def line_of(self, field: str) -> int | None:
        path = field
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return None

    def error(self, filename: str) -> JobFileError:
        """All problems, in file order; those without a line last."""
        ordered = sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))
        return JobFileError(filename, ordered)
