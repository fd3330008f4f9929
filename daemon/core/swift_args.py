"""The argument names each `swift` command accepts, per installed ms-swift version.

swift only notices an unknown argument after it has resolved the model and created the output
directory (`ValueError: remaining_argv: [...]`), and argparse's prefix matching lets a typo such as
`--learning` through. So the daemon checks every argument name of a job before it starts a run,
against the list that the installed ms-swift's own parser would build: the `init` fields of the
argument dataclasses that `HfArgumentParser` turns into flags.

A list for ms-swift 4.6.0 is bundled (`daemon/core/data/swift_args-4.6.0.json`). For another version the
daemon runs this file with the configured interpreter (`introspect`) at start-up.

This module imports only the standard library at the top, so that it also runs as a plain script
under an interpreter that has ms-swift but not the daemon installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "BUNDLED_VERSION",
    "COMMAND_CLASSES",
    "SwiftArgs",
    "SwiftArgsError",
    "bundled",
    "introspect",
    "introspect_installed",
    "main",
]

BUNDLED_VERSION = "4.6.0"

COMMAND_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        "sft": "SftArguments",
        "pt": "PretrainArguments",
        "rlhf": "RLHFArguments",
        "export": "ExportArguments",
        "deploy": "DeployArguments",
        "infer": "InferArguments",
    }
)
"""swift sub-command -> its argument dataclass in `swift.arguments` (ms-swift 4.x)."""

# Run the script by path, but without the script's folder or the current directory on sys.path:
# daemon/ holds modules (config.py, events.py, ...) whose names could shadow swift's imports.
_BOOTSTRAP = (
    "import runpy, sys; "
    "sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)
_SCRIPT = str(Path(__file__).resolve())


class SwiftArgsError(RuntimeError):
    """The argument list could not be read: bad file, or the interpreter could not introspect swift."""


@dataclass(frozen=True)
class SwiftArgs:
    """Accepted argument names (underscore form) of each swift command, for one ms-swift version."""

    version: str
    commands: Mapping[str, frozenset[str]]

    def names(self, command: str) -> frozenset[str]:
        """Names `swift <command>` accepts; empty for a command this list does not know."""
        return self.commands.get(command, frozenset())

    def to_json(self) -> str:
        """The file format: sorted, one name per line, so that diffs between versions are readable."""
        body = {
            "ms_swift_version": self.version,
            "commands": {cmd: sorted(names) for cmd, names in sorted(self.commands.items())},
        }
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> SwiftArgs:
        """Parse the file format; raises SwiftArgsError with what is wrong."""
        try:
            body = json.loads(text)
            version = body["ms_swift_version"]
            raw = body["commands"]
            commands = {str(cmd): frozenset(str(n) for n in names) for cmd, names in raw.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SwiftArgsError(f"not a swift argument list: {exc!r}") from exc
        if not isinstance(version, str) or not commands:
            raise SwiftArgsError("not a swift argument list: no version or no commands")
        return cls(version=version, commands=MappingProxyType(commands))


def bundled() -> SwiftArgs:
    """The list shipped with the daemon, for ms-swift `BUNDLED_VERSION`."""
    path = resources.files("daemon.core").joinpath("data", f"swift_args-{BUNDLED_VERSION}.json")
    return SwiftArgs.from_json(path.read_bytes())


def introspect_installed() -> SwiftArgs:
    """Read the names from the ms-swift importable here (slow: importing swift takes seconds)."""
    # swift logs while importing; keep stdout for the JSON alone.
    with contextlib.redirect_stdout(sys.stderr):
        swift = importlib.import_module("swift")
        arguments = importlib.import_module("swift.arguments")
    commands = {
        cmd: frozenset(f.name for f in dataclasses.fields(getattr(arguments, cls)) if f.init)
        for cmd, cls in COMMAND_CLASSES.items()
    }
    return SwiftArgs(version=str(swift.__version__), commands=MappingProxyType(commands))


async def introspect(python: str, *, timeout_s: float = 300.0) -> SwiftArgs:
    """Run this file under `python` (an interpreter with ms-swift) and parse what it prints.

    No shell is involved. Raises SwiftArgsError naming the interpreter, the exit status and the
    tail of its stderr when the interpreter is missing, fails, hangs or prints something else.
    """
    proc = await _spawn(python)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        raise SwiftArgsError(f"{python!r} did not list swift's arguments within {timeout_s:g} s") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave the child behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise SwiftArgsError(
            f"{python!r} could not list swift's arguments (exit {proc.returncode}); is ms-swift "
            "installed in it?\n" + "\n".join(tail)
        )
    return SwiftArgs.from_json(out)


async def _spawn(python: str) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            python,
            "-c",
            _BOOTSTRAP,
            _SCRIPT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise SwiftArgsError(f"cannot run {python!r} to list swift's arguments: {exc}") from exc


def main() -> int:
    """`python -m daemon.core.swift_args`: print the list for the ms-swift installed here as JSON."""
    try:
        found = introspect_installed()
    except (ImportError, AttributeError) as exc:
        print(f"cannot introspect ms-swift: {exc!r}", file=sys.stderr)
        return 1
    sys.stdout.write(found.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
