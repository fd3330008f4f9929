"""Applies the retention rules (`daemon.runs.retention`) as runs save checkpoints and when they end:
each deletion is recorded (CheckpointPruned) before the folder is removed, and a deletion recorded
but not done (the daemon stopped in between) is finished on the next pass."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from daemon.core.events import NewEvent
from daemon.core.layout import StateLayout
from daemon.core.state import State
from daemon.core.streams import Append, job_stream
from daemon.log.store import EventStore
from daemon.runs.retention import best_step, keep_of, plan

__all__ = ["Pruner", "best_steps"]

log = logging.getLogger(__name__)


def best_steps(state: State, default_keep: int) -> dict[tuple[int, int], int | None]:
    """(job, attempt) -> the step of the best `keep_best` value in its logging.jsonl, for the jobs
    with that rule and more checkpoints than they keep. Reads files: call from a thread."""
    found: dict[tuple[int, int], int | None] = {}
    for job in state.jobs.values():
        best = job.spec.get("keep_best")
        if not isinstance(best, list) or len(best) != 2 or keep_of(job, default_keep) <= 0:
            continue
        for run in job.runs:
            found[(job.id, run.attempt)] = best_step(Path(run.output_dir) / "logging.jsonl", *best)
    return found


class Pruner:
    def __init__(self, store: EventStore, layout: StateLayout, default_keep: Callable[[], int]) -> None:
        self.store = store
        self.layout = layout
        self.default_keep = default_keep

    async def prune_once(self, state: State, *, leftovers: bool = False) -> None:
        """Record and do the deletions the rules call for; with `leftovers`, finish those recorded
        earlier whose folders are still there (once, at start)."""
        default = self.default_keep()
        steps = await asyncio.to_thread(best_steps, state, default)
        decided = plan(state, default, steps)
        if decided:
            await self.store.append_batch(
                [Append(job_stream(p.job_id), [NewEvent(p, f"prune:{p.path}")]) for p in decided]
            )
        leftover = (
            [p for job in state.jobs.values() for run in job.runs for p in run.pruned] if leftovers else []
        )
        for path in [p.path for p in decided] + leftover:
            await asyncio.to_thread(self._delete, Path(path))

    def _delete(self, path: Path) -> None:
        """Only a checkpoint folder under the state's runs/: anything else a record names stays."""
        if not path.name.startswith("checkpoint-") or not path.is_relative_to(self.layout.runs):
            log.warning("not pruning %s: not a checkpoint under %s", path, self.layout.runs)
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            log.info("pruned %s", path)
