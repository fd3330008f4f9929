"""The writer's side of the inbox protocol: what `llmtraind submit` and `llmtraind cancel` do.

A file is written under the inbox's `.tmp/` (same file system, ignored by intake), fsynced, and then
renamed to its name in the inbox, so the daemon never sees it half-written. An existing file of the
same name still waiting in the inbox is never replaced.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path

from daemon.core.layout import InboxLayout

__all__ = ["SubmitError", "control_file", "deliver", "fsync_dir"]

_counter = itertools.count(1)


class SubmitError(Exception):
    pass


def fsync_dir(path: Path) -> None:
    """Make a rename or a new name in `path` durable: fsync(2) of a file does not cover its folder."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def deliver(inbox: InboxLayout, name: str, source: Path | bytes) -> Path:
    """Put `source` (a file to copy, or the bytes themselves) into the inbox as `name`."""
    if "/" in name or name.startswith(".") or name in ("", "rejected"):
        raise SubmitError(f"{name!r} cannot be dropped: give a plain file name that does not start with '.'")
    if not inbox.root.is_dir():
        raise SubmitError(f"the inbox {inbox.root} does not exist (is the daemon configured with it?)")
    target = inbox.root / name
    if os.path.lexists(target):
        raise SubmitError(f"{target} is already waiting to be picked up; try again in a moment")
    inbox.staging.mkdir(exist_ok=True)
    tmp = inbox.staging / f"{name}.{os.getpid()}.{next(_counter)}.part"
    try:
        with open(tmp, "wb") as out:
            if isinstance(source, bytes):
                out.write(source)
            else:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        if os.path.lexists(target):
            raise SubmitError(f"{target} appeared while copying; try again in a moment")
        os.rename(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(inbox.root)
    return target


def control_file(action: str, job: str, *, from_scratch: bool = False) -> tuple[str, bytes]:
    """The name and bytes of a `{cancel: JOB}` or `{retry: JOB}` drop (`{retry: {job: JOB, from:
    scratch}}` to start over); the name is unique per request."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job)[:64]
    target = json.dumps({"job": job, "from": "scratch"} if from_scratch else job)
    return f"{action}-{safe}-{time.time_ns():x}.yaml", f"{action}: {target}\n".encode()
