"""A job file's text -> its top-level mapping and the line of every key.

Job files are YAML written by people (or JSON, which is YAML), so the loader is strict where YAML is
generous: no anchors or aliases (an alias bomb costs nothing when the first `&` stops the parse),
no deep nesting, no duplicate or non-string keys, no typed values such as dates. Every problem is
reported with its line, so a rejection says where to look. Pure: bytes in, mapping or error out.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from daemon.core.jobs.problems import JobFileError, JobProblem, Report, show

__all__ = ["load_document"]

_MAX_DEPTH = 32
"""Deepest nesting a job file may have; real jobs need 3, and deep nesting exhausts the stack."""


def _file_error(filename: str, message: str, hint: str = "", line: int | None = None) -> JobFileError:
    return JobFileError(filename, [JobProblem(field="", line=line, message=message, hint=hint)])


class _Refused(yaml.YAMLError):
    """A YAML feature job files do not allow, at a 1-based line."""

    def __init__(self, message: str, hint: str, line: int) -> None:
        super().__init__(message)
        self.hint = hint
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases before anything is expanded, and deep nesting.

    Refusing every anchor (rather than limiting expansion) is what makes an alias bomb cost
    nothing: the first `&` stops the parse. Job files have no use for them.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                "anchors (&) and aliases (*) are not allowed", "write each value out in full", line
            )
        if self._depth >= _MAX_DEPTH:
            raise _Refused(f"nested deeper than {_MAX_DEPTH} levels", "job files are flat mappings", line)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_document(data: bytes, filename: str, max_bytes: int) -> tuple[dict[str, Any], dict[str, int]]:
    """Bytes -> the top-level mapping and a dotted-path -> line map, or JobFileError."""
    if len(data) > max_bytes:
        raise _file_error(
            filename, f"the file is {len(data)} bytes; the limit is {max_bytes}", "a job file is small"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _file_error(filename, "the file is not UTF-8 text", "save it as UTF-8", line) from None
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise _file_error(filename, "the file contains a NUL byte", "job files are UTF-8 text", line)
    return _compose(text, filename)


def _untab_json(text: str) -> str:
    """PyYAML refuses tabs where JSON allows them; in valid JSON a tab can only be whitespace."""
    if "\t" not in text or not text.lstrip().startswith(("{", "[")):
        return text
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return text
    return text.replace("\t", " ")


def _compose(text: str, filename: str) -> tuple[dict[str, Any], dict[str, int]]:
    lines: dict[str, int] = {}
    try:
        loader = _StrictLoader(_untab_json(text))
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise _file_error(filename, f"not valid YAML: {exc}", "job files are plain text") from None
    try:
        node = loader.get_single_node()
        if not isinstance(node, yaml.MappingNode):
            raise _file_error(
                filename, "the top level must be a mapping", "write `key: value` lines, e.g. task_type: sft"
            )
        report = Report(lines)
        _index_node(node, "", lines, report)
        if report.problems:
            raise report.error(filename)
        doc = loader.construct_document(node)
    except _Refused as exc:
        raise _file_error(filename, str(exc), exc.hint, exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise _file_error(filename, f"not valid YAML: {what}", line=mark.line + 1 if mark else None) from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise _file_error(filename, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return doc, lines


_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)


def _index_node(node: yaml.Node, path: str, lines: dict[str, int], report: Report) -> None:
    """Record the line of every key and list item; refuse what JSON could not have written.

    That is: keys that are not strings, duplicate keys, `<<` merges, and typed values such as
    dates, sets and binary, which no job key takes and which would only fail later, less clearly.
    """
    line = node.start_mark.line + 1
    if node.tag not in _PLAIN_TAGS:
        tag = str(node.tag).rpartition(":")[2]
        report.problems.append(
            JobProblem(
                field=path,
                line=line,
                message=f"YAML type {tag!r} is not allowed here",
                hint="quote the value to make it a string",
            )
        )
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{path}.{i}"] = item.start_mark.line + 1
            _index_node(item, f"{path}.{i}", lines, report)
    elif isinstance(node, yaml.MappingNode):
        _index_mapping(node, path, lines, report)


def _index_mapping(node: yaml.MappingNode, path: str, lines: dict[str, int], report: Report) -> None:
    seen: set[str] = set()
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag != "tag:yaml.org,2002:str":
            shown = show(key.value) if isinstance(key, yaml.ScalarNode) else "a list or mapping"
            report.problems.append(
                JobProblem(
                    field=path,
                    line=key.start_mark.line + 1,
                    message=f"key {shown} is not a name",
                    hint="keys are plain names; quote a key YAML reads as a number, bool or null",
                )
            )
            continue
        sub = f"{path}.{key.value}" if path else key.value
        if key.value in seen:
            report.problems.append(
                JobProblem(field=sub, line=key.start_mark.line + 1, message="key given twice")
            )
        seen.add(key.value)
        lines.setdefault(sub, key.start_mark.line + 1)
        _index_node(value, sub, lines, report)
