"""systemd integration without a library: sd_notify, journald-aware logging, the unit file.

sd_notify is one datagram per message on the socket named by $NOTIFY_SOCKET (a path, or an
abstract name starting with '@'); the protocol is stable (systemd.io/PORTABILITY_AND_STABILITY).
Outside systemd every call is a no-op, so the daemon runs the same by hand.
"""

from __future__ import annotations

import grp
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiohttp.http_exceptions import HttpProcessingError

__all__ = [
    "GPU_GROUPS",
    "SERVICE_USER",
    "Notifier",
    "gpu_groups",
    "journal_wanted",
    "setup_logging",
    "systemd_version",
    "unit_text",
    "watchdog_interval",
]

_LEVEL_PREFIX = {
    logging.CRITICAL: "<2>",
    logging.ERROR: "<3>",
    logging.WARNING: "<4>",
    logging.INFO: "<6>",
    logging.DEBUG: "<7>",
}


class Notifier:
    """sd_notify(3): a datagram per message to $NOTIFY_SOCKET; nothing when it is not set."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        """Send `fields` (KEY=VALUE) as one message; a failure is logged, never raised: systemd's
        absence must not stop a daemon that is otherwise fine."""
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            logging.getLogger(__name__).warning("sd_notify %s failed: %s", fields[0] if fields else "", e)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """Type=notify-reload needs MONOTONIC_USEC with RELOADING=1, or the reload fails."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of $WATCHDOG_USEC in seconds (sd_watchdog_enabled's advice), when the watchdog is on
    and meant for this process ($WATCHDOG_PID absent or ours)."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def journal_wanted(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether `fd` is the journal stream systemd connected ($JOURNAL_STREAM is device:inode)."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class _JournalFormatter(logging.Formatter):
    """`<N>` syslog priority first, no timestamp: journald stamps each line and `journalctl -p`
    filters on the priority (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = _LEVEL_PREFIX.get(record.levelno, "<6>")
        text = super().format(record)
        return "\n".join(prefix + line for line in text.splitlines() or [""])


class _RefusedRequests(logging.Filter):
    """aiohttp logs a request it could not parse (a header over its limit, bad HTTP) as an ERROR
    with a traceback; it is the client's mistake, answered 400, so it becomes one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            first = str(exc).strip().splitlines()
            record.msg, record.args = "%s: %s", (record.getMessage(), " ".join(first)[:200])
            record.exc_info, record.exc_text = None, None
            return logging.getLogger().isEnabledFor(logging.INFO)
        return True


def setup_logging(level: str, environ: Mapping[str, str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if journal_wanted(environ):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    server = logging.getLogger("aiohttp.server")
    server.filters[:] = [f for f in server.filters if not isinstance(f, _RefusedRequests)]
    server.addFilter(_RefusedRequests())


def systemd_version() -> int | None:
    """The installed systemd's version, from `systemctl --version`; None without systemd."""
    try:
        out = subprocess.run(
            ["systemctl", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()
    return int(words[1]) if len(words) > 1 and words[0] == "systemd" and words[1].isdigit() else None


SERVICE_USER = "llmtraind"
"""The dedicated account the service runs as unless told otherwise (README: how to create it)."""
GPU_GROUPS = ("video", "render")
"""Groups that own GPU device nodes on common distributions (/dev/nvidia* where the driver is set
up so, /dev/dri/*): trainings run as the service's user and need them."""


def gpu_groups(names: Sequence[str] = GPU_GROUPS) -> list[str]:
    """Those of `names` that exist here: systemd refuses to start a unit naming an unknown group."""
    found = []
    for name in names:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        found.append(name)
    return found


def unit_text(
    *,
    executable: str,
    config: Path,
    inbox: Path,
    state: Path,
    user: str,
    stop_timeout_s: float,
    stop_grace_s: float,
    version: int | None,
    group: str | None = None,
    groups: Sequence[str] = (),
) -> str:
    """The service unit for this install.

    KillMode=process: `systemctl stop` and `restart` signal only the daemon, so trainings (each in
    a session of its own, under its own supervisor) keep running and the next daemon re-adopts
    them. The default, control-group, would kill every run with the daemon. Processes left in the
    cgroup when the unit stops are the runs; systemd notes them at the next start and leaves them.

    The service runs as a dedicated user, never root: its trainings run whatever ms-swift loads, and
    what a job may make it load is bounded by [swift] allow_code, not by the account's reach.
    """
    if not user or user in ("root", "0"):
        raise ValueError(f"the service must run as a dedicated user, not {user or 'root'!r}")
    reload_lines = (
        ["Type=notify-reload"]
        if version is not None and version >= 253
        else ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID"]
    )
    stop_timeout = int(stop_timeout_s + 10)
    paths = " ".join(shlex.quote(str(p)) for p in (inbox, state))
    lines = [
        "[Unit]",
        "Description=llmtraind: ms-swift fine-tuning daemon (drop files into the inbox, watch with curl)",
        "Documentation=https://github.com/modelscope/ms-swift",
        "After=network-online.target nvidia-persistenced.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        *reload_lines,
        f"ExecStart={shlex.quote(executable)} serve --config {shlex.quote(str(config))}",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "RestartSec=5",
        "KillMode=process",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_timeout}",
        "TimeoutStartSec=300",
        f"User={user}",
        f"Group={group or user}",
        *([f"SupplementaryGroups={' '.join(groups)}"] if groups else []),
        "StateDirectory=llmtraind",
        "LogsDirectory=llmtraind",
        "CacheDirectory=llmtraind",
        f"Environment=LLMTRAIND_CONFIG={shlex.quote(str(config))}",
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        f"ReadWritePaths={paths}",
        "LimitNOFILE=65536",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    header = [
        "# llmtraind.service, generated by `llmtraind unit` for this install.",
        f"# Runs as user {user}; create it first (README, systemd section).",
        "# Install: llmtraind unit | sudo tee /etc/systemd/system/llmtraind.service",
        "#          sudo systemctl daemon-reload && sudo systemctl enable --now llmtraind",
        f"# Runs stop on cancel: SIGTERM, then SIGKILL after {stop_grace_s:g} s ([runs] stop_grace_s).",
        "# Never set PrivateDevices=yes: it hides /dev/nvidia* from NVML and the trainers.",
        "",
    ]
    return "\n".join(header + lines)
