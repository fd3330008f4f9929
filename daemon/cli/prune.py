"""`llmtraind prune --dry-run`: the checkpoints the retention rules would delete now.

Read-only and offline: it folds the event log as `replay` does and applies the same rules the
daemon applies by itself (`daemon.runs.retention`) whenever a run saves a checkpoint or ends. The
daemon is the log's only writer, so this command deletes nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from daemon.core.config_file import resolve_config_path

__all__ = ["add_parser"]


def _command(args: argparse.Namespace) -> int:
    # imported when it runs: every command builds this one's parser
    from daemon.core.config import load_config
    from daemon.log.projector import load_state_at_path
    from daemon.runs.pruner import best_steps
    from daemon.runs.retention import describe, dumps, plan

    cfg = load_config(resolve_config_path(args.config))
    state = load_state_at_path(cfg.db_path, None)
    default = cfg.runs.keep_checkpoints
    pruned = plan(state, default, best_steps(state, default))
    if args.json:
        print(dumps(pruned))
        return 0
    freed = sum(p.bytes for p in pruned)
    print(describe(pruned), end="")
    print(
        f"{len(pruned)} checkpoint(s), {freed:,} bytes would go; the daemon deletes them itself when a run "
        "next saves a checkpoint or ends ([runs] keep_checkpoints, a job's keep_checkpoints and keep_best)"
    )
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prune", parents=[common], help="list the checkpoints the retention rules would delete (offline)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list only (what this command always does: the daemon alone deletes)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(fn=_command)
