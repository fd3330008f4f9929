"""Why a swift run failed, in one word for programs and one line for people.

swift exits 1 for any Python exception and leaves the cause in the last lines of its log: the
traceback's last line, and before it the lines that name the bad dataset row, path or argument
(`reference/swift-cpu.md` §6; the fixtures under tests/fixtures/swift/ are tails of real runs).
The classifier reads those lines, the exit status and what the daemon itself did (cancel,
timeout), and says whether running the same job again could succeed (`transient`): a port that
was taken or a GPU that another process filled may be free next time; a bad argument or dataset
fails the same way every time.

Pure and total: any text gives a Failure, never an exception.
"""

from __future__ import annotations

import ast
import re
import shlex
import signal as signals
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["TAIL_LINES", "Failure", "FailureKind", "classify_failure"]

FailureKind = Literal[
    "out_of_memory",
    "bad_dataset",
    "model_not_found",
    "unknown_argument",
    "bad_argument",
    "port_in_use",
    "gpu_error",
    "disk_full",
    "missing_package",
    "dtype_unsupported",
    "killed",
    "timeout",
    "cancelled",
    "node_failure",
    "hung",
    "unknown",
]

TAIL_LINES = 400
"""Lines of the log worth passing: a bad-dataset message comes about 100 lines before the end."""
_MAX_LINE = 4096
_MAX_REASON = 300
_ENDING_LINES = 3
"""Last lines of the log an unclassified failure's reason quotes."""
_MESSAGE_LINES = 2
"""Lines after an exception line read as the rest of its message."""

_EXCEPTION_RE = re.compile(
    r"(?:(?:[A-Za-z_]\w{0,100}\.){1,10}[A-Z]\w{0,100}|\w{0,100}(?:Error|Exception|Exit|Interrupt))(?::\s|$)"
)
"""`ValueError: ...`, `pyarrow.lib.ArrowInvalid: ...`; not `Train: 50%|...` (tqdm) or `[INFO:swift] ...`."""
_WRAPPER_EXCEPTIONS = ("ChildFailedError", "DatasetGenerationError")
"""Exceptions that only say "something below failed"; the cause is an earlier line."""
_OOM_RE = re.compile(
    r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|can't allocate memory"
    r"|HIP out of memory|XPU out of memory|\bMemoryError\b"
)
_OOM_PROCESS_RE = re.compile(r"Process (\d+) has [0-9.]+ [KMGT]iB memory in use")
_ROW_RE = re.compile(
    r"Failed to load JSON from file '([^']{1,1024})' with error [^:]*: (.*?) in row (\d{1,12})"
)
_LOCAL_DATASET_RE = re.compile(r"The local path does not exist, dataset_id: `([^`]{1,1024})`")
_HUB_DATASET_RE = re.compile(r"Couldn't reach '([^']{1,1024})' on the Hub")
_DATASET_LOAD_RE = re.compile(r"Dataset (\S{1,1024}) load failed")
_ROWS_DROPPED = "There are errors in the dataset, the data will be deleted"
_MODEL_PATH_RE = re.compile(r"ValueError: path: '([^']{1,1024})' not found")
_MODEL_HUB_RE = re.compile(
    r"LocalEntryNotFoundError|RepositoryNotFoundError|/api/v1/models/([^/\s]{1,256}(?:/[^/\s]{1,256})?)/repo"
)
_NOT_A_MODEL_RE = re.compile(
    r"does not appear to have a file named config\.json|Can't load the configuration of '([^']{1,1024})'"
    r"|Unrecognized model in (\S{1,1024})"
)
_REMAINING_RE = re.compile(r"remaining_argv: (\[.{0,2000}\])")
_ARGPARSE_RE = re.compile(r"^\S{1,200}: error: (.*)$")
_ARGPARSE_ARG_RE = re.compile(r"(?:argument|option:?|arguments:) (--?[\w-]{1,200})")
_AUTO_MATCH_RE = re.compile(r"Failed to automatically match `?(model_type|template_type)")
_CANDIDATES_RE = re.compile(r"Multiple possible types found: (\[[^\]]{0,2000}\])")
_HUB_DOWNLOAD_RE = re.compile(r"Downloading the model from (\w{1,40}) Hub, model_id: (\S{1,512})")
_HUB_UNREACHABLE_RE = re.compile(
    r"LocalEntryNotFoundError|OfflineModeIsEnabled|Name or service not known|Temporary failure in name"
    r"|Network is unreachable|Max retries exceeded|ConnectError|ConnectionError"
)
_HUB_OFF_RE = re.compile(r"outgoing traffic has been disabled|OfflineModeIsEnabled")
_BF16_RE = re.compile(r"Your setup doesn't support bf16")
_HALF_OP_RE = re.compile(r"not implemented for '(Half|BFloat16)'")
_PIP_RE = re.compile(r"`pip install (?:-U |--upgrade )?([^`]{1,200})`")
_MISSING_RE = re.compile(
    r"No module named '(?P<module>[\w.]{1,200})'"
    r"|requires the (?P<library>[\w.-]{1,200}) library"
    r"|The '(?P<dist>[\w.-]{1,200})' distribution was not found"
    r"|No package metadata was found for (?!The ')(?P<meta>[\w.-]{1,200})"
    r"|(?P<flash>FlashAttention)\d? has been toggled on, but it cannot be used"
    r"|(?:requires|install) `?(?P<needed>[\w.-]{1,200})`?(?: to be installed)?[:.,]? .{0,200}`pip install"
)
"""What transformers, swift and Python print when a package is not installed (the messages of the
fixtures `*_missing.log` and `bnb_8bit.log`, and Python's own)."""
_PIP_NAMES = {
    "flash_attn": "flash-attn",
    "liger_kernel": "liger-kernel",
    "sklearn": "scikit-learn",
    "cv2": "opencv-python",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "google": "protobuf",
    "attr": "attrs",
    "bs4": "beautifulsoup4",
}
"""Import names whose package is called something else on PyPI."""
_VENV_RE = re.compile(r'File "(.{1,1024}?)/lib/python3\.\d{1,3}/site-packages/')
_ENUM_RE = re.compile(r"ValueError: (.{1,200}) is not a valid (\w{1,100})")
_PORT_RE = re.compile(r"Address already in use|EADDRINUSE|server socket has failed to (?:listen|bind)")
_GPU_RE = re.compile(
    r"\bNCCL error|ncclUnhandledCudaError|ncclSystemError|ncclInternalError|ncclRemoteError"
    r"|CUDA-capable device\(s\) is/are busy or unavailable|uncorrectable ECC error"
    r"|CUDA error: unspecified launch failure|CUDA error: an illegal memory access"
    r"|Watchdog caught collective operation timeout|No CUDA GPUs are available"
)
_DISK_RE = re.compile(r"No space left on device|Disk quota exceeded")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_INTERRUPTS = frozenset({signals.SIGTERM, signals.SIGINT, signals.SIGHUP, signals.SIGQUIT})


@dataclass(frozen=True)
class Failure:
    """A failed run, classified."""

    kind: FailureKind
    transient: bool
    """Running the same job again, unchanged, may succeed."""
    reason: str
    """One line for people: what happened and, where known, what to change."""
    exception: str | None = None
    """The exception line the run ended with (`ValueError: ...`), if it printed one."""
    argument: str | None = None
    """The swift argument at fault (`--bogus_arg`), for argument failures."""
    path: str | None = None
    """The dataset file or model directory at fault."""
    row: int | None = None
    """0-based row in `path` that does not parse, as pyarrow reports it; it counts from the start
    of the 10 MiB block being read, which is the file's line number minus 1 in smaller files."""
    signal: str | None = None
    """The signal that ended the process (`SIGKILL`), if one did."""


def classify_failure(
    log_tail: Iterable[str] | str,
    *,
    returncode: int | None,
    signal: int | None = None,
    cancelled: bool = False,
    timed_out: bool = False,
    gpu_shared: bool = False,
) -> Failure:
    """Classify a run that did not succeed.

    Args:
        log_tail: the last lines of the run's log, stdout and stderr interleaved (`TAIL_LINES`
            is enough); one string is split into lines.
        returncode: the exit status as asyncio/subprocess report it (negative: killed by that
            signal); None when unknown, e.g. for a run found dead after a daemon restart.
        signal: the signal that ended it, when known apart from `returncode`.
        cancelled: the daemon stopped it because someone cancelled the job.
        timed_out: the daemon stopped it because it ran past the job's timeout.
        gpu_shared: another process was using the run's GPUs meanwhile, so an out-of-memory
            failure may not happen again.
    """
    lines = _lines(log_tail)
    sig = (
        signal if signal is not None else (-returncode if returncode is not None and returncode < 0 else None)
    )
    exception = _last_exception(lines)
    if cancelled:
        return Failure("cancelled", False, "cancelled", exception=exception, signal=_signal_name(sig))
    if timed_out:
        return Failure(
            "timeout",
            False,
            "stopped at the job's timeout; raise `timeout` or train fewer steps",
            exception=exception,
            signal=_signal_name(sig),
        )
    for rule in _RULES:
        found = rule(lines, exception, gpu_shared)
        if found is not None:
            return found
    if sig is not None:
        return _by_signal(sig, exception)
    return Failure(
        "unknown", False, _one_line(_status(returncode) + _ending(lines, exception)), exception=exception
    )


# ---------------------------------------------------------------------------------------------


def _lines(log_tail: Iterable[str] | str) -> list[str]:
    """Non-empty lines, `\\r`-separated tqdm redraws split apart, overlong lines cut."""
    chunks = [log_tail] if isinstance(log_tail, str) else log_tail
    out: list[str] = []
    for chunk in chunks:
        for line in re.split(r"[\r\n]", str(chunk)):
            text = _ANSI_RE.sub("", line[:_MAX_LINE]).strip()
            if text:
                out.append(text)
    return out[-TAIL_LINES:]


def _last_exception(lines: list[str]) -> str | None:
    """The last `Type: message` line, skipping wrappers when the cause is also there."""
    found: list[str] = []
    for line in lines:
        match = _EXCEPTION_RE.match(line)
        if match is not None and not line.startswith(("File ", "During handling", "The above")):
            found.append(line)
    for line in reversed(found):
        if not any(wrapper in line for wrapper in _WRAPPER_EXCEPTIONS):
            return line
    return found[-1] if found else None


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _status(returncode: int | None) -> str:
    return "exited with an unknown status" if returncode is None else f"exit status {returncode}"


def _ending(lines: list[str], exception: str | None) -> str:
    """How an unclassified run's log ends: the exception it died of, and the last lines when they
    are not that exception (the log may end after it, or print none)."""
    last = lines[-_ENDING_LINES:]
    tail = " | ".join(last)
    if exception is None:
        return f" and printed no error; the log ends: {tail}" if last else " and printed no error"
    return f": {exception}" if exception in last else f": {exception}; the log ends: {tail}"


def _signal_name(sig: int | None) -> str | None:
    if sig is None:
        return None
    try:
        return signals.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _search(pattern: re.Pattern[str], lines: list[str]) -> re.Match[str] | None:
    """The last match in the log: the one closest to the failure."""
    for line in reversed(lines):
        match = pattern.search(line)
        if match is not None:
            return match
    return None


def _by_signal(sig: int, exception: str | None) -> Failure:
    name = _signal_name(sig)
    if sig == signals.SIGKILL:
        reason = (
            "killed by SIGKILL, not by the daemon; the kernel does this when the machine runs out of memory"
        )
        return Failure("killed", False, reason, exception=exception, signal=name)
    if sig in _INTERRUPTS:
        reason = f"stopped by {name} from outside the daemon (a shutdown or an operator)"
        return Failure("killed", True, reason, exception=exception, signal=name)
    return Failure("unknown", False, f"crashed with {name}", exception=exception, signal=name)


_Rule = Callable[[list[str], str | None, bool], Failure | None]


def _out_of_memory(lines: list[str], exception: str | None, gpu_shared: bool) -> Failure | None:
    match = _search(_OOM_RE, lines)
    if match is None:
        return None
    line = match.string
    host = "can't allocate memory" in line or "MemoryError" == match[0]
    others = len(set(_OOM_PROCESS_RE.findall(line))) > 1
    where = "host memory" if host else "GPU memory"
    hint = (
        "another process was using the GPU; it may fit once that memory is free"
        if gpu_shared or others
        else "lower per_device_train_batch_size or max_length, use LoRA/QLoRA, or ask for more GPUs"
    )
    return Failure(
        "out_of_memory",
        gpu_shared or others,
        _one_line(f"out of {where}: {hint}"),
        exception=exception or line,
    )


def _bad_dataset(lines: list[str], exception: str | None, _: bool) -> Failure | None:
    row = _search(_ROW_RE, lines)
    if row is not None:
        line = int(row[3]) + 1
        reason = f"dataset {row[1]}: {row[2]} at row {row[3]} (line {line} in a file under 10 MiB)"
        return Failure(
            "bad_dataset", False, _one_line(reason), exception=exception, path=row[1], row=int(row[3])
        )
    for pattern, what in (
        (_LOCAL_DATASET_RE, "does not exist"),
        (_HUB_DATASET_RE, "is not a file here, and the hub cannot be reached offline"),
        (_DATASET_LOAD_RE, "could not be loaded"),
    ):
        match = _search(pattern, lines)
        if match is not None:
            reason = f"dataset {match[1]} {what}"
            return Failure("bad_dataset", False, _one_line(reason), exception=exception, path=match[1])
    if any(_ROWS_DROPPED in line for line in lines):
        return _dropped_rows(lines, exception)
    return None


def _dropped_rows(lines: list[str], exception: str | None) -> Failure:
    """swift drops rows it cannot use, each with a traceback; none left ends in an odd error."""
    first = next(i for i, line in enumerate(lines) if _ROWS_DROPPED in line)
    example = _last_exception(lines[:first])
    empty = exception is not None and exception.startswith("ZeroDivisionError")
    what = "every row was dropped as unusable" if empty else "rows were dropped as unusable"
    detail = f"; e.g. {example}" if example else ""
    return Failure("bad_dataset", False, _one_line(f"dataset: {what}{detail}"), exception=exception)


def _model_not_found(lines: list[str], exception: str | None, _: bool) -> Failure | None:
    match = _search(_MODEL_PATH_RE, lines)
    if match is not None:
        reason = f"model or adapter directory {match[1]} does not exist"
        return Failure("model_not_found", False, reason, exception=exception, path=match[1])
    match = _search(_NOT_A_MODEL_RE, lines)
    if match is not None:
        path = match[1] or match[2]
        reason = f"{path or 'the model directory'} is not a model directory (no usable config.json)"
        return Failure("model_not_found", False, _one_line(reason), exception=exception, path=path)
    match = _search(_MODEL_HUB_RE, lines)
    download = _search(_HUB_DOWNLOAD_RE, lines)
    if download is not None and _model_download_failed(exception):
        hub = f"{download[1]} Hub"
        why = f"{hub} downloads are off" if _search(_HUB_OFF_RE, lines) else f"the {hub} cannot be reached"
        reason = (
            f"model {download[2]} is a hub id, and {why}: "
            "map its name to a local folder under [models] in the config, or put it in the local "
            "Hugging Face or ModelScope cache"
        )
        return Failure("model_not_found", False, _one_line(reason), exception=exception, path=download[2])
    if match is not None:
        reason = "the model is not a local directory, and the hub has no copy that can be reached"
        return Failure("model_not_found", False, reason, exception=exception, path=match[1])
    return None


def _model_download_failed(exception: str | None) -> bool:
    """The run ended failing to reach a hub, and not for a dataset (which names itself)."""
    return (
        exception is not None
        and _HUB_UNREACHABLE_RE.search(exception) is not None
        and _HUB_DATASET_RE.search(exception) is None
    )


def _message_lines(lines: list[str], exception: str) -> list[str]:
    """The exception line and the lines of its message after it: transformers' lazy imports end
    in `RuntimeError: Failed to import X because of the following error ...` and name the
    missing module on the next line."""
    last = len(lines) - 1 - lines[::-1].index(exception) if exception in lines else len(lines)
    return [exception, *lines[last + 1 : last + 1 + _MESSAGE_LINES]]


def _missing_package(lines: list[str], exception: str | None, _: bool) -> Failure | None:
    """A package the options need is not installed: named, with the command that installs it into
    the environment swift runs in (the interpreter its traceback's site-packages belong to)."""
    if exception is None:
        return None
    message = " ".join(_message_lines(lines, exception))
    match = _MISSING_RE.search(message)
    if match is None:
        return None
    named = next((name for name in match.group("module", "library", "dist", "meta", "needed") if name), None)
    pip = _PIP_RE.search(message)
    if pip is not None:
        spec = pip[1].strip()
        package = re.split(r"[<>=!~\[;\s]", spec)[0]
    elif match["flash"]:
        spec = package = "flash-attn"
    elif named is not None:
        spec = package = _PIP_NAMES.get(named.split(".")[0], named.split(".")[0])
    else:
        return None
    venv = _search(_VENV_RE, lines)
    python = f"{venv[1]}/bin/python" if venv is not None else "<the [swift] python>"
    reason = (
        f"the Python package {package} is not installed where swift runs; "
        f"install it there: {python} -m pip install {shlex.quote(spec)}"
    )
    return Failure("missing_package", False, _one_line(reason), exception=exception)


def _dtype_unsupported(lines: list[str], exception: str | None, _: bool) -> Failure | None:
    bf16 = _search(_BF16_RE, lines)
    if bf16 is not None:
        reason = (
            "bf16 needs an Ampere or newer GPU; set `torch_dtype: float16` (or float32) in the job"
            if "Ampere" in bf16.string
            else "bf16 cannot train here (no GPU; transformers refuses bf16 on the CPU, and a model "
            "saved in bfloat16 asks for it): set `torch_dtype: float32` in the job, and no `bf16` under `swift:`"
        )
        return Failure("dtype_unsupported", False, reason, exception=exception, argument="--torch_dtype")
    half = _search(_HALF_OP_RE, lines)
    if half is not None:
        dtype = "float16" if half[1] == "Half" else "bfloat16"
        reason = f"{dtype} is not supported by this device's kernels; set `torch_dtype: float32` in the job"
        return Failure("dtype_unsupported", False, reason, exception=exception, argument="--torch_dtype")
    return None


def _unknown_argument(lines: list[str], exception: str | None, _: bool) -> Failure | None:
    match = _search(_REMAINING_RE, lines)
    if match is not None:
        names = _flag_names(match[1])
        argument = names[0] if names else None
        shown = ", ".join(names) if names else match[1]
        reason = f"ms-swift does not know the argument {shown}; check its name for this ms-swift version"
        return Failure("unknown_argument", False, _one_line(reason), exception=exception, argument=argument)
    return None


def _flag_names(text: str) -> list[str]:
    return [item for item in _names(text) if item.startswith("-")]


def _names(text: str) -> list[str]:
    """The strings of a printed Python list (`['qwen2', 'qwen2_gte']`); none if it is not one."""
    try:
        items = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return []
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, str)]


def _bad_argument(lines: list[str], exception: str | None, _: bool) -> Failure | None:
    match = _search(_ARGPARSE_RE, lines)
    if match is not None:
        message = match[1]
        arg = _ARGPARSE_ARG_RE.search(message)
        argument = arg[1] if arg is not None else None
        kind: FailureKind = (
            "unknown_argument" if "unrecognized" in message or "ambiguous" in message else "bad_argument"
        )
        return Failure(kind, False, _one_line(f"swift refused its arguments: {message}"), argument=argument)
    auto = _search(_AUTO_MATCH_RE, lines)
    if auto is not None:
        key = "model_type" if auto[1] == "model_type" else "template"
        found = _CANDIDATES_RE.search(auto.string)
        names = _names(found[1]) if found is not None else []
        reason = (
            f"swift cannot tell the model's {key}: it could be {', '.join(names)}; "
            f"set `{key}: {names[0]}` in the job (or another of them)"
            if names
            else f"swift cannot tell the model's {key}; add `{key}:` to the job (e.g. model_type: qwen2, template: qwen)"
        )
        return Failure("bad_argument", False, _one_line(reason), exception=exception, argument=f"--{key}")
    enum = _search(_ENUM_RE, lines)
    if enum is not None:
        reason = f"{enum[1]} is not a valid {enum[2]}"
        return Failure("bad_argument", False, _one_line(reason), exception=exception)
    return None


def _environment(lines: list[str], exception: str | None, _: bool) -> Failure | None:
    if _search(_PORT_RE, lines) is not None:
        reason = "a network port the run needs was taken by another process"
        return Failure("port_in_use", True, reason, exception=exception)
    gpu = _search(_GPU_RE, lines)
    if gpu is not None:
        return Failure(
            "gpu_error", True, _one_line(f"GPU or GPU link failure: {gpu.string}"), exception=exception
        )
    if _search(_DISK_RE, lines) is not None:
        reason = "the disk is full; free space under the daemon's state directory"
        return Failure("disk_full", False, reason, exception=exception)
    return None


_RULES: tuple[_Rule, ...] = (
    _out_of_memory,
    _missing_package,
    _dtype_unsupported,
    _unknown_argument,
    _bad_argument,
    _model_not_found,
    _bad_dataset,
    _environment,
)
"""In order: an out-of-memory error can surface as a dataset or NCCL error further down; a missing
package or an unusable dtype is the exception the run ended with; and the argument checks run
before swift touches the model or the data."""
