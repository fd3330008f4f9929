"""`llmtraind notify test NAME`: send one test notification to a `[[notify]]` target, now.

It is sent from this command with the target's own settings (URL, secret, apprise URL, command,
timeout), once and without retries, so the answer is the target's: set up a receiver, run this, and
see it arrive or read why it did not. Nothing is recorded in the event log.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from daemon.core.config_file import resolve_config_path

if TYPE_CHECKING:
    from daemon.core.config import NotifyTarget

__all__ = ["add_parser"]


async def _send(target: NotifyTarget) -> str | None:
    import uuid

    from daemon.core.notify import payload_json, redact, trial_notification, webhook_id
    from daemon.notify.senders import DeliveryFailed, make_sender

    sender = make_sender(target)
    n = trial_notification(target.name, time.time())
    try:
        await sender.send(n, payload_json(n), webhook_id("test", target.name, uuid.uuid4().hex))
    except DeliveryFailed as e:
        secrets = [target.url, target.secret.get_secret_value(), target.apprise.get_secret_value()]
        return redact(e.reason, secrets)
    finally:
        await sender.close()
    return None


def _test(args: argparse.Namespace) -> int:
    # imported when it runs: every command builds this one's parser
    import asyncio

    from daemon.core.config import load_config
    from daemon.notify.senders import where

    cfg = load_config(resolve_config_path(args.config))
    target = next((t for t in cfg.notify if t.name == args.name), None)
    if target is None:
        known = ", ".join(t.name for t in cfg.notify) or "none"
        print(
            f"llmtraind: notify: no [[notify]] target named {args.name!r} (known: {known})", file=sys.stderr
        )
        return 2
    kind, place = where(target)
    failed = asyncio.run(_send(target))
    if failed is not None:
        print(f"llmtraind: notify: {target.name} ({kind} {place}): not delivered: {failed}", file=sys.stderr)
        return 1
    print(f"{target.name} ({kind} {place}): delivered")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """`llmtraind notify test NAME [--config FILE]`."""
    p = sub.add_parser("notify", parents=[common], help="notification targets: send a test")
    actions = p.add_subparsers(dest="notify_action", required=True)
    test = actions.add_parser("test", help="send one test notification to target NAME")
    # Also after the action, without overriding a --config given before it.
    test.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    test.add_argument("name", metavar="NAME", help="the [[notify]] entry's name")
    test.set_defaults(fn=_test)
