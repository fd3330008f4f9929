"""Failed runs -> Failure: real log tails (tests/fixtures/swift/) and the GPU-only messages."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.runs.swift.failures import TAIL_LINES, Failure, classify_failure

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "swift"
CASES: dict[str, dict[str, object]] = json.loads((FIXTURES / "cases.json").read_text())


def fixture(name: str) -> Failure:
    returncode = CASES[name]["returncode"]
    assert isinstance(returncode, int)
    lines = (FIXTURES / f"{name}.log").read_text(encoding="utf-8").splitlines()
    return classify_failure(lines, returncode=returncode)


# ---------------------------------------------------------------------------------------------
# Real runs of ms-swift 4.6.0 on the tiny model (regenerate with capture.py)


def test_fixtures_are_real_failures() -> None:
    assert CASES["sft_lora"]["returncode"] == 0
    assert {name: case["returncode"] for name, case in CASES.items() if name != "sft_lora"} == {
        "bad_argument_value": 2,
        "bad_choice": 1,
        "bad_dataset_row": 1,
        "dataset_rows_dropped": 1,
        "missing_dataset": 1,
        "missing_model": 1,
        "sigterm": -signal.SIGTERM,
        "unknown_argument": 1,
    }


def test_bad_dataset_row() -> None:
    failure = fixture("bad_dataset_row")
    assert (failure.kind, failure.transient) == ("bad_dataset", False)
    assert (failure.path, failure.row) == ("<workdir>/data/bad_row.jsonl", 4)  # line 5 was cut off
    assert "line 5" in failure.reason and "JSON parse error" in failure.reason
    assert failure.exception is not None and failure.exception.startswith("pyarrow.lib.ArrowInvalid: ")


def test_missing_dataset() -> None:
    failure = fixture("missing_dataset")
    assert (failure.kind, failure.path) == ("bad_dataset", "<workdir>/data/nope.jsonl")
    assert failure.reason == "dataset <workdir>/data/nope.jsonl does not exist"


def test_every_row_dropped() -> None:
    failure = fixture("dataset_rows_dropped")
    assert failure.kind == "bad_dataset"
    assert "every row was dropped" in failure.reason and "rejected_response" in failure.reason
    assert failure.exception is not None and failure.exception.startswith("ZeroDivisionError")


def test_missing_model() -> None:
    failure = fixture("missing_model")
    assert (failure.kind, failure.path, failure.transient) == (
        "model_not_found",
        "<workdir>/nope-model",
        False,
    )


def test_unknown_argument() -> None:
    failure = fixture("unknown_argument")
    assert (failure.kind, failure.argument, failure.transient) == ("unknown_argument", "--bogus_arg", False)
    assert failure.exception == "ValueError: remaining_argv: ['--bogus_arg', '1']"


def test_bad_argument_value() -> None:
    failure = fixture("bad_argument_value")
    assert (failure.kind, failure.argument) == ("bad_argument", "--weight_decay")
    assert "invalid float value: 'abc'" in failure.reason


def test_bad_choice() -> None:
    failure = fixture("bad_choice")
    assert failure.kind == "bad_argument"
    assert failure.reason == "bogus is not a valid SchedulerType"


def test_sigterm_from_outside() -> None:
    failure = fixture("sigterm")
    assert (failure.kind, failure.signal, failure.transient) == ("killed", "SIGTERM", True)


def test_what_the_daemon_did_comes_first() -> None:
    lines = (FIXTURES / "sigterm.log").read_text().splitlines()
    cancelled = classify_failure(lines, returncode=-15, cancelled=True)
    assert (cancelled.kind, cancelled.signal, cancelled.transient) == ("cancelled", "SIGTERM", False)
    timed_out = classify_failure(lines, returncode=-9, timed_out=True)
    assert (timed_out.kind, timed_out.signal) == ("timeout", "SIGKILL")
    assert "timeout" in timed_out.reason


def test_one_string_is_split_into_lines() -> None:
    text = (FIXTURES / "unknown_argument.log").read_text()
    assert classify_failure(text, returncode=1) == fixture("unknown_argument")


# ---------------------------------------------------------------------------------------------
# Messages only a GPU box shows (from torch, NCCL and the reference notes)

OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
    "of 79.15 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.08 GiB memory "
    "in use. Of the allocated memory 76.9 GiB is allocated by PyTorch."
)
OOM_SHARED = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of "
    "23.65 GiB of which 11.06 MiB is free. Process 2839 has 6.38 GiB memory in use. Process 2907 has 17.24 GiB "
    "memory in use. Of the allocated memory 16.85 GiB is allocated by PyTorch."
)
TRACE = ["Traceback (most recent call last):", '  File "/x/sft.py", line 20, in <module>']


def test_gpu_out_of_memory_is_not_transient() -> None:
    failure = classify_failure([*TRACE, OOM], returncode=1)
    assert (failure.kind, failure.transient) == ("out_of_memory", False)
    assert "GPU memory" in failure.reason and "per_device_train_batch_size" in failure.reason
    assert failure.exception == OOM


def test_out_of_memory_beside_another_process_is_transient() -> None:
    assert classify_failure([*TRACE, OOM_SHARED], returncode=1).transient
    assert classify_failure([*TRACE, OOM], returncode=1, gpu_shared=True).transient


def test_host_out_of_memory() -> None:
    line = (
        "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory"
    )
    failure = classify_failure([*TRACE, line], returncode=1)
    assert (failure.kind, failure.transient) == ("out_of_memory", False)
    assert "host memory" in failure.reason


def test_torchrun_wrapper_points_at_the_cause() -> None:
    lines = [
        *TRACE,
        "ValueError: remaining_argv: ['--lora_rnak', '8']",
        "[rank0]: Traceback (most recent call last):",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "============================================================",
    ]
    failure = classify_failure(lines, returncode=1)
    assert (failure.kind, failure.argument) == ("unknown_argument", "--lora_rnak")


@pytest.mark.parametrize(
    ("line", "kind", "transient"),
    [
        (
            "torch.distributed.DistNetworkError: The server socket has failed to listen on any local network "
            "address. port: 29500, useIpv6: false, code: -98, name: EADDRINUSE, message: address already in use",
            "port_in_use",
            True,
        ),
        ("OSError: [Errno 98] Address already in use", "port_in_use", True),
        (
            "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error "
            "(run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5 ncclUnhandledCudaError",
            "gpu_error",
            True,
        ),
        (
            "RuntimeError: CUDA error: CUDA-capable device(s) is/are busy or unavailable",
            "gpu_error",
            True,
        ),
        ("OSError: [Errno 28] No space left on device", "disk_full", False),
        (
            "ValueError: Failed to automatically match model_type. Please explicitly provide the model_type. "
            "Multiple possible types found: ['qwen2', 'qwen2_gte']",
            "bad_argument",
            False,
        ),
        (
            "sft.py: error: ambiguous option: --lo could match --lora_rank, --lora_alpha",
            "unknown_argument",
            False,
        ),
        (
            "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder",
            "model_not_found",
            False,
        ),
        (
            "OSError: /m does not appear to have a file named config.json. Checkout 'https://huggingface.co//m/tree/None'",
            "model_not_found",
            False,
        ),
        (
            "ConnectionError: Couldn't reach 'data/nope.jsonl' on the Hub (OfflineModeIsEnabled)",
            "bad_dataset",
            False,
        ),
        ("[ERROR:swift] Dataset data/nope.jsonl load failed: subset_name=default", "bad_dataset", False),
    ],
)
def test_known_messages(line: str, kind: str, transient: bool) -> None:
    failure = classify_failure([*TRACE, line], returncode=1)
    assert (failure.kind, failure.transient) == (kind, transient), failure


def test_auto_match_names_the_key_to_add() -> None:
    line = "ValueError: Failed to automatically match template_type for /m. Please set --template."
    failure = classify_failure([line], returncode=1)
    assert failure.argument == "--template" and "`template:`" in failure.reason


@pytest.mark.parametrize(
    ("returncode", "kind", "name", "transient"),
    [
        (-signal.SIGKILL, "killed", "SIGKILL", False),
        (-signal.SIGTERM, "killed", "SIGTERM", True),
        (-signal.SIGINT, "killed", "SIGINT", True),
        (-signal.SIGSEGV, "unknown", "SIGSEGV", False),
        (-200, "unknown", "signal 200", False),
    ],
)
def test_signals(returncode: int, kind: str, name: str, transient: bool) -> None:
    failure = classify_failure(["Train:  10%|█ | 1/10"], returncode=returncode)
    assert (failure.kind, failure.signal, failure.transient) == (kind, name, transient)


def test_signal_given_apart_from_the_status() -> None:
    assert classify_failure([], returncode=None, signal=signal.SIGKILL).kind == "killed"


def test_unknown_failures_name_the_exception() -> None:
    failure = classify_failure([*TRACE, "KeyError: 'messages'", "Train: 100%|"], returncode=1)
    assert failure == Failure(
        "unknown", False, "exit status 1: KeyError: 'messages'", exception="KeyError: 'messages'"
    )
    bare = classify_failure(["[INFO:swift] Start time of running main"], returncode=None)
    assert bare.reason == "exited with an unknown status and printed no error"


def test_only_the_tail_is_read() -> None:
    lines = [*TRACE, OOM, *(["[INFO:swift] noise"] * TAIL_LINES)]
    assert classify_failure(lines, returncode=1).kind == "unknown"


def test_reason_is_one_short_line() -> None:
    long = "ValueError: " + "x\ty " * 500
    failure = classify_failure(["\x1b[31m" + long + "\x1b[0m"], returncode=1)
    assert "\n" not in failure.reason and "\t" not in failure.reason and len(failure.reason) <= 300
    assert failure.exception is not None and not failure.exception.startswith("\x1b")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(max_size=200), max_size=20) | st.text(max_size=2000),
    st.none() | st.integers(-300, 300),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_any_log_gives_a_failure(
    log: list[str] | str, returncode: int | None, cancelled: bool, timed_out: bool, shared: bool
) -> None:
    failure = classify_failure(
        log, returncode=returncode, cancelled=cancelled, timed_out=timed_out, gpu_shared=shared
    )
    assert failure.reason and "\n" not in failure.reason and len(failure.reason) <= 300
    assert failure.kind == "cancelled" if cancelled else failure.kind != "cancelled"
