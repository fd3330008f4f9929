"""`llmtraind fsck`: check a state folder's event log through and through, on demand.

The daemon starting from a snapshot checks only the events after it before it serves and the rest in
the background; this is the same check and more (daemon.log.fsck), for an operator who wants the
answer now, after a restore, or for a log whose daemon is not running. Read-only: it repairs nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daemon.core.config_file import resolve_config_path

__all__ = ["add_parser"]


def _command(args: argparse.Namespace) -> int:
    # imported when it runs: every command builds this one's parser
    from daemon.log.fsck import fsck

    if args.state is not None:
        db = Path(args.state) / "llmtraind.sqlite3"
    else:
        from daemon.core.config import load_config

        db = load_config(resolve_config_path(args.config)).db_path
    report = fsck(db)
    for line in report.checked:
        print(f"ok: {line}")
    for line in report.problems:
        print(f"llmtraind fsck: {db}: {line}", file=sys.stderr)
    if report.problems:
        print(
            f"llmtraind fsck: {db}: {len(report.problems)} problem(s); nothing was repaired: restore the "
            "log from a backup (llmtraind backup) or move it aside",
            file=sys.stderr,
        )
        return 1
    print(f"{db}: {report.events} events, no problems")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "fsck",
        parents=[common],
        help="check the event log through and through: seqs, versions, snapshots against the fold (offline)",
    )
    p.add_argument(
        "state",
        nargs="?",
        metavar="STATE",
        help="a state folder (default: the config's [paths] state)",
    )
    p.set_defaults(fn=_command)
