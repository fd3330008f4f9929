"""llmtraind's pause callback, loaded into swift by `--external_plugins` (see daemon.core.pausing).

swift's own `graceful_exit` stops on SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 and on any file
`/tmp/stop`. This variant keeps its step-end logic (a checkpoint at the end of the current step,
agreed across ranks, then a normal end) but listens to SIGUSR1 only, so a cancel's SIGTERM still
stops the run at once, and to the run's own pause file, so a stray `/tmp/stop` stops nothing.
It runs inside swift's interpreter: the standard library and swift only. This folder holds nothing
else, because swift puts a plugin's folder first on the import path.
"""

import os
import signal
from typing import Any

from swift.callbacks import callbacks_map
from swift.callbacks.deepspeed_elastic import GracefulExitCallback
from swift.utils import ShutdownManager

NAME = "llmtraind_pause"
FILE_ENV = "LLMTRAIND_PAUSE_FILE"


class PauseCallback(GracefulExitCallback):  # type: ignore[misc]
    def __init__(self, args: Any = None, trainer: Any = None) -> None:
        if args is not None and trainer is not None:
            super(GracefulExitCallback, self).__init__(args, trainer)
        stop_file = os.environ.get(FILE_ENV) or os.path.join(os.getcwd(), "pause")
        manager = ShutdownManager(signals=[signal.SIGUSR1], stop_file=stop_file)
        manager.register()
        self.shutdown_manager = manager
        self._pending_stop = False


callbacks_map[NAME] = PauseCallback
