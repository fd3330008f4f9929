"""Which runs can pause: a training run started with llmtraind's pause callback.

ms-swift 4.6.0's `graceful_exit` callback saves a checkpoint at the end of the current step and
stops the training when its process gets SIGTERM, SIGINT, SIGUSR1 or SIGUSR2, or when a file
`/tmp/stop` exists (hard-coded in swift's ShutdownManager). Taken as is, a cancel's SIGTERM would
become a checkpoint and a clean exit, and any stray `/tmp/stop` on the machine would stop every
run. So the daemon loads its own variant (`daemon/runs/swift/plugin/llmtraind_pause.py`, through
swift's `--external_plugins`): it listens to SIGUSR1 only and to a file in the run's own folder
(`PAUSE_FILE`), which the daemon writes to ask for the pause. The intake, the run loop and the
runner all ask this of a run's recorded command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["PAUSE_CALLBACK", "PAUSE_FILE", "PAUSE_FILE_ENV", "PAUSE_PLUGIN", "own_plugins", "pausable"]

PAUSE_CALLBACK = "llmtraind_pause"
"""The callback's name in swift's `--callbacks`."""
PAUSE_PLUGIN = Path(__file__).resolve().parents[1] / "runs" / "swift" / "plugin" / f"{PAUSE_CALLBACK}.py"
"""The variant's file, which swift loads by `--external_plugins`; a checkpoint's args.json then
names it, and the daemon's own code is not code a job brought (`own_plugins`)."""
PAUSE_FILE = "pause"
"""In the run's folder: while it exists, the run saves a checkpoint at its next step and stops."""
PAUSE_FILE_ENV = "LLMTRAIND_PAUSE_FILE"
"""Where the callback finds the path of `PAUSE_FILE` (the run's environment)."""


def pausable(argv: Sequence[str]) -> bool:
    """Whether the run was started with the pause callback."""
    return PAUSE_CALLBACK in argv


def own_plugins(value: object) -> bool:
    """Whether an `external_plugins` value names only the daemon's own plugin."""
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(item == str(PAUSE_PLUGIN) for item in items)
