"""Where things live under the inbox and the state folder: one place, so every adapter agrees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["InboxLayout", "StateLayout"]


@dataclass(frozen=True, slots=True)
class InboxLayout:
    root: Path

    @property
    def processing(self) -> Path:
        """Claimed files (Maildir's cur/): whatever is here at start-up is redone."""
        return self.root / ".processing"

    @property
    def staging(self) -> Path:
        """Where `llmtraind submit` writes a file before renaming it into the inbox."""
        return self.root / ".tmp"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"


@dataclass(frozen=True, slots=True)
class StateLayout:
    root: Path

    @property
    def originals(self) -> Path:
        """Every accepted file's bytes, named by their sha256."""
        return self.root / "blobs" / "sha256"

    @property
    def converted(self) -> Path:
        """Each dataset in the JSONL form ms-swift reads, named by the original's sha256."""
        return self.root / "blobs" / "converted"

    @property
    def scratch(self) -> Path:
        """Files being written (emptied at start-up): renamed into place only once complete."""
        return self.root / "blobs" / "tmp"

    def original(self, sha256: str) -> Path:
        return self.originals / sha256

    def converted_dataset(self, sha256: str) -> Path:
        return self.converted / f"{sha256}.jsonl"
