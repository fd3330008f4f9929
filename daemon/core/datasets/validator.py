"""The streaming validator: splits the bytes it is fed into lines, checks and converts each, and keeps
the running state a report needs (format, stats, LoRA hints, errors) in bounded memory."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from daemon.core.datasets.codec import _decode, _parse, _plain_row, _serialise
from daemon.core.datasets.formats import _CHAT_FAMILY, _FEEDS, _LOOKS, _PAIR_FAMILY, DatasetFormat
from daemon.core.datasets.media import MEDIA_KEYS, MediaResolver, _attach, _Media, _take_media
from daemon.core.datasets.report import DatasetReport, LineError, LoraHints
from daemon.core.datasets.rows import _CHECKS, _detect, _Row
from daemon.core.datasets.rules import _RowError
from daemon.core.datasets.stats import _MediaTally, _Tally

__all__ = ["DatasetValidator"]

_BOM = b"\xef\xbb\xbf"
_PLAIN_FORMATS = frozenset({"sft_messages", "pretrain_text"})
"""The formats of the rows `_plain_row` reads."""
_T = TypeVar("_T")


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


class DatasetValidator:
    """Feed a dataset file's bytes in chunks of any size; get swift-ready lines back and, at the end, a report.

    Use: `v.feed(chunk)` for every chunk, then `v.flush()` (a last line without a newline is only
    complete at the end of the input), then `v.finish()`. Write every line the first two return.
    `media` looks up, checks and stores each media item a row names (see `media`); without it, a row
    with media is refused.
    """

    def __init__(
        self,
        filename: str,
        *,
        max_line_bytes: int = 16 * 1024 * 1024,
        max_errors: int = 20,
        media: MediaResolver | None = None,
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
        self._media = media
        self._plain_rows = True
        """Whether to try `_plain_row` first: the last row tried was such a row, or one came since."""
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
        rest = pieces.pop()
        whole = iter(pieces)
        if pieces and (self._skipping or self._pending):
            self._end_line(next(whole), out)
        for piece in whole:
            self._lines += 1
            self._take_line(piece, out)
        self._hold(rest)
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
        """Check and convert one line. Nearly every row passes, so this is written for them: no
        calls for what a passing row does not need (media, another format than the file's)."""
        n = self._lines
        if len(raw) > self._max_line:
            self._too_long(n)
            return
        if n == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if not raw or raw.isspace():
            return
        try:
            if self._plain_text:
                text = _decode(raw)
                fmt: DatasetFormat = "plain_text"
                obj: Any = None
                row = _Row({"text": text}, "", len(text), None, False)
            else:
                text = _decode(raw)
                plain = None
                if self._plain_rows:
                    plain = _plain_row(text, raw)
                    self._plain_rows = plain is not None
                if plain is None:
                    fmt, obj, row = self._row(text, raw)
                else:
                    fmt, row = plain
                    obj = row.out
                    if fmt != self._format:
                        self._agree(fmt)
            out.append(_serialise(row, raw))
        except _RowError as e:
            message = f"line {n}, {e.where}: {e.problem}" if e.where else f"line {n}: {e.problem}"
            self._error(n, e.field, message, e.hint)
            return
        if self._format is None:
            self._format, self._format_line = fmt, n
        if fmt == "lora_messages":
            self._lora(obj)
        elif fmt == "preference":
            self._format = fmt  # one row given as a pair makes a file of pairs and scored rows preference
        self._tally.add(row)
        self.rows_done += 1

    def _row(self, text: str, raw: bytes) -> tuple[DatasetFormat, dict[str, Any], _Row]:
        """Any row: its format, its JSON object and its check."""
        obj = _parse(text)
        media = None  # what _take_media finds in most rows, decided here without a call
        if type(obj) is not dict or not obj.keys().isdisjoint(MEDIA_KEYS) or b"<" in raw or b'"type"' in raw:
            media = _take_media(obj, raw)
        fmt = _detect(obj)
        if fmt != self._format:
            self._agree(fmt)
        row = _CHECKS[fmt](obj)
        if media is not None:
            row = self._with_media(fmt, row, media)
        elif row.plain and fmt in _PLAIN_FORMATS:
            self._plain_rows = True  # such rows are back: try reading them the quick way again
        return fmt, obj, row

    def _lora(self, obj: dict[str, Any]) -> None:
        """One LoRA row makes a file of conversations lora_messages; the hints are what all agree on."""
        self._format = "lora_messages"
        modules = obj.get("target_modules")
        self._modules.add(None if modules is None else tuple(modules))
        self._rank.add(obj.get("rank"))

    def _with_media(self, fmt: DatasetFormat, row: _Row, media: _Media) -> _Row:
        out, used = _attach(fmt, row.out, media, self._media)
        tally = self._tally.media = self._tally.media or _MediaTally()
        for kind, item in used:
            tally.add(kind, item)
        return row._replace(out=out, plain=False, paired=False)

    def _agree(self, fmt: DatasetFormat) -> None:
        """Refuse a row whose format the file's cannot hold (any, while the file has none yet)."""
        known = self._format
        if (
            known is None
            or (fmt in _CHAT_FAMILY and known in _CHAT_FAMILY)
            or (fmt in _PAIR_FAMILY and known in _PAIR_FAMILY)
        ):
            return
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
