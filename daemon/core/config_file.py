"""llmtraind.toml before validation: which file, its TOML, and what the environment puts over it.

Apart from config.py, which validates the whole file with pydantic, so that the client commands
(`status`, `jobs`, ...), which need only where the API is and its token, can read those keys and
start in a fraction of the time; config.py reads the file with these same functions, so both see
the same file, the same environment and the same errors.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_PREFIX",
    "TEST_PREFIX",
    "ConfigError",
    "env_value",
    "read_config_file",
    "resolve_config_path",
]

ENV_PREFIX = "LLMTRAIND_"
TEST_PREFIX = "LLMTRAIND_TEST_"
"""Reserved for test hooks (such as the intake's fault injection), never read as config."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


def resolve_config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """--config, then $LLMTRAIND_CONFIG, then ./llmtraind.toml; None means the embedded defaults."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"])
    local = Path("llmtraind.toml")
    return local if local.is_file() else None


def env_value(raw: str) -> Any:
    """Environment values are TOML scalars or arrays when they parse as such, else plain strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's TOML, or a ConfigError that says why it cannot be read."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
