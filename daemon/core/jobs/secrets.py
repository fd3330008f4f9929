"""Secrets a job names by reference, never by value.

Everything a job file says is recorded in the event log and shown by the API (`/v1/jobs/{id}`,
`/v1/events`, `/v1/state`), so a token written into a file would be published to every reader. A
job therefore names where the secret is: `{env: NAME}`, a variable of the daemon's environment
that the operator listed in `[swift] secret_env`, or `{file: /path}`, a file under a folder of
`[swift] secret_files`. Only that reference is recorded; the runner reads the value when the run's
process starts (`daemon.runs.secrets`) and hands it to swift through the environment where swift
reads one (`ENV_ARGS`), else on its command line, which the log and the API see as a placeholder.

Which names are secrets: ms-swift 4.6.0's `api_key`, `hub_token`, `swanlab_token`, `swanlab_secret`
and `swanlab_webhook_url` (its URL carries the webhook's key), and any name ending in a credential
word, so that an argument of another ms-swift version is caught too.

Pure: the references as the file wrote them, checked against the operator's lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from pydantic import model_validator

from daemon.core.jobs.values import _Frozen

__all__ = [
    "ARG_VAR_PREFIX",
    "ENV_ARGS",
    "SecretRef",
    "is_secret_name",
    "secret_ref",
]

ENV_ARGS: Mapping[str, str] = {"swanlab_token": "SWANLAB_API_KEY"}
"""Secret swift arguments whose value swift's libraries also read from an environment variable
(swanlab logs in with SWANLAB_API_KEY): passed there, the value is never on a command line, which
other users can read in /proc."""
ARG_VAR_PREFIX = "LLMTRAIND_SECRET_"
"""The variable that carries an argument-only secret from the daemon to the run's supervisor, which
puts it on swift's command line and removes it from swift's environment."""

_SECRET_NAMES = frozenset({"api_key", "hub_token", "swanlab_token", "swanlab_secret", "swanlab_webhook_url"})
_SECRET_RE = re.compile(
    r"(?:^|_)(?:token|secret|password|passwd|passphrase|apikey|api_key|credential|credentials|"
    r"private_key|access_key|secret_key|webhook_url)$"
)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def is_secret_name(key: str) -> bool:
    """Whether a job key or swift argument name holds a credential."""
    name = key.replace("-", "_").lower()
    return name in _SECRET_NAMES or _SECRET_RE.search(name) is not None


class SecretRef(_Frozen):
    """Where a secret is: exactly one of a daemon environment variable or a file."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret reference is {env: NAME} or {file: /path}")
        return self

    def text(self) -> str:
        """The reference as the log and the API show it: `env:NAME` or `file:/path`."""
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


def _how(key: str) -> str:
    return (
        f"name it by reference: `{key}: {{env: NAME}}` with NAME listed in [swift] secret_env, or "
        f"`{key}: {{file: /path}}` with the file under a folder of [swift] secret_files (llmtraind.toml)"
    )


def _refused(key: str) -> str:
    return (
        f"`{key}` is a secret and its value must not be written in a job file: "
        "the event log and the API show every job's keys"
    )


def secret_ref(
    key: str, value: object, env_names: tuple[str, ...], file_roots: tuple[str, ...]
) -> tuple[SecretRef | None, tuple[str, str] | None]:
    """The reference `value` gives for the secret `key`, or the (message, hint) refusing it.

    A refusal never repeats the value: it may be the secret itself."""
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in ("env", "file"):
        return None, (_refused(key), _how(key))
    kind, target = next(iter(value.items()))
    if kind == "env":
        return _env_ref(key, target, env_names)
    return _file_ref(key, target, file_roots)


def _env_ref(
    key: str, name: Any, allowed: tuple[str, ...]
) -> tuple[SecretRef | None, tuple[str, str] | None]:
    if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
        return None, (f"`{key}: {{env: ...}}` must name an environment variable", _how(key))
    if name not in allowed:
        listed = ", ".join(allowed) if allowed else "none are listed"
        return None, (
            f"`{key}` names the environment variable {name}, which jobs may not read ({listed})",
            f"add {name} to [swift] secret_env in llmtraind.toml",
        )
    return SecretRef(env=name), None


def _file_ref(key: str, path: Any, roots: tuple[str, ...]) -> tuple[SecretRef | None, tuple[str, str] | None]:
    if not isinstance(path, str) or "\x00" in path or not path.startswith("/"):
        return None, (f"`{key}: {{file: ...}}` must be an absolute path", _how(key))
    pure = PurePosixPath(path)
    if ".." in pure.parts:
        return None, (f"`{key}`: {path!r} leaves its folder through '..'", "name the file directly")
    if not any(PurePosixPath(root) in pure.parents for root in roots):
        listed = ", ".join(roots) if roots else "none are configured"
        return None, (
            f"`{key}` names {path!r}, outside the folders secrets may be read from ({listed})",
            "add its folder to [swift] secret_files in llmtraind.toml",
        )
    return SecretRef(file=path), None
