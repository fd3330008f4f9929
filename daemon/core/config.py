"""llmtraind.toml -> one frozen, validated model.

The file is the contract with the operator, so every mistake is reported with the file, the key and
what was expected; nothing is silently defaulted except keys that are absent.

`[models]` is a table of its own rather than a section of keys: it maps the names jobs write for
models (`qwen-7b`, `Qwen/Qwen2.5-7B-Instruct`) to local folders, so job files written for other
systems run unchanged on a box without a hub. A relative folder is relative to the config file. A
name a job writes is looked up here first, then (with `[swift] offline = true`) in the Hugging Face
and ModelScope caches; intake records which folder it became.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.core.config_file import (
    ENV_PREFIX,
    TEST_PREFIX,
    ConfigError,
    env_value,
    read_config_file,
    resolve_config_path,
)

__all__ = [
    "LIVE_KEYS",
    "NOTIFY_TYPES",
    "Config",
    "ConfigError",
    "NotifyTarget",
    "config_digest",
    "load_config",
    "merge_reload",
    "resolve_config_path",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PathsConfig(_Section):
    inbox: Path = Path("inbox")
    """Watched folder; relative paths are relative to the config file."""
    state: Path = Path("state")
    """Event log (llmtraind.sqlite3), blobs/, runs/, logs/."""


class ApiConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    token: str = ""
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    """Every SSE stream gets a comment line this often, so proxies keep idle streams open."""
    sse_send_timeout_s: float = Field(default=10.0, gt=0)
    """A stream whose write has not gone out after this long (its client stopped reading) is closed;
    the client reconnects with Last-Event-ID and loses nothing."""
    sse_max_streams: int = Field(default=1024, ge=1)
    """Open SSE streams at most (each holds a socket); one more is answered 503."""
    max_connections: int = Field(default=2048, ge=1)
    """Open connections at most, with a token or without (each holds a file descriptor); one more
    is answered 503 and closed. Lowered at start to what the open-file limit leaves for the log,
    intake and runs (the limit minus 512, or half of it if smaller)."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection that has not sent a request's headers this long after it opened, or after its
    previous answer, is closed: slow or silent clients cannot hold connections (slowloris)."""


class GpusConfig(_Section):
    devices: Literal["auto", "none"] | list[int | str] = "auto"
    cpu_slots: int = Field(default=1, ge=0)


class SwiftConfig(_Section):
    python: str = ""
    offline: bool = True
    allow_code: bool = False
    """Whether a job may make swift load Python of its choosing: plugin files, import paths, engine
    classes, environment variables that steer loading, and model folders that ask for remote code.
    A dropped file is untrusted input, so the operator decides, not the job."""
    allowed_paths: tuple[Path, ...] = ()
    """Folders under which the files and folders that `swift:` arguments name (deepspeed configs,
    custom_dataset_info, ...) may lie; relative entries are relative to the config file."""
    secret_env: tuple[str, ...] = ()
    """Variables of the daemon's environment a job may name as a secret (`api_key: {env: NAME}`,
    `swift: {swanlab_token: {env: NAME}}`). A job file never holds a secret's value: the event log
    and the API show every job's keys, so a job names where the secret is, and the runner reads it
    only when the run starts."""
    secret_files: tuple[Path, ...] = ()
    """Folders under which the files a job names as a secret (`{file: /path}`) may lie; relative
    entries are relative to the config file."""
    allow_public_deploy: bool = False
    """Whether a deploy job may bind an address other than loopback; it must also give an api_key,
    by reference."""


class LimitsConfig(_Section):
    max_yaml_bytes: int = Field(default=1_048_576, gt=0)
    max_dataset_bytes: int = Field(default=10_737_418_240, gt=0)
    max_bundle_bytes: int = Field(default=10_737_418_240, gt=0)
    """A multimodal bundle (NAME.zip|tar|tar.gz): its own size, and the sum of its members' sizes as
    the archive declares them, checked before anything is inflated."""
    max_members: int = Field(default=100_000, gt=0)
    """Members of a bundle, and distinct media files of one dataset (bundle or data: URIs)."""
    max_media_bytes: int = Field(default=268_435_456, gt=0)
    """One picture, video or sound, as stored."""
    max_image_pixels: int = Field(default=89_478_485, gt=0)
    """Width x height of one picture, read from its header before it is decoded (Pillow's own
    decompression-bomb limit by default)."""
    max_expansion_ratio: float = Field(default=100.0, gt=1)
    """A member larger than 1 MiB may inflate to at most this many times its compressed size (a
    .tar.gz: the members so far against the compressed bytes so far); more is a zip bomb."""


class IntakeConfig(_Section):
    rescan_s: float = Field(default=2.0, gt=0)
    """The inbox folder is listed this often even when no watch event came: events are only hints
    (inotify drops them on overflow, and nothing is reported while the daemon is down)."""
    settle_s: float = Field(default=2.0, ge=0)
    """Where the kernel cannot say whether a writer still has a file open (another owner's file, NFS),
    a file is taken once its size and mtime have not changed for this long."""
    watch_step_ms: int = Field(default=10, ge=1)
    """How long a burst of inotify events must be quiet before the scanner is woken: drop-to-pickup
    latency is about 1-2x this."""
    workers: int = Field(default=2, ge=1, le=64)
    """Files validated at once, each in its own thread."""


class StoreConfig(_Section):
    busy_timeout_ms: int = Field(default=5000, ge=0)
    """How long an append waits for another process's write lock before it fails."""
    snapshot_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    """Write a state snapshot once the events since the last one hold this much data (JSON bytes)
    and at least as much as that snapshot, so start-up replays a bounded tail."""
    snapshot_every: int | None = None
    """No longer used (snapshots follow snapshot_bytes); accepted so that a config written for an
    older version still loads, and the daemon says at start that it is ignored."""
    startup_check: Literal["auto", "full", "quick"] = "auto"
    """SQLite's integrity_check reads every page (about 10 ms per MB here); "auto" runs it on logs up to
    256 MiB and quick_check (structure without index cross-checks) on larger ones. With a snapshot,
    start-up checks only the events after it and runs this check once it serves."""


class RunsConfig(_Section):
    stop_grace_s: float = Field(default=30.0, ge=0)
    """SIGTERM to a run's process group, then SIGKILL this much later: time for a checkpoint save."""
    poll_s: float = Field(default=0.5, gt=0)
    """How often a running job's logging.jsonl is read for progress and metrics."""
    schedule_s: float = Field(default=2.0, gt=0)
    """The scheduling loop looks this often (GPUs free up outside the log); it decides placement
    again only when the queue, the box or a reservation's clock changed."""
    gpu_probe_s: float = Field(default=2.0, gt=0)
    """A GPU probe is reused for this long between placements."""
    min_free_disk_gib: float = Field(default=10.0, ge=0)
    """No run starts while the state folder's file system has less free (GiB); the job says why.
    0 turns the guard off."""
    hang_factor: float = Field(default=20.0, gt=0)
    hang_min_s: float = Field(default=1800.0, gt=0)
    """A training whose step has not advanced for max(hang_factor x its median step time,
    hang_min_s) seconds is hung: its stacks are dumped, it is stopped and classified `hung`."""
    keep_checkpoints: int = Field(default=3, ge=0)
    """Complete checkpoints a job keeps, newest first, unless it says `keep_checkpoints`; the best
    (`keep_best`), the last and any another job names are kept besides; 0 keeps all."""


class DaemonConfig(_Section):
    stop_timeout_s: float = Field(default=10.0, gt=0)
    on_stop: Literal["keep", "stop"] = "keep"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    health_interval_s: float = Field(default=5.0, gt=0)
    """How often the daemon checks that its event log is still writable (shown in /healthz)."""


NotifyType = Literal[
    "job.queued",
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.paused",
    "job.serving",
    "file.rejected",
    "dataset.accepted",
    "daemon.started",
    "daemon.unhealthy",
]
NOTIFY_TYPES: tuple[NotifyType, ...] = get_args(NotifyType)


class NotifyTarget(_Section):
    """One `[[notify]]` entry: where notifications go (exactly one of `url`, `apprise`, `command`) and
    which. The secret and the apprise URL (which holds a chat service's token) are SecretStr, so no
    dump, repr or API answer shows them."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    url: str = ""
    """A Standard Webhooks receiver (http or https)."""
    secret: SecretStr = SecretStr("")
    """`whsec_<base64>`, the webhook's signing key."""
    apprise: SecretStr = SecretStr("")
    command: tuple[str, ...] = ()
    """argv (no shell), the payload on its stdin."""
    on: tuple[NotifyType, ...] = NOTIFY_TYPES
    projects: tuple[str, ...] = ()
    """Only jobs of these projects (empty: every project; events of no job always pass)."""
    timeout_s: float = Field(default=10.0, gt=0)
    attempts: int = Field(default=8, ge=1, le=100)
    """Tries of one notification before it is recorded as given up and the cursor moves on."""
    backoff_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _one_way(self) -> NotifyTarget:
        ways = [
            w
            for w, v in (
                ("url", self.url),
                ("apprise", self.apprise.get_secret_value()),
                ("command", self.command),
            )
            if v
        ]
        if len(ways) != 1:
            raise ValueError(
                f"notify {self.name!r}: give exactly one of url, apprise, command (got {ways or 'none'})"
            )
        if self.url:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"notify {self.name!r}: url must be http:// or https://")
            if not _is_whsec(self.secret.get_secret_value()):
                raise ValueError(f"notify {self.name!r}: secret must be whsec_<base64 of at least 16 bytes>")
        elif self.secret.get_secret_value():
            raise ValueError(f"notify {self.name!r}: secret signs webhooks; it goes with url only")
        return self


def _is_whsec(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret[6:] + "==", validate=False)) >= 16
    except ValueError:
        return False


class ExecutorConfig(_Section):
    kind: Literal["local", "slurm"] = "local"
    """Who places runs: this box (`local`), or a Slurm cluster the daemon hands each attempt to."""


class SlurmConfig(_Section):
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_limit: str = ""
    """Slurm's --time for jobs that give neither `slurm: {time: ...}` nor `timeout`; "" = the partition's."""
    sbatch_args: tuple[str, ...] = ()
    """Extra sbatch options, each one `--name=value` item, added to every job's script."""
    shared_root: Path | None = None
    """A folder every node sees: run folders, logs, converted datasets and caches go there; unset
    (or "") = the state folder, which must then be shared."""
    python: str = ""
    """The interpreter with ms-swift on the nodes; "" = `[swift] python`, else the daemon's."""
    poll_s: float = Field(default=5.0, gt=0)
    """How often squeue is asked about the jobs the daemon submitted."""

    @field_validator("shared_root", mode="before")
    @classmethod
    def _unset_root(cls, v: object) -> object:
        return None if v == "" else v


class Config(_Section):
    paths: PathsConfig = PathsConfig()
    api: ApiConfig = ApiConfig()
    gpus: GpusConfig = GpusConfig()
    swift: SwiftConfig = SwiftConfig()
    limits: LimitsConfig = LimitsConfig()
    intake: IntakeConfig = IntakeConfig()
    store: StoreConfig = StoreConfig()
    runs: RunsConfig = RunsConfig()
    daemon: DaemonConfig = DaemonConfig()
    executor: ExecutorConfig = ExecutorConfig()
    slurm: SlurmConfig = SlurmConfig()
    models: dict[str, Path] = Field(default_factory=dict)
    """`[models]`: a model name as jobs write it -> its local folder (absolute once loaded)."""
    notify: tuple[NotifyTarget, ...] = ()
    """`[[notify]]`: notification targets, each delivered from the event log with its own cursor."""
    source: Path | None = Field(default=None, exclude=True)
    """The file this was read from (None: embedded defaults)."""

    @field_validator("paths")
    @classmethod
    def _no_empty_paths(cls, v: PathsConfig) -> PathsConfig:
        for name in ("inbox", "state"):
            if str(getattr(v, name)) in ("", "."):
                raise ValueError(f"paths.{name} must name a folder of its own, not the config folder")
        return v

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, Path]) -> dict[str, Path]:
        for name, folder in v.items():
            if not name or name != name.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
                raise ValueError(f"models: {name!r} is not a model name as a job writes it")
            if str(folder) in ("", "."):
                raise ValueError(f"models.{name} must name a model folder")
        return v

    @field_validator("notify")
    @classmethod
    def _notify_names(cls, v: tuple[NotifyTarget, ...]) -> tuple[NotifyTarget, ...]:
        names = [t.name for t in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"notify: names must differ (twice: {', '.join(twice)})")
        return v

    @property
    def db_path(self) -> Path:
        return self.paths.state / "llmtraind.sqlite3"

    @property
    def lock_path(self) -> Path:
        return self.paths.state / "llmtraind.lock"


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    sections = {name for name in Config.model_fields if name != "source"}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG" or key.startswith(TEST_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(
                f"environment variable {key}: no config section matches (known: {sorted(sections)})"
            )
        section_data = data.setdefault(section, {})
        if not isinstance(section_data, dict):
            raise ConfigError(f"environment variable {key}: [{section}] is not a table")
        section_data[rest[len(section) + 1 :]] = env_value(raw)


def _describe(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key")
        elif e["loc"][:1] == ("notify",):
            lines.append(f"  {loc}: {e['msg']}")  # its input may hold a secret
        else:
            lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _absolute(p: Path, base: Path) -> Path:
    return (p if p.is_absolute() else (base / p)).resolve()


def _resolve_paths(cfg: Config, base: Path) -> Config:
    resolved = {
        name: _absolute(p, base) for name, p in (("inbox", cfg.paths.inbox), ("state", cfg.paths.state))
    }
    for name, p in resolved.items():
        if p.exists() and not p.is_dir():
            raise ConfigError(
                f"{cfg.source or 'defaults'}: paths.{name} = {str(p)!r} exists and is not a folder"
            )
    allowed = tuple(_absolute(p, base) for p in cfg.swift.allowed_paths)
    secret_files = tuple(_absolute(p, base) for p in cfg.swift.secret_files)
    root = cfg.slurm.shared_root
    return cfg.model_copy(
        update={
            "slurm": cfg.slurm.model_copy(update={"shared_root": root and _absolute(root, base)}),
            "paths": PathsConfig(**resolved),
            "models": {name: _absolute(p, base) for name, p in cfg.models.items()},
            "swift": cfg.swift.model_copy(update={"allowed_paths": allowed, "secret_files": secret_files}),
        }
    )


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, validate, and make every path absolute."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin = "embedded defaults"
    base = Path.cwd()
    if path is not None:
        origin = str(path)
        data = read_config_file(path)
        base = path.resolve().parent
    _apply_env(data, env)
    try:
        cfg = Config.model_validate({**data, "source": path.resolve() if path else None})
    except ValidationError as e:
        raise ConfigError(_describe(e, origin)) from None
    return _resolve_paths(cfg, base)


def config_digest(cfg: Config) -> str:
    """A short, stable fingerprint recorded in DaemonStarted so a changed config is visible in history."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


LIVE_KEYS = frozenset(
    {
        "gpus.cpu_slots",
        "swift.python",
        "swift.offline",
        "swift.allow_code",
        "swift.allowed_paths",
        "swift.secret_env",
        "swift.secret_files",
        "swift.allow_public_deploy",
        "limits.max_yaml_bytes",
        "limits.max_dataset_bytes",
        "limits.max_bundle_bytes",
        "limits.max_members",
        "limits.max_media_bytes",
        "limits.max_image_pixels",
        "limits.max_expansion_ratio",
        "intake.rescan_s",
        "intake.settle_s",
        "runs.stop_grace_s",
        "runs.poll_s",
        "runs.schedule_s",
        "runs.gpu_probe_s",
        "runs.keep_checkpoints",
        "runs.hang_factor",
        "runs.hang_min_s",
        "runs.min_free_disk_gib",
        "slurm.poll_s",
        "daemon.on_stop",
        "daemon.log_level",
        "models",
        "notify",
    }
)
"""Keys a reload (SIGHUP) applies at once. The others name sockets, folders, thread pools or the
GPUs the daemon manages, which only a restart changes safely. `models` is the whole `[models]` table,
`notify` every `[[notify]]` entry."""


def merge_reload(old: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """The config to run with after a reload: `new` where a key may change live, `old` elsewhere;
    and the changed keys applied and refused, as `section.key`."""
    was, now = old.model_dump(), new.model_dump()
    applied: list[str] = []
    refused: list[str] = []
    merged: dict[str, Any] = {s: v if s in ("models", "notify") else dict(v) for s, v in was.items()}
    for whole in ("models", "notify"):
        if was[whole] != now[whole]:
            merged[whole] = now[whole]
            applied.append(whole)
    for section, keys in now.items():
        if section in ("models", "notify"):
            continue
        for key, value in keys.items():
            if was[section][key] == value:
                continue
            name = f"{section}.{key}"
            if name in LIVE_KEYS:
                merged[section][key] = value
                applied.append(name)
            else:
                refused.append(name)
    return Config.model_validate({**merged, "source": old.source}), applied, refused
