"""What a job may make swift load: code only with the operator's consent, files only from folders the
operator named.

A dropped job file is untrusted input: whoever can write into the inbox must not thereby run code
as the daemon's user. ms-swift 4.6 imports Python files (`external_plugins`,
`custom_register_path`), puts folders on the import path (`local_repo_path`), lets vLLM import
classes by name (`vllm_engine_kwargs`), sets environment variables of the training process
(`model_kwargs`, which reach the dynamic loader and the caches compiled kernels load from), and
loads kernels from the hub when an attention implementation names a repository. All of that needs
`[swift] allow_code = true`. Arguments that swift opens as a file or folder (a deepspeed config,
`custom_dataset_info`, a JSON argument given as a path, ...) may name absolute paths only under
`[swift] allowed_paths`; relative ones resolve inside the run's own fresh folder, so only `..` and
`~` could leave it. The argument names are ms-swift 4.6.0's (`daemon/core/data/swift_args-4.6.0.json`).

Pure: the values as the file wrote them. Whether a model folder asks for remote code needs its
files read, which intake does (`daemon.intake.validate`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = [
    "MODEL_FOLDER_ARGS",
    "CodePolicy",
    "code_refusal",
    "path_refusal",
    "refusals",
]

SETTING = "set [swift] allow_code = true in llmtraind.toml to allow it"

CODE_ARGS: Mapping[str, str] = {
    "custom_register_path": "loads Python code",
    "external_plugins": "loads Python code",
    "local_repo_path": "puts a folder of Python code on the import path",
    "vllm_engine_kwargs": "passes engine arguments to vLLM, which can import classes by name",
    "trust_remote_code": "runs the Python code a model folder ships",
}
"""Arguments that load code whatever their value."""

_REGISTRY_NAMES = frozenset({"callbacks"})
"""Arguments that name registered plugins: a name is a lookup, a dotted or file name an import."""
_HUB_KERNELS = frozenset({"attn_impl", "experts_impl"})
"""transformers loads a kernel (Python and compiled code) from a hub repository named `org/name`."""

_ENV_PREFIXES = (
    "LD_",
    "DYLD_",
    "PYTHON",
    "PERL",
    "NODE_",
    "HF_",
    "TRANSFORMERS_",
    "TORCH",
    "TRITON",
    "CUDA",
    "NCCL",
    "SWIFT_",
    "VLLM_",
    "MODELSCOPE",
    "ACCELERATE_",
    "DS_",
    "DEEPSPEED",
    "XDG_",
)
_ENV_PARTS = ("PATH", "PRELOAD", "AUDIT", "LIB", "HOME", "DIR", "CACHE", "MODULE", "PLUGIN", "OPTIONS")
_ENV_NAMES = frozenset({"ENV", "BASH_ENV", "ZDOTDIR", "SHELL", "TMPDIR", "CC", "CXX"})
"""`model_kwargs` keys become environment variables of the training process (upper-cased). These
steer what the loader, Python, the hub libraries and kernel caches load; a model's own settings
(MAX_PIXELS, FPS, ...) stay allowed."""

PATH_ARGS = frozenset(
    {
        "accelerator_config",
        "cached_dataset",
        "cached_val_dataset",
        "chord_sft_dataset",
        "columns",
        "custom_dataset_info",
        "deepspeed",
        "device_map",
        "eval_dataset",
        "eval_dataset_args",
        "eval_generation_config",
        "extra_eval_args",
        "fsdp",
        "fsdp_config",
        "gradient_checkpointing_kwargs",
        "liger_kernel_config",
        "lr_scheduler_kwargs",
        "max_memory",
        "mcore_adapter",
        "mcore_model",
        "model_kwargs",
        "mrl_dims",
        "ref_adapters",
        "ref_model",
        "result_path",
        "reward_adapters",
        "rope_scaling",
        "ssl_certfile",
        "ssl_keyfile",
        "teacher_adapters",
        "teacher_deepspeed",
        "teacher_model",
        "teacher_model_server",
        "vllm_limit_mm_per_prompt",
        "vllm_speculative_config",
    }
)
"""Arguments whose string value swift opens when it is an existing file or folder (a config, a JSON
argument written as a path, a model or adapter folder, a cached dataset) or writes (result_path)."""
_TEXT_FILE_ARGS = frozenset({"new_special_tokens", "system"})
"""Arguments that swift reads from a file when the value ends in `.txt`."""

MODEL_FOLDER_ARGS = frozenset(
    {
        "mcore_adapter",
        "mcore_model",
        "ref_adapters",
        "ref_model",
        "reward_adapters",
        "teacher_adapters",
        "teacher_model",
    }
)
"""Arguments naming model or adapter folders, which swift loads trusting their remote code."""


@dataclass(frozen=True)
class CodePolicy:
    """The operator's `[swift]` settings that intake applies to every job."""

    allow_code: bool = False
    allowed_paths: tuple[str, ...] = ()
    """Absolute folders, as the config resolved them."""
    secret_env: tuple[str, ...] = ()
    """Environment variables of the daemon a job may name as a secret (`{env: NAME}`)."""
    secret_files: tuple[str, ...] = ()
    """Absolute folders whose files a job may name as a secret (`{file: /path}`)."""
    allow_public_deploy: bool = False
    """Whether a deploy job may bind an address other than loopback (it also needs an api_key)."""


def code_refusal(where: str, why: str) -> str:
    return f"{where} {why}; {SETTING}"


def _env_loads_code(key: str) -> bool:
    name = key.upper()
    return (
        name in _ENV_NAMES
        or name.startswith(_ENV_PREFIXES)
        or any(part in name for part in _ENV_PARTS)
        or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name)
    )


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def _code_reason(name: str, value: object) -> str | None:
    """Why this argument with this value makes swift load code, or None when it does not."""
    if name in CODE_ARGS:
        return CODE_ARGS[name]
    if name in _REGISTRY_NAMES:
        modules = [v for v in _strings(value) if any(ch in v for ch in "./:")]
        return f"names {modules[0]!r}, a module path, which imports Python code" if modules else None
    if name in _HUB_KERNELS:
        hub = [v for v in _strings(value) if "/" in v]
        return f"names {hub[0]!r}, a hub kernel, which loads its code" if hub else None
    if name == "model_kwargs":
        keys = _json_keys(value)
        if keys is None:
            return "names a file of environment variables for the training process"
        risky = sorted(k for k in keys if _env_loads_code(k))
        if risky:
            return (
                f"sets the environment variable {risky[0].upper()} of the training process, "
                "which can change what code or libraries it loads"
            )
    return None


def _json_keys(value: object) -> list[str] | None:
    """The keys of a mapping written inline (as YAML or as a JSON string); None for anything else,
    which swift would read as the path of a JSON file."""
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return [str(k) for k in parsed] if isinstance(parsed, dict) else None
    return None


def path_refusal(where: str, value: str, allowed: tuple[str, ...]) -> str | None:
    """Why swift must not open this path, or None when it lies inside an allowed folder or inside
    the run's own folder (relative, without `..`)."""
    if value.startswith("~"):
        return f"{where}: {value!r} names a file in a home folder; swift would read it as the daemon's user"
    path = PurePosixPath(value)
    if ".." in path.parts:
        return f"{where}: {value!r} leaves the run's folder through '..'"
    if not path.is_absolute():
        return None
    if any(path == PurePosixPath(root) or PurePosixPath(root) in path.parents for root in allowed):
        return None
    where_allowed = ", ".join(allowed) if allowed else "none are configured"
    return (
        f"{where}: {value!r} is outside the folders swift may read ({where_allowed}); "
        "add its folder to [swift] allowed_paths in llmtraind.toml"
    )


def _path_values(name: str, value: object) -> list[str]:
    """The strings in this value that swift would open as a path."""
    if name in _TEXT_FILE_ARGS:
        return [v for v in _strings(value) if v.endswith(".txt")]
    if name not in PATH_ARGS:
        return []
    return [v for v in _strings(value) if not v.lstrip().startswith(("{", "["))]


def refusals(where: str, name: str, value: object, policy: CodePolicy) -> list[str]:
    """Every reason the `swift:` argument `name` (written at `where`) is refused under `policy`."""
    found: list[str] = []
    if not policy.allow_code and (reason := _code_reason(name, value)) is not None:
        found.append(code_refusal(where, reason))
    for path in _path_values(name, value):
        if (problem := path_refusal(where, path, policy.allowed_paths)) is not None:
            found.append(problem)
    return found
