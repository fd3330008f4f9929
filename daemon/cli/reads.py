"""The client commands that read the API: `status`, `gpus`, `jobs`, `show`, `logs`, `events`.

Imported by the command line only when one of them runs, and importing nothing but the standard
library, the client and the config file's reader: a person checking on the daemon waits for an
HTTP answer, not for the daemon's own modules (pydantic models, aiohttp, the fold) to load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from daemon.cli.client import Api, ApiError, gpus_table, job_detail, jobs_table, status_lines
from daemon.cli.endpoint import base_url, check_config, endpoint
from daemon.core.config_file import resolve_config_path

__all__ = ["listing", "run"]


def run(args: argparse.Namespace) -> int:
    """The command `args.command`; API errors become one line on stderr and exit status 1."""
    path = resolve_config_path(args.config)
    found = endpoint(path)
    try:
        return _COMMANDS[args.command](args, Api(base_url(args.url, found), found.token))
    except ApiError as e:
        check_config(path)
        print(f"llmtraind: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def listing(api: Api, path: str, key: str, query: Mapping[str, Any]) -> Iterator[Any]:
    """Every entry of a list endpoint, page after page, each page asked `after` its predecessor's
    cursor: the body's `next` (null on the last page), or `next_after` from a daemon that names it
    so. An empty page ends the list too, as the event log's cursor never turns null."""
    after = query.get("after")
    while True:
        asked = {**query, "after": after}
        text = urllib.parse.urlencode({k: v for k, v in asked.items() if v})
        page = api.get(path + (f"?{text}" if text else ""))
        yield from page[key]
        after = page["next"] if "next" in page else page.get("next_after")
        if after is None or not page[key]:
            return


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


def _all_jobs(args: argparse.Namespace, api: Api) -> list[Any]:
    return list(listing(api, "/v1/jobs", "jobs", {"state": args.state, "project": args.project}))


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


def _print_event(e: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(e), flush=True)
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
    print(f"{e['seq']:>8} {stamp} {e['stream']:<24} {e['type']:<20} {json.dumps(e['data'])}", flush=True)


def _events(args: argparse.Namespace, api: Api) -> int:
    """The log from `--after`, every page; with -f, then each new event, from the last one shown."""
    after = args.after
    for e in listing(api, "/v1/events", "events", {"after": after, "limit": 1000}):
        _print_event(e, args.json)
        after = e["seq"]
    if args.follow:
        for event in api.stream("/v1/events/stream", after=str(after)):
            _print_event(json.loads(event.data), args.json)
    return 0


_COMMANDS: Mapping[str, Callable[[argparse.Namespace, Api], int]] = {
    "status": _status,
    "gpus": _gpus,
    "jobs": _jobs,
    "show": _show,
    "logs": _logs,
    "events": _events,
}
