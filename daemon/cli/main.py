"""`llmtraind …`: the daemon itself (`serve`), offline tools (`replay`), and clients of the HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import __version__
from daemon.cli.backup import add_parser as add_backup_parser
from daemon.cli.fsck import add_parser as add_fsck_parser
from daemon.cli.notify import add_parser as add_notify_parser
from daemon.cli.prune import add_parser as add_prune_parser
from daemon.cli.unit import add_parser as add_unit_parser
from daemon.core.config_file import ConfigError, resolve_config_path
from daemon.log.errors import LogDamaged

if TYPE_CHECKING:
    from daemon.core.config import Config

__all__ = ["main"]

# Each command imports what it needs when it runs: building this parser and running a client
# command must stay cheap (tests/unit/test_cli_imports.py holds them to it).


def _config(args: argparse.Namespace) -> Config:
    from daemon.core.config import load_config

    return load_config(resolve_config_path(args.config))


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from daemon.app import serve
    from daemon.systemd import setup_logging

    cfg = _config(args)
    setup_logging(cfg.daemon.log_level)
    return asyncio.run(serve(cfg, new_log=args.new_log))


def _cmd_replay(args: argparse.Namespace) -> int:
    from daemon.core.state import state_to_json
    from daemon.log.projector import load_state_at_path

    cfg = _config(args)
    state = load_state_at_path(cfg.db_path, args.at)
    print(json.dumps(json.loads(state_to_json(state)), indent=2, sort_keys=True))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """Each file as intake would take it on this box: a job's models looked up, its packages,
    GPUs and dtype checked; what was settled and the job's warnings are printed under it."""
    from daemon.core.jobs import JobSpec
    from daemon.intake.hardware import visible_gpus
    from daemon.intake.validate import Box, check_file, local_swift_args

    cfg = _config(args)
    swift_args = local_swift_args()
    box = Box(cfg.models, visible_gpus(cfg.gpus.devices))
    failed = 0
    for name in args.files:
        verdict = check_file(Path(name), cfg.limits, swift_args, swift=cfg.swift, box=box)
        if verdict.ok:
            print(f"{name}: ok: {verdict.summary}")
            if isinstance(verdict.job, JobSpec):
                print("".join(f"  {r}\n" for r in verdict.job.resolved), end="")
                print("".join(f"  warning: {note}\n" for note in verdict.job.notes), end="")
        else:
            failed += 1
            print(verdict.problems.rstrip("\n"), file=sys.stderr)
    return 1 if failed else 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from daemon.core.layout import InboxLayout
    from daemon.intake.submit import SubmitError, deliver

    inbox = InboxLayout(_config(args).paths.inbox)
    failed = 0
    for name in args.files:
        path = Path(name)
        try:
            target = deliver(inbox, path.name, path)
        except (OSError, SubmitError) as e:
            failed += 1
            print(f"llmtraind: {name}: not submitted: {e}", file=sys.stderr)
        else:
            print(f"{name}: dropped as {target}")
    return 1 if failed else 0


def _cmd_control(args: argparse.Namespace) -> int:
    """Drop the request, then wait for the daemon's verdict: 0 when it is accepted, 1 when it is
    refused (or cannot be dropped), 3 when no answer comes within `--wait` seconds."""
    import dataclasses

    from daemon.cli.client import Api, ApiError, ControlOutcome, await_control, control_lines
    from daemon.cli.endpoint import base_url, from_config
    from daemon.core.layout import InboxLayout
    from daemon.intake.submit import SubmitError, control_file, deliver

    cfg = _config(args)
    api = Api(base_url(args.url, from_config(cfg)), cfg.api.token, timeout_s=max(1.0, min(10.0, args.wait)))
    after: int | None = None
    unreachable = ""
    if args.wait > 0:
        try:
            after = int(api.get("/v1/status")["last_seq"])
        except (ApiError, KeyError, TypeError, ValueError) as e:
            unreachable = str(e)
    name, data = control_file(args.command, args.job, from_scratch=getattr(args, "from_scratch", False))
    try:
        target = deliver(InboxLayout(cfg.paths.inbox), name, data)
    except (OSError, SubmitError) as e:
        print(f"llmtraind: {args.command} {args.job}: {e}", file=sys.stderr)
        return 1
    if args.wait <= 0:
        print(f"{args.command} request for {args.job} dropped as {target}")
        return 0
    outcome = (
        await_control(api, args.command, name, after=after, wait_s=args.wait)
        if after is not None
        else ControlOutcome("unanswered", unreachable)
    )
    text = control_lines(args.command, args.job, outcome, inbox=str(cfg.paths.inbox), dropped=str(target))
    if args.json:
        print(json.dumps({"request": str(target), **dataclasses.asdict(outcome)}, indent=2))
    elif outcome.status in ("done", "pending"):
        print(text)
    else:
        print(f"llmtraind: {text}", file=sys.stderr)
    return {"done": 0, "pending": 0, "refused": 1}.get(outcome.status, 3)


def _cmd_schemas(args: argparse.Namespace) -> int:
    from daemon.cli.schemas import SCHEMA_DIR, check_schemas, write_schemas

    directory = Path(args.dir) if args.dir else SCHEMA_DIR
    if args.check:
        stale = check_schemas(directory)
        for name in stale:
            print(f"llmtraind: {directory / name} is stale: run 'llmtraind schemas'", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(directory):
        print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from daemon.cli.demo import DemoError, run_demo
    from daemon.core.config import load_config

    path = resolve_config_path(args.config)
    try:
        return run_demo(
            load_config(path), path, url=args.url, keep_serving=args.keep_serving, steps=args.steps
        )
    except DemoError as e:
        print(f"llmtraind: demo: {e}", file=sys.stderr)
        return 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _read(args: argparse.Namespace) -> int:
    from daemon.cli.reads import run

    return run(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmtraind", description=__doc__)
    p.add_argument("--version", action="version", version=f"llmtraind {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $LLMTRAIND_CONFIG, then ./llmtraind.toml)")
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument("--url", help="the daemon's API (default: from the state folder or the config)")
    client.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the daemon in the foreground")
    serve.add_argument(
        "--new-log",
        action="store_true",
        help="accept a missing, empty or replaced event log beside an earlier history's runs/ and "
        "blobs/ (which stay where they are) and record its id: a deliberate fresh start",
    )
    serve.set_defaults(fn=_cmd_serve)
    replay = sub.add_parser("replay", parents=[common], help="print the state folded from the log (offline)")
    replay.add_argument("--at", type=int, default=None, metavar="SEQ", help="fold only up to this seq")
    replay.set_defaults(fn=_cmd_replay)
    check = sub.add_parser("check", parents=[common], help="validate job YAML / dataset files offline")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(fn=_cmd_check)
    submit = sub.add_parser("submit", parents=[common], help="drop files into the inbox atomically")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.set_defaults(fn=_cmd_submit)
    for action, text in (
        ("cancel", "cancel a queued or running job"),
        ("retry", "run a failed or cancelled job again"),
        ("pause", "pause a running training at a checkpoint, freeing its GPUs or slot"),
        ("resume", "resume a paused job from the checkpoint its pause saved"),
    ):
        control = sub.add_parser(
            action,
            parents=[client],
            help=f"{text} (drops a request into the inbox and waits for the daemon's verdict)",
            epilog="exit status: 0 accepted, 1 refused (the reason is printed), 3 no answer in time "
            "(the request stays in the inbox)",
        )
        control.add_argument("job", metavar="JOB", help="the job's id or name")
        control.add_argument(
            "--wait",
            type=float,
            default=60.0 if action == "pause" else 10.0,
            metavar="S",
            help="seconds to wait for the verdict (default "
            + ("60: a pause ends at the next step's checkpoint" if action == "pause" else "10")
            + "; 0: drop the request and return)",
        )
        if action == "retry":
            control.add_argument(
                "--from-scratch",
                action="store_true",
                help="start over instead of continuing from the last complete checkpoint",
            )
        control.set_defaults(fn=_cmd_control)
    add_unit_parser(sub, common)
    add_notify_parser(sub, common)
    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas in schemas/")
    schemas.add_argument("--check", action="store_true", help="exit 1 if a schema file is stale")
    schemas.add_argument("--dir", help="folder to write or check (default: the repository's schemas/)")
    schemas.set_defaults(fn=_cmd_schemas)
    add_backup_parser(sub, common)
    add_fsck_parser(sub, common)
    add_prune_parser(sub, common)
    sub.add_parser("status", parents=[client], help="the daemon's status").set_defaults(fn=_read)
    sub.add_parser(
        "gpus", parents=[client], help="each GPU: memory, use, its job, foreign processes"
    ).set_defaults(fn=_read)
    jobs = sub.add_parser("jobs", parents=[client], help="a table of jobs with progress bars")
    jobs.add_argument("--state", help="only jobs in this state")
    jobs.add_argument("--project", help="only this project's jobs")
    jobs.add_argument("-w", "--watch", action="store_true", help="redraw every second until Ctrl-C")
    jobs.add_argument(
        "--wide",
        action="store_true",
        help="never wrap the detail column (default: wrap it at a terminal's width; never into a pipe)",
    )
    jobs.set_defaults(fn=_read)
    show = sub.add_parser(
        "show", parents=[client], help="one job: command, progress, metrics, exit, artifacts"
    )
    show.add_argument("job", metavar="JOB", help="the job's id or name")
    show.set_defaults(fn=_read)
    logs = sub.add_parser("logs", parents=[client], help="print (or follow) a job's log")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    logs.add_argument("job", metavar="JOB", help="the job's id or name")
    logs.set_defaults(fn=_read)
    ev = sub.add_parser("events", parents=[client], help="print (or follow) the event log")
    ev.add_argument("-f", "--follow", action="store_true")
    ev.add_argument("--after", type=int, default=0, metavar="SEQ")
    ev.set_defaults(fn=_read)
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="build a tiny local model, datasets and jobs, submit them, and follow them to the end",
    )
    demo.add_argument("--url", help="the daemon's API (default: from the state folder, else start one)")
    demo.add_argument(
        "--keep-serving", action="store_true", help="keep the daemon the demo started running until Ctrl-C"
    )
    demo.add_argument(
        "--steps", type=_positive_int, default=10, metavar="N", help="training steps per job (default 10)"
    )
    demo.set_defaults(fn=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rc: int = args.fn(args)
    except ConfigError as e:
        print(f"llmtraind: {e}", file=sys.stderr)
        return 2
    except LogDamaged as e:
        print(f"llmtraind: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return rc
