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
        "model_type_unmatched": 1,
        "template_unmatched": 1,
        "bf16_on_cpu": 1,
        "bfloat16_on_cpu": 1,
        "bnb_8bit": 1,
        "bnb_optimizer_missing": 1,
        "deepspeed_missing": 1,
        "flash_attn_missing": 1,
        "liger_missing": 1,
        "wandb_missing": 1,
        "hub_id_no_network": 1,
        "hub_id_no_network_modelscope": 1,
        "hub_id_offline": 1,
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


def test_model_type_not_matched_names_the_candidates() -> None:
    failure = fixture("model_type_unmatched")
    assert (failure.kind, failure.argument, failure.transient) == ("bad_argument", "--model_type", False)
    assert failure.reason == (
        "swift cannot tell the model's model_type: it could be qwen2, qwen2_gte; "
        "set `model_type: qwen2` in the job (or another of them)"
    )
    template = fixture("template_unmatched")
    assert (template.kind, template.argument) == ("bad_argument", "--template")
    assert "it could be qwen, qwen2_5, qwen2_5_math," in template.reason
    assert "set `template: qwen` in the job" in template.reason


@pytest.mark.parametrize("name", ["bf16_on_cpu", "bfloat16_on_cpu"])
def test_bf16_on_the_cpu(name: str) -> None:
    """`--bf16 true`, or `--torch_dtype bfloat16` (swift then turns bf16 on), on a CPU-only box."""
    failure = fixture(name)
    assert (failure.kind, failure.argument, failure.transient) == (
        "dtype_unsupported",
        "--torch_dtype",
        False,
    )
    assert "set `torch_dtype: float32` in the job" in failure.reason
    assert failure.exception is not None and "doesn't support bf16" in failure.exception


def test_bf16_on_an_older_gpu() -> None:
    line = (
        "ValueError: Your setup doesn't support bf16/gpu. You need to assign use_cpu if you want to train "
        "the model on CPU. You need Ampere+ GPU with cuda>=11.0."
    )
    failure = classify_failure([*TRACE, line], returncode=1)
    assert failure.kind == "dtype_unsupported" and "Ampere" in failure.reason
    assert "`torch_dtype: float16`" in failure.reason


def test_a_half_precision_kernel_missing_on_the_device() -> None:
    line = "RuntimeError: \"addmm_impl_cpu_\" not implemented for 'Half'"
    failure = classify_failure([*TRACE, line], returncode=1)
    assert failure.kind == "dtype_unsupported"
    assert failure.reason.startswith("float16 is not supported") and "float32" in failure.reason


@pytest.mark.parametrize(
    ("name", "package", "install"),
    [
        ("bnb_8bit", "bitsandbytes", "<venv>/bin/python -m pip install 'bitsandbytes>=0.46.1'"),
        ("bnb_optimizer_missing", "bitsandbytes", "<venv>/bin/python -m pip install bitsandbytes"),
        ("deepspeed_missing", "deepspeed", "<venv>/bin/python -m pip install deepspeed"),
        ("flash_attn_missing", "flash-attn", "<venv>/bin/python -m pip install flash-attn"),
        ("liger_missing", "liger-kernel", "<venv>/bin/python -m pip install liger-kernel"),
        ("wandb_missing", "wandb", "<venv>/bin/python -m pip install wandb"),
    ],
)
def test_a_missing_package_is_named_with_its_install_command(name: str, package: str, install: str) -> None:
    """The interpreter is the one whose site-packages the traceback runs through: where swift runs."""
    failure = fixture(name)
    assert (failure.kind, failure.transient) == ("missing_package", False)
    assert failure.reason == (
        f"the Python package {package} is not installed where swift runs; install it there: {install}"
    )


@pytest.mark.parametrize(
    ("line", "package"),
    [
        ("ModuleNotFoundError: No module named 'sklearn.metrics'", "scikit-learn"),
        ("ModuleNotFoundError: No module named 'vllm'", "vllm"),
        (
            "ImportError: LlamaTokenizer requires the protobuf library but it was not found in your "
            "environment. Check out the instructions on the installation page of its repo",
            "protobuf",
        ),
        ("importlib.metadata.PackageNotFoundError: No package metadata was found for deepspeed", "deepspeed"),
    ],
)
def test_python_and_transformers_missing_package_messages(line: str, package: str) -> None:
    failure = classify_failure([*TRACE, line], returncode=1)
    assert failure.kind == "missing_package"
    assert failure.reason.endswith(f"install it there: /x/venv/bin/python -m pip install {package}"), failure


def test_a_missing_module_named_on_the_line_after_the_exception() -> None:
    lines = [
        *TRACE,
        "RuntimeError: Failed to import transformers.integrations.deepspeed because of the following error "
        "(look up to see its traceback):",
        "No module named 'deepspeed'",
    ]
    failure = classify_failure(lines, returncode=1)
    assert failure.kind == "missing_package" and failure.reason.endswith("pip install deepspeed")


def test_a_missing_package_without_a_traceback_path_names_the_configured_interpreter() -> None:
    failure = classify_failure(["ModuleNotFoundError: No module named 'yaml'"], returncode=1)
    assert failure.reason.endswith("install it there: <the [swift] python> -m pip install pyyaml")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("hub_id_no_network", "and the HuggingFace Hub cannot be reached"),
        ("hub_id_offline", "and HuggingFace Hub downloads are off"),
        ("hub_id_no_network_modelscope", "and the ModelScope Hub cannot be reached"),
    ],
)
def test_a_hub_id_that_cannot_be_downloaded(name: str, why: str) -> None:
    failure = fixture(name)
    assert (failure.kind, failure.path, failure.transient) == (
        "model_not_found",
        "Qwen/Qwen2.5-0.5B-Instruct",
        False,
    )
    assert failure.reason.startswith(f"model Qwen/Qwen2.5-0.5B-Instruct is a hub id, {why}: ")
    assert "under [models] in the config" in failure.reason


def test_a_dataset_hub_failure_after_a_model_download_is_the_datasets() -> None:
    lines = [
        "[INFO:swift] Downloading the model from HuggingFace Hub, model_id: Qwen/Qwen2.5-0.5B-Instruct",
        "[INFO:swift] model_info: ...",
        *TRACE,
        "ConnectionError: Couldn't reach 'org/chat' on the Hub (ConnectionError)",
    ]
    failure = classify_failure(lines, returncode=1)
    assert (failure.kind, failure.path) == ("bad_dataset", "org/chat")


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
TRACE = [
    "Traceback (most recent call last):",
    '  File "/x/venv/lib/python3.11/site-packages/swift/cli/sft.py", line 20, in <module>',
]


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
    assert bare.reason == (
        "exited with an unknown status and printed no error; the log ends: [INFO:swift] Start time of running main"
    )
    assert (
        classify_failure([], returncode=None).reason == "exited with an unknown status and printed no error"
    )


def test_unknown_failures_quote_the_last_lines_after_the_exception() -> None:
    lines = [*TRACE, "KeyError: 'messages'", "cleanup 1", "cleanup 2", "cleanup 3", "cleanup 4"]
    failure = classify_failure(lines, returncode=1)
    assert failure.reason == (
        "exit status 1: KeyError: 'messages'; the log ends: cleanup 2 | cleanup 3 | cleanup 4"
    )


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
