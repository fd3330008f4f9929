"""Validation statistics: what the model will see, summed in constant memory whatever the file's size."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict

from daemon.core.datasets.media import MediaItem
from daemon.core.datasets.rows import _ROLE_NAMES, _Row

__all__ = ["DatasetStats", "ImageSize", "MediaStats", "PreferenceStats", "TurnStats"]

_ROLE_PATTERNS_KEPT = 4096

_FROZEN = ConfigDict(frozen=True, extra="forbid")


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
    from_scored_responses: int = 0
    """Pairs picked from a row's scored responses (highest score chosen, lowest rejected); the other
    rows were given as pairs."""


class ImageSize(BaseModel):
    model_config = _FROZEN
    width: int
    height: int


class MediaStats(BaseModel):
    """A multimodal dataset's media: items per kind as the rows reference them, and the distinct
    files stored for them (the same file named twice is stored and counted once)."""

    model_config = _FROZEN
    images: int = 0
    videos: int = 0
    audios: int = 0
    files: int = 0
    bytes: int = 0
    """Of the distinct files."""
    pixels_min: ImageSize | None = None
    pixels_median: ImageSize | None = None
    pixels_max: ImageSize | None = None
    """Distinct images ordered by width x height."""


class DatasetStats(BaseModel):
    """Over the converted rows: what the model will see."""

    model_config = _FROZEN
    rows: int = 0
    characters: int = 0
    turns: TurnStats | None = None
    role_counts: dict[str, int] = {}
    preference: PreferenceStats | None = None
    media: MediaStats | None = None


class _MediaTally:
    """Per-kind counts and the distinct files; memory grows with distinct files, which intake bounds
    by `[limits] max_members`."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.bytes = 0
        self.sizes: list[tuple[int, int, int]] = []

    def add(self, kind: str, item: MediaItem) -> None:
        self.kinds[kind] += 1
        if item.sha256 in self.seen:
            return
        self.seen.add(item.sha256)
        self.bytes += item.bytes
        if item.width is not None and item.height is not None:
            self.sizes.append((item.width * item.height, item.width, item.height))

    def stats(self) -> MediaStats:
        sizes = sorted(self.sizes)
        picks = [sizes[0], sizes[(len(sizes) - 1) // 2], sizes[-1]] if sizes else []
        shown: list[ImageSize | None] = [ImageSize(width=w, height=h) for _, w, h in picks] or [None] * 3
        return MediaStats(
            images=self.kinds["image"],
            videos=self.kinds["video"],
            audios=self.kinds["audio"],
            files=len(self.seen),
            bytes=self.bytes,
            pixels_min=shown[0],
            pixels_median=shown[1],
            pixels_max=shown[2],
        )


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
        self.scored_rows = 0
        self.prompt_chars = self.chosen_chars = self.rejected_chars = 0
        self.media: _MediaTally | None = None

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
            self.scored_rows += row.scored

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
                from_scored_responses=self.scored_rows,
            )
        roles = dict(sorted(self.roles.items()))
        media = None if self.media is None else self.media.stats()
        return DatasetStats(
            rows=self.rows,
            characters=self.chars,
            turns=turns,
            role_counts=roles,
            preference=pair,
            media=media,
        )
