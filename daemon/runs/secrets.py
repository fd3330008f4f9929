"""A run's secrets, read when its process starts: the log and the API only ever hold the reference.

`JobStarted.secrets` maps a variable of the run's environment to a reference, `env:NAME` (the
daemon's own environment) or `file:/path`. Intake already checked each reference against
`[swift] secret_env` and `secret_files`; here it is read, and a failure names the reference,
never a value, because the message becomes the run's recorded error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SecretError", "resolve_secrets"]

_MAX_BYTES = 65536
"""A key, token or password; anything longer is not one."""


class SecretError(Exception):
    """A secret could not be read; the message names its reference."""


def resolve_secrets(refs: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Variable -> value for each reference. Blocking: a file is read."""
    return {var: _value(ref, environ) for var, ref in refs.items()}


def _value(ref: str, environ: Mapping[str, str]) -> str:
    kind, _, target = ref.partition(":")
    if kind == "env":
        value = environ.get(target)
        if not value:
            raise SecretError(f"the secret {ref}: the daemon's environment has no {target}")
    elif kind == "file":
        value = _read(ref, target)
    else:
        raise SecretError(f"the secret {ref!r} is neither env: nor file:")
    if "\x00" in value:
        raise SecretError(f"the secret {ref} contains a NUL character")
    return value


def _read(ref: str, path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise SecretError(f"the secret {ref} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise SecretError(f"the secret {ref} is larger than {_MAX_BYTES} bytes")
    try:
        value = data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretError(f"the secret {ref} is not UTF-8 text") from None
    if not value:
        raise SecretError(f"the secret {ref} is empty")
    return value
