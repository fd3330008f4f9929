"""`llmtraind unit`: print the systemd unit for this install, and say loudly what it would hide.

The unit goes to stdout (for `| sudo tee`), the warnings to stderr as well as into the unit's
header, so neither the person at the terminal nor the next one to read the installed file misses
a path that PrivateTmp=, ProtectHome= or ProtectSystem=strict would keep from the service.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daemon.core.config_file import resolve_config_path
from daemon.systemd import (
    SERVICE_USER,
    gpu_groups,
    service_unit,
    source_checkout,
    systemd_version,
    user_home,
)

__all__ = ["add_parser"]


def _command(args: argparse.Namespace) -> int:
    from daemon.core.config import load_config  # imported when it runs: every command builds this parser

    path = resolve_config_path(args.config)
    if path is None:
        print(
            "llmtraind: unit: the service needs a config file (its paths decide what it may write); "
            "pass --config FILE or run from the folder holding llmtraind.toml",
            file=sys.stderr,
        )
        return 2
    cfg = load_config(path)
    try:
        unit = service_unit(
            cfg,
            path.resolve(),
            user=args.user,
            group=args.group,
            executable=Path(args.executable).absolute() if args.executable else None,
            groups=gpu_groups(),
            version=systemd_version(),
            home=user_home(args.user),
            checkout=source_checkout(),
        )
    except ValueError as e:
        print(f"llmtraind: unit: {e}", file=sys.stderr)
        return 2
    for warning in unit.warnings:
        print(f"llmtraind: unit: WARNING: {warning}", file=sys.stderr)
    print(unit.text, end="")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """`llmtraind unit [--config FILE] [--user NAME] [--group NAME] [--executable PATH]`."""
    p = sub.add_parser("unit", parents=[common], help="print the systemd unit for this install")
    p.add_argument(
        "--user",
        default=SERVICE_USER,
        help=f"the dedicated account the service runs as (default {SERVICE_USER})",
    )
    p.add_argument("--group", help="the service's primary group (default: the user's name)")
    p.add_argument(
        "--executable",
        metavar="PATH",
        help="the installed llmtraind the service runs, e.g. /opt/llmtraind/bin/llmtraind "
        "(default: the one running this command)",
    )
    p.set_defaults(fn=_command)
