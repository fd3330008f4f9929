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
    log_id: str = ""
    """The id of the event log this folder belongs to (state/log-id); its first 8 characters name
    each job's run folder, so a new log's job 1 never writes into an old log's job 1."""

    @property
    def log_id_file(self) -> Path:
        return self.root / "log-id"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    def _job_name(self, job_id: int) -> str:
        return f"{self.log_id[:8]}-{job_id}" if self.log_id else str(job_id)

    def job_runs(self, job_id: int) -> Path:
        """The folder of every attempt of one job: `runs/<log id prefix>-<job>` (`runs/<job>` for a
        layout made without a log id, as the readers of blobs make it)."""
        return self.runs / self._job_name(job_id)

    def job_log(self, job_id: int) -> Path:
        return self.root / "logs" / f"{self._job_name(job_id)}.log"

    @property
    def originals(self) -> Path:
        """Every accepted file's bytes, named by their sha256."""
        return self.blobs / "sha256"

    @property
    def converted(self) -> Path:
        """Each dataset in the JSONL form ms-swift reads, named by the original's sha256."""
        return self.blobs / "converted"

    @property
    def scratch(self) -> Path:
        """Files being written (emptied at start-up): renamed into place only once complete."""
        return self.blobs / "tmp"

    @property
    def media(self) -> Path:
        """Every media file of an accepted multimodal dataset, once, named `<sha256>.<container>`:
        the converted rows point swift at these absolute paths."""
        return self.blobs / "media"

    def original(self, sha256: str) -> Path:
        return self.originals / sha256

    def converted_dataset(self, sha256: str) -> Path:
        return self.converted / f"{sha256}.jsonl"
