"""Claims: a dropped file renamed into `.processing/<drop id>_<name>`, Maildir's way.

The rename is what makes the drop id durable. Everything after it is redone from `.processing/`
after a crash (the claims found there at start-up are the `redo` ones), and the log's idempotency key
`drop:<drop id>` turns a redo into "already recorded".
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.core.layout import InboxLayout
from daemon.intake.faults import Faults

__all__ = ["NAME_IN_CLAIM_MAX", "Claim", "Claimer", "display_name"]

NAME_IN_CLAIM_MAX = 200
"""Bytes of the original name kept in the claim's name (NAME_MAX is 255 with the drop id)."""


def display_name(name: str) -> str:
    """A name as text: bytes that are not UTF-8 shown as \\xNN, so events and files can hold it."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


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
            if not sep or not name:
                drop, name = self._new_drop(), entry
            claims.append(Claim(drop, name, self.inbox.processing / entry, redo=True))
        return claims

    def _new_drop(self) -> str:
        return f"{time.time_ns():x}-{os.getpid()}-{next(self._ids)}"

    def claim(self, name: str) -> Claim | None:
        drop = self._new_drop()
        kept = os.fsdecode(os.fsencode(name)[:NAME_IN_CLAIM_MAX])
        target = self.inbox.processing / f"{drop}_{kept}"
        try:
            os.rename(self.inbox.root / name, target)
        except FileNotFoundError:
            return None
        self._fault("claimed")
        return Claim(drop, name, target, redo=False)
