"""Where the client commands find the daemon's API, read without validating the whole config.

`llmtraind status` needs four keys: `[api] host`, `port`, `token` and `[paths] state` (whose
daemon.json names the address the daemon really bound). Validating the whole file means importing
pydantic and building every section's model, which costs more than the rest of the command, so
these keys are read straight from the TOML and the environment. Anything this reader is not sure
of (a value of another type, a path that is no folder) goes to the full validation instead, which
gives its values or raises the ConfigError it always gave.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.core.config_file import ENV_PREFIX, env_value, read_config_file

if TYPE_CHECKING:
    from daemon.core.config import Config

__all__ = ["Endpoint", "base_url", "check_config", "endpoint", "from_config"]

_DEFAULTS: Mapping[tuple[str, str], Any] = {
    ("api", "host"): "127.0.0.1",
    ("api", "port"): 8470,
    ("api", "token"): "",
    ("paths", "state"): "state",
}
"""The keys read, with config.py's defaults; tests/unit/test_cli_reads.py holds them to it."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    token: str
    state: Path
    """The state folder, absolute."""


def _plain(path: Path | None, environ: Mapping[str, str]) -> Endpoint | None:
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX):
            section, _, name = key[len(ENV_PREFIX) :].lower().partition("_")
            if (section, name) in _DEFAULTS:
                table = data.setdefault(section, {})
                if not isinstance(table, dict):
                    return None
                table[name] = env_value(raw)
    values: dict[str, Any] = {}
    for (section, name), default in _DEFAULTS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            return None
        value = table.get(name, default)
        if type(value) is not type(default):
            return None
        values[name] = value
    if not 0 <= values["port"] <= 65535 or str(Path(values["state"])) == ".":
        return None
    base = path.resolve().parent if path is not None else Path.cwd()
    state = (base / values["state"]).resolve()
    if state.exists() and not state.is_dir():
        return None
    return Endpoint(values["host"], values["port"], values["token"], state)


def endpoint(path: Path | None, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The API's address and token from the config file at `path` (None: the defaults) and the
    environment's overrides; a ConfigError when the file cannot be used."""
    env = os.environ if environ is None else environ
    found = _plain(path, env)
    if found is not None:
        return found
    from daemon.core.config import load_config

    return from_config(load_config(path, env))


def from_config(cfg: Config) -> Endpoint:
    return Endpoint(cfg.api.host, cfg.api.port, cfg.api.token, cfg.paths.state)


def base_url(url: str | None, found: Endpoint) -> str:
    """`--url`, else the address the daemon wrote into its state folder when it bound (a port of 0
    is chosen then), else the config's host and port."""
    if url:
        return url.rstrip("/")
    try:
        return str(json.loads((found.state / "daemon.json").read_text())["url"]).rstrip("/")
    except (OSError, ValueError, KeyError):
        return f"http://{found.host}:{found.port}"


def check_config(path: Path | None) -> None:
    """Validate the whole file as the daemon does: a ConfigError if it cannot be used. A command
    that could not reach the daemon says this first, as it did before it read only its keys."""
    from daemon.core.config import load_config

    load_config(path)
