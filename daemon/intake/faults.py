"""The test hook that proves every intake step is safe to redo: the daemon kills itself at one.

The integration tests start a daemon with FAULT_ENV naming a step, let it die there without any
clean-up (SIGKILL), start it again and check that each dropped file ends up recorded once and filed
away, whichever step the crash came after.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_ENV", "STEPS", "Faults"]

STEPS = ("claimed", "examined", "published", "recorded", "stored", "done")
FAULT_ENV = "LLMTRAIND_TEST_FAULT"
"""Test hook: the daemon SIGKILLs itself when intake reaches this step (one of STEPS)."""


class Faults:
    """Read once when intake is built, so a test's crash step holds for the daemon's whole run."""

    def __init__(self) -> None:
        self._crash_at = os.environ.get(FAULT_ENV, "")

    def __call__(self, step: str) -> None:
        if step == self._crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
