"""systemd integration without a library: sd_notify, journald-aware logging, the unit file.

sd_notify is one datagram per message on the socket named by $NOTIFY_SOCKET (a path, or an
abstract name starting with '@'); the protocol is stable (systemd.io/PORTABILITY_AND_STABILITY).
Outside systemd every call is a no-op, so the daemon runs the same by hand.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.core.config import Config

__all__ = [
    "GPU_GROUPS",
    "SERVICE_USER",
    "STATE_DIRECTORY",
    "Hardening",
    "Need",
    "Notifier",
    "Unit",
    "config_needs",
    "gpu_groups",
    "hardening",
    "journal_wanted",
    "service_unit",
    "setup_logging",
    "source_checkout",
    "systemd_version",
    "unit_text",
    "user_home",
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
        if exc is None:
            return True
        # imported here, so that `llmtraind unit` (which reads this module) loads no aiohttp
        from aiohttp.http_exceptions import HttpProcessingError

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


STATE_DIRECTORY = Path("/var/lib/llmtraind")
"""What `StateDirectory=llmtraind` makes: created by systemd before the service starts, owned by its
user and writable under ProtectSystem=strict without a ReadWritePaths= entry."""
_UNIT_DIRECTORIES = (STATE_DIRECTORY, Path("/var/cache/llmtraind"), Path("/var/log/llmtraind"))
_PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))  # noqa: S108 (the folders PrivateTmp= replaces)
_HOMES = (Path("/home"), Path("/root"), Path("/run/user"))
_VENV = "a venv of its own such as /opt/llmtraind"


@dataclass(frozen=True, slots=True)
class Need:
    """A path the service must reach; one it writes needs a ReadWritePaths= entry."""

    what: str
    path: Path
    writes: bool = False
    instead: str = "a folder outside /tmp and /var/tmp"
    """Where the service layout keeps it (README, 'Run it as a service')."""


@dataclass(frozen=True, slots=True)
class Hardening:
    """How the unit's sandbox is set for these paths, and what it would still hide."""

    protect_home: str
    read_write: tuple[Path, ...]
    warnings: tuple[str, ...]


def _within(path: Path, roots: Sequence[Path]) -> Path | None:
    for root in roots:
        if path == root or root in path.parents:
            return root
    return None


def _real(path: Path) -> Path:
    """Where the path really is: the sandbox hides mount points, not the names a symlink gives them."""
    return Path(os.path.realpath(path))


def hardening(
    needs: Sequence[Need],
    *,
    user: str,
    home: Path | None,
    exists: Callable[[Path], bool] = os.path.exists,
) -> Hardening:
    """ProtectHome=, ReadWritePaths= and warnings for the paths the service needs.

    PrivateTmp=yes gives the service an empty /tmp and /var/tmp of its own, so nothing there can be
    reached and the unit only warns. ProtectHome=yes makes /home, /root and /run/user vanish, so a
    path under them relaxes it to read-only (ReadWritePaths= can reopen a path below read-only,
    never below hidden). ProtectSystem=strict leaves every other path read-only: what the daemon
    writes is listed in ReadWritePaths=, which must exist when the service starts, and the user's
    home, where trainers keep their caches, has to be one of the writable folders.
    """
    warnings: list[str] = []
    in_homes: list[Need] = []
    for need in needs:
        real = _real(need.path)
        tmp = _within(real, _PRIVATE_TMP)
        if tmp is not None:
            warnings.append(
                f"{need.what} {need.path} is under {tmp}: the unit's PrivateTmp=yes gives the service "
                f"a {tmp} of its own, where it is not; move it to {need.instead}"
            )
            continue
        if _within(real, _HOMES) is not None:
            in_homes.append(need)
        if need.writes and real != STATE_DIRECTORY and not exists(need.path):
            warnings.append(
                f"{need.what} {need.path} does not exist: systemd refuses to start a service whose "
                f"ReadWritePaths= is missing; create it, owned by {user}"
            )
    if in_homes:
        named = ", ".join(f"{n.what} {n.path}" for n in in_homes)
        warnings.append(
            f"{named}: under a home folder, which ProtectHome=yes hides, so this unit sets "
            "ProtectHome=read-only (the service may read every home folder, and the folders above "
            f"each path must let {user} through); move them out of /home, /root and /run/user"
        )
    writable = tuple(dict.fromkeys(n.path for n in needs if n.writes and _real(n.path) != STATE_DIRECTORY))
    if home is None:
        warnings.append(
            f"there is no user {user} here yet: create it with the home {STATE_DIRECTORY} "
            f"(useradd --system --user-group --home-dir {STATE_DIRECTORY} {user})"
        )
    elif _within(_real(home), tuple(_real(p) for p in writable) + _UNIT_DIRECTORIES + _PRIVATE_TMP) is None:
        warnings.append(
            f"{user}'s home {home} is read-only for the service (ProtectSystem=strict, ProtectHome): "
            "the caches trainers keep there (Hugging Face downloads with [swift] offline = false, "
            f"CUDA and Triton kernels) cannot be written; usermod -d {STATE_DIRECTORY} {user}"
        )
    return Hardening("read-only" if in_homes else "yes", writable, tuple(warnings))


def source_checkout(package: Path | None = None) -> Path | None:
    """The source tree this code runs from (an editable install, or `python -m daemon` there), or
    None for an installed copy: a unit that runs a checkout runs whatever it holds at each start."""
    root = (package or Path(__file__).resolve().parent).parent
    return root if (root / "pyproject.toml").is_file() else None


def config_needs(cfg: Config, config: Path) -> list[Need]:
    """Every path the daemon reads or writes that the config names."""
    needs = [
        Need("the config file", config, instead="/etc/llmtraind/llmtraind.toml"),
        Need("[paths] state", cfg.paths.state, writes=True, instead=str(STATE_DIRECTORY)),
        Need("[paths] inbox", cfg.paths.inbox, writes=True, instead="/srv/llmtraind/inbox"),
    ]
    if cfg.swift.python and Path(cfg.swift.python).is_absolute():
        needs.append(Need("[swift] python", Path(cfg.swift.python), instead=_VENV))
    needs += [Need(f"[models] {name}", folder) for name, folder in cfg.models.items()]
    needs += [Need("[swift] allowed_paths", p) for p in cfg.swift.allowed_paths]
    needs += [Need("[swift] secret_files", p) for p in cfg.swift.secret_files]
    return needs


def _arg(word: str) -> str:
    """One word of an Exec line: quoted as systemd splits it, `%` and `$` kept literal."""
    return shlex.quote(word).replace("%", "%%").replace("$", "$$")


def unit_text(
    *,
    executable: str | Sequence[str],
    config: Path,
    inbox: Path,
    state: Path,
    user: str,
    stop_timeout_s: float,
    stop_grace_s: float,
    version: int | None,
    group: str | None = None,
    groups: Sequence[str] = (),
    read_write: Sequence[Path] | None = None,
    protect_home: str = "yes",
    warnings: Sequence[str] = (),
) -> str:
    """The service unit for this install.

    KillMode=process: `systemctl stop` and `restart` signal only the daemon, so trainings (each in
    a session of its own, under its own supervisor) keep running and the next daemon re-adopts
    them. The default, control-group, would kill every run with the daemon. Processes left in the
    cgroup when the unit stops are the runs; systemd notes them at the next start and leaves them.

    The service runs as a dedicated user, never root: its trainings run whatever ms-swift loads, and
    what a job may make it load is bounded by [swift] allow_code, not by the account's reach.
    StateDirectoryMode=0700 keeps systemd from opening the owner-only state folder to 0755 at each
    start.
    """
    if not user or user in ("root", "0"):
        raise ValueError(f"the service must run as a dedicated user, not {user or 'root'!r}")
    command = [executable] if isinstance(executable, str) else list(executable)
    reload_lines = (
        ["Type=notify-reload"]
        if version is not None and version >= 253
        else ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID"]
    )
    stop_timeout = int(stop_timeout_s + 10)
    if read_write is None:
        read_write = [p for p in dict.fromkeys((inbox, state)) if p != STATE_DIRECTORY]
    lines = [
        "[Unit]",
        "Description=llmtraind: ms-swift fine-tuning daemon (drop files into the inbox, watch with curl)",
        "Documentation=https://github.com/modelscope/ms-swift",
        "After=network-online.target nvidia-persistenced.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        *reload_lines,
        "ExecStart=" + " ".join(_arg(w) for w in [*command, "serve", "--config", str(config)]),
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
        "StateDirectoryMode=0700",
        "LogsDirectory=llmtraind",
        "CacheDirectory=llmtraind",
        f"Environment=LLMTRAIND_CONFIG={_arg(str(config))}",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ProtectHome={protect_home}",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        *([f"ReadWritePaths={' '.join(_arg(str(p)) for p in read_write)}"] if read_write else []),
        "LimitNOFILE=65536",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    header = [
        "# llmtraind.service, generated by `llmtraind unit` for this install.",
        f"# Runs as user {user}; create it first (README, 'Run it as a service').",
        f"# Install: llmtraind unit --config {config} | sudo tee /etc/systemd/system/llmtraind.service",
        "#          sudo systemctl daemon-reload && sudo systemctl enable --now llmtraind",
        f"# Runs stop on cancel: SIGTERM, then SIGKILL after {stop_grace_s:g} s ([runs] stop_grace_s).",
        "# Never set PrivateDevices=yes: it hides /dev/nvidia* from NVML and the trainers.",
        *(f"# WARNING: {w}" for w in warnings),
        "",
    ]
    return "\n".join(header + lines)


@dataclass(frozen=True, slots=True)
class Unit:
    text: str
    warnings: tuple[str, ...]


def service_unit(
    cfg: Config,
    config: Path,
    *,
    user: str,
    group: str | None = None,
    executable: Path | None = None,
    groups: Sequence[str] = (),
    version: int | None = None,
    home: Path | None = None,
    checkout: Path | None = None,
) -> Unit:
    """The unit for `cfg`, with what its sandbox would hide or break as warnings.

    `executable` is the installed `llmtraind` the service runs (default: the one running now, or
    this interpreter with `-m daemon`); `checkout` is the source tree this code runs from, if any:
    a unit started from it would follow whatever that tree holds.
    """
    warnings: list[str] = []
    if executable is None:
        script = Path(sys.executable).with_name("llmtraind")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "daemon"]
        needs = [Need("the llmtraind executable", Path(command[0]), instead=_VENV)]
        if checkout is not None:
            needs.append(Need("the daemon's code", checkout, instead=_VENV))
            warnings.append(
                f"this llmtraind runs from the source checkout {checkout}, and so would the service, "
                f"with whatever the checkout holds at each start: install it into a venv of its own "
                f"(python3 -m venv /opt/llmtraind && /opt/llmtraind/bin/pip install {checkout}) and "
                "run /opt/llmtraind/bin/llmtraind unit, or name that install with --executable"
            )
    else:
        command = [str(executable)]
        needs = [Need("the llmtraind executable", executable, instead=_VENV)]
        if not executable.is_file():
            warnings.append(f"--executable {executable} is not a file here")
        elif checkout is not None and _within(_real(executable), [_real(checkout)]) is not None:
            warnings.append(f"--executable {executable} is inside the source checkout {checkout}")
    hard = hardening([*needs, *config_needs(cfg, config)], user=user, home=home)
    warnings += hard.warnings
    text = unit_text(
        executable=command,
        config=config,
        inbox=cfg.paths.inbox,
        state=cfg.paths.state,
        user=user,
        group=group,
        groups=groups,
        stop_timeout_s=cfg.daemon.stop_timeout_s,
        stop_grace_s=cfg.runs.stop_grace_s,
        version=version,
        read_write=hard.read_write,
        protect_home=hard.protect_home,
        warnings=warnings,
    )
    return Unit(text, tuple(warnings))


def user_home(user: str) -> Path | None:
    """The account's home folder, or None where there is no such account."""
    try:
        return Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        return None
