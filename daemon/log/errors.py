"""What the event log raises on purpose: the daemon and the CLI tell a damaged log (refuse to run)
from one that is only unavailable now (retry) by these classes, wherever they were raised."""

from __future__ import annotations

__all__ = ["ConcurrencyConflict", "LogDamaged", "LogMismatch", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class ConcurrencyConflict(StoreError):
    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at version {actual}, the append expected {expected}")
        self.stream, self.expected, self.actual = stream, expected, actual


class StoreUnavailable(StoreError):
    """The log could not be written now (locked by another process, disk full, I/O error); nothing was."""


class LogDamaged(StoreError):
    """The database fails its integrity checks; the daemon must not run on it."""


class LogMismatch(LogDamaged):
    """The log is not the one the state folder's runs and blobs were recorded in (missing, emptied,
    or replaced): a fresh history there would reuse job ids whose folders and artifacts exist."""
