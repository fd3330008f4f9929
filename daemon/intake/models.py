"""A job's models as this box has them: names become local folders, and a local folder's
model_type and template are settled, at intake, so that a job that cannot find or load its model
is rejected with what to change instead of failing after it was scheduled.

A model named by a name rather than a folder (`qwen-7b`, `Qwen/Qwen2.5-7B-Instruct`) is looked up
in `[models]` first; then, with `[swift] offline = true`, in the Hugging Face cache
(`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`: `models--ORG--NAME`, the
snapshot `refs/main` names) and the ModelScope cache (`MODELSCOPE_CACHE`, else
`~/.cache/modelscope/hub`: `models/ORG/NAME` or `ORG/NAME`). Online, a name found nowhere is left
to swift, which downloads it. What was found is recorded in the spec (`JobSpec.resolved`).

ms-swift's registry comes from `swift_models.py`: bundled for ms-swift 4.6.0, else read once by
running that file under the daemon's interpreter (seconds: it imports swift), in the calling thread.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from daemon.core.jobs import JobProblem, JobSpec, ModelRef, Resolution
from daemon.core.models import ModelRegistry, Naming, RegistryError, infer_naming
from daemon.core.swift_args import BUNDLED_VERSION

__all__ = ["find_model", "registry", "settle_models"]

_MAX_JSON_BYTES = 16 * 1024 * 1024
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_BOOTSTRAP = (
    "import runpy, sys; "
    "sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)
_SCRIPT = str(Path(__file__).with_name("swift_models.py"))
_INTROSPECT_TIMEOUT_S = 300.0
_lock = threading.Lock()
_registry: list[ModelRegistry | RegistryError] = []
_NAMING_ARGS = {"reward_model": ("reward_model_type", "reward_template")}
"""swift arguments that carry a model's model_type and template, other than the job's main model."""


def _bundled() -> ModelRegistry:
    path = resources.files("daemon.core").joinpath("data", f"swift_models-{BUNDLED_VERSION}.json")
    return ModelRegistry.from_json(path.read_bytes())


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("ms-swift")
    except importlib.metadata.PackageNotFoundError:
        return None


def _introspect(python: str) -> ModelRegistry:
    try:
        done = subprocess.run(
            [python, "-c", _BOOTSTRAP, _SCRIPT],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_INTROSPECT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"cannot run {python!r} to read ms-swift's model registry: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RegistryError(
            f"{python!r} could not read ms-swift's model registry (exit {done.returncode}): "
            + " / ".join(tail)
        )
    return ModelRegistry.from_json(done.stdout)


def registry() -> ModelRegistry:
    """ms-swift's registry: the bundled one when the ms-swift installed beside the daemon is the
    bundled version (or there is none), else read once from it. The argument lists are chosen the
    same way (`validate.local_swift_args`), so a job is checked against one ms-swift throughout."""
    with _lock:
        if not _registry:
            try:
                local = _installed_version() in (None, BUNDLED_VERSION)
                _registry.append(_bundled() if local else _introspect(sys.executable))
            except RegistryError as exc:
                _registry.append(exc)  # one failed introspection is enough: it takes seconds
        found = _registry[0]
    if isinstance(found, RegistryError):
        raise found
    return found


def _cache_roots(environ: Mapping[str, str]) -> tuple[Path, Path]:
    home = Path(environ.get("HOME") or Path.home())
    hf = environ.get("HF_HUB_CACHE") or (
        str(Path(environ["HF_HOME"]) / "hub") if environ.get("HF_HOME") else None
    )
    ms = environ.get("MODELSCOPE_CACHE")
    return (
        Path(hf) if hf else home / ".cache" / "huggingface" / "hub",
        Path(ms) if ms else home / ".cache" / "modelscope" / "hub",
    )


def _hf_snapshot(root: Path, hub_id: str) -> Path | None:
    repo = root / ("models--" + hub_id.replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        revision = ""
    if revision and "/" not in revision and (repo / "snapshots" / revision).is_dir():
        return repo / "snapshots" / revision
    try:
        snapshots = [p for p in (repo / "snapshots").iterdir() if p.is_dir()]
    except OSError:
        return None
    return snapshots[0] if len(snapshots) == 1 else None


def _ms_folder(root: Path, hub_id: str) -> Path | None:
    org, _, name = hub_id.rpartition("/")
    for leaf in dict.fromkeys((name, name.replace(".", "___"))):
        for base in (root / "models", root):
            folder = (base / org / leaf) if org else base / leaf
            if (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file():
                return folder
    return None


def find_model(
    name: str, models: Mapping[str, Path], offline: bool, environ: Mapping[str, str]
) -> tuple[Path | None, str] | None:
    """Where a model name is on this box: (folder, where from); (None, why) when `[models]` maps
    it to something that is not a folder; None when it is found nowhere."""
    bare = name.removeprefix("hf::").removeprefix("ms::")
    for key in dict.fromkeys((name, bare)):
        if key in models:
            folder = models[key]
            return (folder, "[models]") if folder.is_dir() else (None, f"[models] maps it to {folder}")
    if not offline:
        return None
    hf_root, ms_root = _cache_roots(environ)
    if not name.startswith("ms::") and (found := _hf_snapshot(hf_root, bare)) is not None:
        return found, "Hugging Face cache"
    if not name.startswith("hf::") and (found := _ms_folder(ms_root, bare)) is not None:
        return found, "ModelScope cache"
    return None


def _toml_key(name: str) -> str:
    return name if _BARE_KEY_RE.fullmatch(name) else json.dumps(name)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_JSON_BYTES + 1)
        body = json.loads(data) if len(data) <= _MAX_JSON_BYTES else None
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


class _Settle:
    """One job's settling: the spec's updates, what was resolved, and the problems found."""

    def __init__(
        self,
        spec: JobSpec,
        models: Mapping[str, Path],
        offline: bool,
        environ: Mapping[str, str],
    ) -> None:
        self.spec = spec
        self.models = models
        self.offline = offline
        self.environ = environ
        self.update: dict[str, object] = {}
        self.swift_args = dict(spec.swift_args)
        self.resolved: list[Resolution] = []
        self.problems: list[JobProblem] = []

    def folder(self, key: str, ref: ModelRef | None) -> ModelRef | None:
        """The reference with a name replaced by the local folder it is, if found."""
        if ref is None or ref.kind != "hub":
            return ref
        found = find_model(ref.ref, self.models, self.offline, self.environ)
        if found is not None and found[0] is not None:
            folder = str(found[0].resolve())
            self.resolved.append(Resolution(key=key, given=ref.ref, value=folder, source=found[1]))
            return ModelRef(kind="path", ref=folder)
        if found is not None:
            self.problems.append(
                JobProblem(
                    field=key,
                    message=f"{key} {ref.ref}: {found[1]}, which is not a folder",
                    hint="fix the folder under [models] in llmtraind.toml (a relative folder is "
                    "relative to the config file)",
                )
            )
        elif self.offline:
            hf_root, ms_root = _cache_roots(self.environ)
            self.problems.append(
                JobProblem(
                    field=key,
                    message=f"{key} {ref.ref}: not a folder, not in [models], not in the Hugging Face or "
                    f"ModelScope cache under {hf_root} or {ms_root}",
                    hint=f'add `{_toml_key(ref.ref)} = "/path/to/the/model"` under [models] in '
                    "llmtraind.toml, or set [swift] offline = false to let swift download it",
                )
            )
        return ref

    def naming(self, key: str, ref: ModelRef | None, given: ModelRef | None, keys: tuple[str, str]) -> Naming:
        """model_type and template for a local folder, where the job gave none; where the folder is
        not here, or the job gave both, only a model_type it gave is checked against the registry."""
        if ref is None or ref.kind != "path":
            return Naming()
        folder = Path(ref.ref)
        type_key, template_key = keys
        current = (self.current(type_key), self.current(template_key))
        infer = None in current and folder.is_dir()
        if not infer and current[0] is None:
            return Naming()
        try:
            table = registry()
        except RegistryError as exc:
            return Naming(notes=(f"{key}: model_type and template not checked or inferred: {exc}",))
        names = [given.ref] if given is not None and given.kind == "hub" else []
        return infer_naming(
            table,
            what=f"{key} {ref.ref}",
            model_type=current[0],
            template=current[1] if infer else "",
            config=_read_json(folder / "config.json") if infer else None,
            args=_read_json(folder / "args.json") if infer else None,
            names=[*names, ref.ref],
        )

    def current(self, key: str) -> str | None:
        if key in ("model_type", "template"):
            value = self.update.get(key, getattr(self.spec, key))
        else:
            value = self.swift_args.get(key)
        return value if isinstance(value, str) else None

    def apply(self, key: str, naming: Naming, keys: tuple[str, str]) -> None:
        type_key, template_key = keys
        if naming.problem is not None:
            message, choices = naming.problem
            first = choices.split(", ")[0] if choices else ""
            shown = (
                f"`{type_key}: {first}`" if type_key == "model_type" else f"`swift: {{{type_key}: {first}}}`"
            )
            hint = (
                f"set {shown} (or another of {choices}) in the job"
                if choices
                else (
                    f"set {type_key} to a model type of the installed ms-swift, or leave it out to infer it"
                )
            )
            self.problems.append(JobProblem(field=type_key, message=message, hint=hint))
            return
        for name, value, source in (
            (type_key, naming.model_type, naming.model_type_source),
            (template_key, naming.template, naming.template_source),
        ):
            if value is None:
                continue
            if name in ("model_type", "template"):
                self.update[name] = value
            else:
                self.swift_args[name] = value
            shown = name if name in ("model_type", "template") else f"swift.{name}"
            self.resolved.append(Resolution(key=shown, value=value, source=source))


def settle_models(
    spec: JobSpec,
    models: Mapping[str, Path],
    *,
    offline: bool,
    environ: Mapping[str, str] | None = None,
) -> tuple[JobSpec, list[JobProblem]]:
    """The spec with its model names made folders and its models' types settled (each recorded in
    `resolved`), or the problems that keep it from running here. Blocking: it reads files, and
    the first time perhaps introspects swift for seconds."""
    s = _Settle(spec, models, offline, os.environ if environ is None else environ)
    model = s.folder("model", spec.model)
    adapters = s.folder("adapters", spec.adapters)
    reward = s.folder("reward_model", spec.reward_model)
    if s.problems:
        return spec, s.problems
    notes: list[str] = []
    for key, ref, given, keys in (
        ("model", model, spec.model, ("model_type", "template")),
        ("reward_model", reward, spec.reward_model, _NAMING_ARGS["reward_model"]),
    ):
        naming = s.naming(key, ref, given, keys)
        notes += naming.notes
        s.apply(key, naming, keys)
    if s.problems:
        return spec, s.problems
    if not s.resolved and not notes:
        return spec, []
    settled = spec.model_copy(
        update={
            **s.update,
            "model": model,
            "adapters": adapters,
            "reward_model": reward,
            "swift_args": s.swift_args,
            "resolved": (*spec.resolved, *s.resolved),
            "notes": (*spec.notes, *notes),
        }
    )
    return settled, []
