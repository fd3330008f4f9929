"""Model folders are checked for code again when a run is about to start.

Intake refuses a job whose local model folder asks for remote code (`auto_map`) or carries plugins
in its args.json, unless `[swift] allow_code`. A folder can change between intake and the run (it
may wait in the queue for days), so the folders the run's argv names are read again just before
it starts, and a run that would now load code is not started: its job fails with the refusal
intake would have given. The check itself (`daemon.intake.validate.remote_code`) reaches the loop
from the composition root, since runs may not import intake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from daemon.core.events import JobFailed, JobStarted
from daemon.core.jobs.trust import MODEL_FOLDER_ARGS, code_refusal

__all__ = ["CodeCheck", "model_folders", "refuse_model_code"]

CodeCheck = Callable[[Path], "str | None"]
"""What in a model folder would make swift run code from it (`remote_code`), or None."""

_JOB_KEYS = frozenset({"model", "adapters", "reward_model"})
"""Flags that a job file sets by a key of the same name; other folder flags come from `swift:`."""


def model_folders(argv: Sequence[str]) -> list[tuple[str, str]]:
    """(key as the job file names it, folder) for each absolute model or adapter path in argv."""
    found: list[tuple[str, str]] = []
    name: str | None = None
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if not eq:
                continue
        elif name is None:
            continue
        else:
            value = arg
        if (name in _JOB_KEYS or name in MODEL_FOLDER_ARGS) and value.startswith("/"):
            found.append((name if name in _JOB_KEYS else f"swift.{name}", value))
    return found


def refuse_model_code(starts: Sequence[JobStarted], check: CodeCheck) -> list[JobFailed]:
    """A JobFailed for each start whose model folders now ask for code. Blocking: reads them."""
    failed = []
    for started in starts:
        for key, folder in model_folders(started.argv):
            why = check(Path(folder))
            if why is not None:
                reason = f"{code_refusal(f'{key} {folder!r}', why)} (found as the run was to start)"
                failed.append(JobFailed(job_id=started.job_id, reason=reason))
                break
    return failed
