"""Claims: a dropped file renamed into `.processing/<drop id>_<name>`, Maildir's way.

The rename is what makes the drop id durable. Everything after it is redone from `.processing/`
after a crash (the claims found there at start-up are the `redo` ones), and the log's idempotency key
`drop:<drop id>` turns a redo into "already recorded".
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.core.layout import InboxLayout
from daemon.intake.faults import Faults

__all__ = ["DROP_ID_MAX", "NAME_IN_CLAIM_MAX", "Claim", "Claimer", "bounded_name", "display_name"]

NAME_IN_CLAIM_MAX = 200
"""Bytes of the original name kept in the claim's name (NAME_MAX is 255 with the drop id)."""
DROP_ID_MAX = 48
"""A drop id is 30-odd bytes; a longer one found in `.processing/` was not made by us."""
_SUFFIX_MAX = 16


def display_name(name: str) -> str:
    """A name as text: bytes that are not UTF-8 shown as \\xNN, so events and files can hold it."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def bounded_name(name: str, limit: int) -> str:
    """`name` when it fits in `limit` bytes, else its start, `~`, a hash of the whole and its suffix.

    Every name the daemon derives from a dropped one passes through here, so that no file name a
    writer chose can make a derived one exceed NAME_MAX. The suffix is kept because it says what
    kind of file it is; the hash keeps two long names that share a start apart.
    """
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    dot = raw.rfind(b".")
    suffix = raw[dot:] if 0 < dot and len(raw) - dot <= _SUFFIX_MAX else b""
    keep = limit - len(digest) - 1 - len(suffix)
    while keep > 0 and raw[keep] & 0xC0 == 0x80:
        keep -= 1  # never cut a UTF-8 character in two
    return os.fsdecode(raw[:keep] + b"~" + digest.encode() + suffix)


@dataclass(frozen=True, slots=True)
class Claim:
    drop: str
    name: str
    """The name it was dropped under (surrogate-escaped when not UTF-8)."""
    path: Path
    redo: bool
    """Found in .processing/ at start-up: its first pass may already be recorded."""


class Claimer:
    """Hands out drop ids unique to this process and renames files into `.processing/` under them."""

    def __init__(self, inbox: InboxLayout, fault: Faults) -> None:
        self.inbox = inbox
        self._fault = fault
        self._ids = itertools.count(1)

    def left_over(self) -> list[Claim]:
        """The claims a previous run left in `.processing/`, in name order."""
        claims = []
        for entry in sorted(os.listdir(self.inbox.processing)):
            drop, sep, name = entry.partition("_")
            if not sep or not name or len(drop) > DROP_ID_MAX:
                drop, name = self._new_drop(), entry
            claims.append(Claim(drop, name, self.inbox.processing / entry, redo=True))
        return claims

    def _new_drop(self) -> str:
        return f"{time.time_ns():x}-{os.getpid()}-{next(self._ids)}"

    def claim(self, name: str) -> Claim | None:
        drop = self._new_drop()
        target = self.inbox.processing / f"{drop}_{bounded_name(name, NAME_IN_CLAIM_MAX)}"
        try:
            os.rename(self.inbox.root / name, target)
        except FileNotFoundError:
            if self.inbox.processing.is_dir():
                return None  # it was taken away before we could claim it
            self.inbox.processing.mkdir(exist_ok=True)
            try:
                os.rename(self.inbox.root / name, target)
            except FileNotFoundError:
                return None
        self._fault("claimed")
        return Claim(drop, name, target, redo=False)
