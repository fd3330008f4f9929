"""`llmtraind …`: the daemon itself (`serve`), offline tools (`replay`), and clients of the HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, ConfigError, load_config, resolve_config_path
from .projector import load_state_at_path
from .state import state_to_json
from .store import LogDamaged

__all__ = ["main"]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # watchfiles logs every batch of changes at INFO; the inbox logs what it did with them.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> Config:
    return load_config(resolve_config_path(args.config))


def _cmd_serve(args: argparse.Namespace) -> int:
    from .app import serve

    cfg = _config(args)
    _setup_logging(cfg.daemon.log_level)
    return asyncio.run(serve(cfg))


def _cmd_replay(args: argparse.Namespace) -> int:
    cfg = _config(args)
    state = load_state_at_path(cfg.db_path, args.at)
    print(json.dumps(json.loads(state_to_json(state)), indent=2, sort_keys=True))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .validate import check_file, local_swift_args

    cfg = _config(args)
    swift_args = local_swift_args()
    failed = 0
    for name in args.files:
        verdict = check_file(Path(name), cfg.limits, swift_args)
        if verdict.ok:
            print(f"{name}: ok: {verdict.summary}")
        else:
            failed += 1
            print(verdict.problems.rstrip("\n"), file=sys.stderr)
    return 1 if failed else 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from .layout import InboxLayout
    from .submit import SubmitError, deliver

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
    from .layout import InboxLayout
    from .submit import SubmitError, control_file, deliver

    name, data = control_file(args.command, args.job)
    try:
        target = deliver(InboxLayout(_config(args).paths.inbox), name, data)
    except (OSError, SubmitError) as e:
        print(f"llmtraind: {args.command} {args.job}: {e}", file=sys.stderr)
        return 1
    print(f"{args.command} request for {args.job} dropped as {target}")
    return 0


def _cmd_schemas(args: argparse.Namespace) -> int:
    from .schemas import SCHEMA_DIR, check_schemas, write_schemas

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
    from .demo import DemoError, run_demo

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


def _get(args: argparse.Namespace, path: str) -> Any:
    cfg = _config(args)
    req = urllib.request.Request(_base_url(args, cfg) + path)  # noqa: S310 (http URL from our config)
    if cfg.api.token:
        req.add_header("Authorization", f"Bearer {cfg.api.token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (the URL is ours: http only)
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}")
        message = body.get("error", {}).get("message", e.reason)
        raise SystemExit(f"llmtraind: {path}: {e.code} {message}") from None
    except urllib.error.URLError as e:
        raise SystemExit(f"llmtraind: cannot reach the daemon at {req.full_url}: {e.reason}") from None


def _cmd_status(args: argparse.Namespace) -> int:
    body = _get(args, "/v1/status")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    rows = [
        ("version", body["version"]),
        ("healthy", "yes" if body["healthy"] else f"NO: {body['health_reason']}"),
        ("uptime", f"{body['uptime_s']:.0f} s"),
        ("last event", body["last_seq"]),
        ("GPUs", body["gpus"]["count"]),
    ]
    for k, v in rows:
        print(f"{k:<12} {v}")
    return 0


def _print_events(events: list[dict[str, Any]], as_json: bool) -> None:
    for e in events:
        if as_json:
            print(json.dumps(e), flush=True)
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
            print(
                f"{e['seq']:>8} {stamp} {e['stream']:<24} {e['type']:<20} {json.dumps(e['data'])}", flush=True
            )


def _cmd_events(args: argparse.Namespace) -> int:
    after = args.after
    while True:
        page = _get(args, f"/v1/events?after={after}&limit=1000")
        _print_events(page["events"], args.json)
        after = page["next_after"]
        if not page["events"]:
            if not args.follow:
                return 0
            time.sleep(1.0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmtraind", description=__doc__)
    p.add_argument("--version", action="version", version=f"llmtraind {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $LLMTRAIND_CONFIG, then ./llmtraind.toml)")
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument("--url", help="the daemon's API (default: from the state folder or the config)")
    client.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", parents=[common], help="run the daemon in the foreground").set_defaults(
        fn=_cmd_serve
    )
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
    ):
        control = sub.add_parser(action, parents=[common], help=f"{text} (drops a request into the inbox)")
        control.add_argument("job", metavar="JOB", help="the job's id or name")
        control.set_defaults(fn=_cmd_control)
    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas in schemas/")
    schemas.add_argument("--check", action="store_true", help="exit 1 if a schema file is stale")
    schemas.add_argument("--dir", help="folder to write or check (default: the repository's schemas/)")
    schemas.set_defaults(fn=_cmd_schemas)
    sub.add_parser("status", parents=[client], help="the daemon's status").set_defaults(fn=_cmd_status)
    ev = sub.add_parser("events", parents=[client], help="print (or follow) the event log")
    ev.add_argument("-f", "--follow", action="store_true")
    ev.add_argument("--after", type=int, default=0, metavar="SEQ")
    ev.set_defaults(fn=_cmd_events)
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
