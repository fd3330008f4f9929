"""`llmtraind …`: the daemon itself (`serve`), offline tools (`replay`), and clients of the HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.cli.backup import add_parser as add_backup_parser
from daemon.cli.client import (
    Api,
    ApiError,
    ControlOutcome,
    await_control,
    control_lines,
    gpus_table,
    job_detail,
    jobs_table,
    status_lines,
)
from daemon.cli.notify import add_parser as add_notify_parser
from daemon.cli.prune import add_parser as add_prune_parser
from daemon.cli.unit import add_parser as add_unit_parser
from daemon.core.config import Config, ConfigError, load_config, resolve_config_path
from daemon.core.state import state_to_json
from daemon.log.errors import LogDamaged
from daemon.log.projector import load_state_at_path
from daemon.systemd import setup_logging

__all__ = ["main"]


def _config(args: argparse.Namespace) -> Config:
    return load_config(resolve_config_path(args.config))


def _cmd_serve(args: argparse.Namespace) -> int:
    from daemon.app import serve

    cfg = _config(args)
    setup_logging(cfg.daemon.log_level)
    return asyncio.run(serve(cfg, new_log=args.new_log))


def _cmd_replay(args: argparse.Namespace) -> int:
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
    from daemon.core.layout import InboxLayout
    from daemon.intake.submit import SubmitError, control_file, deliver

    cfg = _config(args)
    api = Api(_base_url(args, cfg), cfg.api.token, timeout_s=max(1.0, min(10.0, args.wait)))
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


def _base_url(args: argparse.Namespace, cfg: Config) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    endpoint = cfg.paths.state / "daemon.json"
    try:
        return str(json.loads(endpoint.read_text())["url"]).rstrip("/")
    except (OSError, ValueError, KeyError):
        return f"http://{cfg.api.host}:{cfg.api.port}"


def _api(args: argparse.Namespace) -> Api:
    cfg = _config(args)
    return Api(_base_url(args, cfg), cfg.api.token)


def _client(fn: Callable[[argparse.Namespace, Api], int]) -> Callable[[argparse.Namespace], int]:
    """A client command: API errors become one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args, _api(args))
        except ApiError as e:
            print(f"llmtraind: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


def _colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _status(args: argparse.Namespace, api: Api) -> int:
    body = api.get("/v1/status")
    print(json.dumps(body, indent=2) if args.json else "\n".join(status_lines(body)))
    return 0


def _gpus(args: argparse.Namespace, api: Api) -> int:
    body = api.get("/v1/gpus")
    print(json.dumps(body, indent=2) if args.json else gpus_table(body))
    return 0


def _jobs_path(args: argparse.Namespace, after: int = 0) -> str:
    asked = (("state", args.state), ("project", args.project), ("after", after))
    query = urllib.parse.urlencode({k: v for k, v in asked if v})
    return "/v1/jobs" + (f"?{query}" if query else "")


def _all_jobs(args: argparse.Namespace, api: Api) -> list[Any]:
    """Every page of /v1/jobs (a page holds at most 1,000 jobs)."""
    jobs: list[Any] = []
    after: int | None = 0
    while after is not None:
        page = api.get(_jobs_path(args, after))
        jobs += page["jobs"]
        after = page.get("next_after")
    return jobs


def _jobs(args: argparse.Namespace, api: Api) -> int:
    """`--watch` redraws the table every second on a terminal (a live progress bar per running
    job) and prints it again on a change elsewhere, until Ctrl-C."""
    shown = ""
    while True:
        jobs = _all_jobs(args, api)
        if args.json:
            print(json.dumps(jobs, indent=2))
            return 0
        # Into a pipe or a file, lines stay whole for grep and scripts; wrapping is for a terminal.
        table = jobs_table(jobs, colour=_colour(), wide=args.wide or not sys.stdout.isatty())
        if table != shown:
            if args.watch and sys.stdout.isatty():
                print("\x1b[H\x1b[J", end="")
            print(table, flush=True)
            shown = table
        if not args.watch:
            return 0
        time.sleep(1.0)


def _show(args: argparse.Namespace, api: Api) -> int:
    job = api.get(f"/v1/jobs/{urllib.parse.quote(args.job, safe='')}")
    print(json.dumps(job, indent=2) if args.json else job_detail(job))
    return 0


def _logs(args: argparse.Namespace, api: Api) -> int:
    """The job's whole log; with -f, then every new line until the job ends (the daemon ends the
    stream after a finished job's last line), resuming by byte offset if the connection drops."""
    ref = urllib.parse.quote(args.job, safe="")
    if args.follow:
        for event in api.stream(f"/v1/jobs/{ref}/logs/stream?after=0"):
            if event.event == "message":  # the daemon's data lines are the line's CR-separated parts
                print(event.data.replace("\n", "\r"), flush=True)
        return 0
    offset = 0
    while True:
        page = api.get(f"/v1/jobs/{ref}/logs?offset={offset}&limit=1048576")
        sys.stdout.write(page["text"])
        if page["next_offset"] == offset or page["next_offset"] >= page["size"]:
            sys.stdout.flush()
            return 0
        offset = page["next_offset"]


def _print_event(e: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(e), flush=True)
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
    print(f"{e['seq']:>8} {stamp} {e['stream']:<24} {e['type']:<20} {json.dumps(e['data'])}", flush=True)


def _events(args: argparse.Namespace, api: Api) -> int:
    after = args.after
    while True:
        page = api.get(f"/v1/events?after={after}&limit=1000")
        for e in page["events"]:
            _print_event(e, args.json)
        if not page["events"]:
            break
        after = page["next_after"]
    if args.follow:
        for event in api.stream("/v1/events/stream", after=str(after)):
            _print_event(json.loads(event.data), args.json)
    return 0


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
    add_prune_parser(sub, common)
    sub.add_parser("status", parents=[client], help="the daemon's status").set_defaults(fn=_client(_status))
    sub.add_parser(
        "gpus", parents=[client], help="each GPU: memory, use, its job, foreign processes"
    ).set_defaults(fn=_client(_gpus))
    jobs = sub.add_parser("jobs", parents=[client], help="a table of jobs with progress bars")
    jobs.add_argument("--state", help="only jobs in this state")
    jobs.add_argument("--project", help="only this project's jobs")
    jobs.add_argument("-w", "--watch", action="store_true", help="redraw every second until Ctrl-C")
    jobs.add_argument(
        "--wide",
        action="store_true",
        help="never wrap the detail column (default: wrap it at a terminal's width; never into a pipe)",
    )
    jobs.set_defaults(fn=_client(_jobs))
    show = sub.add_parser(
        "show", parents=[client], help="one job: command, progress, metrics, exit, artifacts"
    )
    show.add_argument("job", metavar="JOB", help="the job's id or name")
    show.set_defaults(fn=_client(_show))
    logs = sub.add_parser("logs", parents=[client], help="print (or follow) a job's log")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    logs.add_argument("job", metavar="JOB", help="the job's id or name")
    logs.set_defaults(fn=_client(_logs))
    ev = sub.add_parser("events", parents=[client], help="print (or follow) the event log")
    ev.add_argument("-f", "--follow", action="store_true")
    ev.add_argument("--after", type=int, default=0, metavar="SEQ")
    ev.set_defaults(fn=_client(_events))
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
