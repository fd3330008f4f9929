"""Which `model_type` and `template` ms-swift would use for a local model folder, decided before a
run rather than after swift has started and failed (`Failed to automatically match model_type ...
['qwen2', 'qwen2_gte']`).

Pure: the caller reads the folder's `config.json` and `args.json` and hands over ms-swift's own
registry (`ModelRegistry`, written by `daemon/intake/swift_models.py`). The rules follow swift's:

* a folder that swift wrote (`args.json`) names its own model_type and template;
* a model's name (the folder's, or the name the job wrote, such as `Qwen/Qwen2.5-7B-Instruct`)
  matching one of swift's known models gives both, when that model type fits the folder's
  architecture (`qwen-7b` names Qwen 1, which does not fit a `Qwen2ForCausalLM` folder);
* otherwise the architecture (`architectures[0]` in config.json) gives the candidates. Several
  (`['qwen2', 'qwen2_gte']`) are narrowed to the one named like config.json's own `model_type`;
  still several is a rejection naming them and the key to set;
* a template not given by a name or the folder is the model type's only template, or its first
  (swift lists the family's own first: `qwen` for qwen2), recorded as such.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["ModelRegistry", "Naming", "RegistryError", "infer_naming", "model_name"]

_HF_SNAPSHOT_RE = re.compile(r"/models--(?:.+?--)?(.+?)/snapshots/")


class RegistryError(ValueError):
    """The registry text cannot be used."""


@dataclass(frozen=True)
class ModelRegistry:
    """ms-swift's model registry, as far as choosing model_type and template needs it."""

    version: str
    templates: Mapping[str, tuple[str, ...]]
    """model_type -> its candidate templates, in swift's order."""
    architectures: Mapping[str, tuple[str, ...]]
    """An architecture (config.json) -> the model types swift matches it to, in swift's order."""
    names: Mapping[str, tuple[str, str | None]]
    """A known model's name (lower case, no organisation) -> its model_type and template."""
    packages: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """model_type -> the modules its loader imports before loading (absent: none known)."""

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelRegistry:
        try:
            body = json.loads(text)
            version = str(body["ms_swift_version"])
            templates = {str(k): tuple(map(str, v["templates"])) for k, v in body["types"].items()}
            arches = {str(k): tuple(map(str, v)) for k, v in body["architectures"].items()}
            names = {
                str(k): (str(v[0]), None if v[1] is None else str(v[1])) for k, v in body["names"].items()
            }
            packages = {
                str(k): tuple(map(str, v["packages"])) for k, v in body["types"].items() if "packages" in v
            }
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise RegistryError(f"not an ms-swift model registry: {exc!r}") from exc
        return cls(
            version,
            MappingProxyType(templates),
            MappingProxyType(arches),
            MappingProxyType(names),
            MappingProxyType(packages),
        )


@dataclass(frozen=True)
class Naming:
    """What was settled for one model, with where each value came from (None: left to swift)."""

    model_type: str | None = None
    model_type_source: str = ""
    template: str | None = None
    template_source: str = ""
    problem: tuple[str, str] | None = None
    """(what is wrong, the model types to choose from) when the model type cannot be used or told."""
    notes: tuple[str, ...] = field(default=())


def model_name(ref: str) -> str:
    """The name swift knows a model by: a Hugging Face cache snapshot's repository name, else the
    last part of the path or id, with ModelScope's `___` for `.` undone; lower case."""
    text = ref.rstrip("/").removeprefix("hf::").removeprefix("ms::")
    found = _HF_SNAPSHOT_RE.search(text)
    name = found.group(1) if found is not None else text.rsplit("/", 1)[-1]
    return name.replace("___", ".").lower()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _by_name(
    registry: ModelRegistry, names: Sequence[str], fitting: tuple[str, ...]
) -> tuple[str, str | None, str] | None:
    for name in names:
        hit = registry.names.get(model_name(name))
        if hit is not None and (not fitting or hit[0] in fitting):
            return hit[0], hit[1], f"ms-swift knows {model_name(name)}"
    return None


def _by_architecture(
    registry: ModelRegistry, config: Mapping[str, object], arch: str, fitting: tuple[str, ...], what: str
) -> Naming | tuple[str, str]:
    own = _text(config.get("model_type"))
    if len(fitting) == 1:
        return Naming(fitting[0], f"config.json: {arch}")
    narrowed = [t for t in fitting if t == own]
    if len(narrowed) == 1:
        return Naming(narrowed[0], f"config.json: {arch}, model_type {own}")
    return (
        f"{what}: ms-swift {registry.version} cannot tell its model_type from config.json "
        f"({arch}): it could be any of {', '.join(fitting)}",
        ", ".join(fitting),
    )


def infer_naming(
    registry: ModelRegistry,
    *,
    what: str,
    model_type: str | None,
    template: str | None,
    config: Mapping[str, object] | None,
    args: Mapping[str, object] | None,
    names: Sequence[str],
) -> Naming:
    """The model_type and template to run `what` (`model /models/x`) with, where the job gave none.

    `config` and `args` are the folder's config.json and args.json (None: absent or unreadable);
    `names` are what the model is called, the job's own name first."""
    if model_type is not None and model_type not in registry.templates:
        return Naming(problem=(f"{what}: ms-swift {registry.version} has no model_type {model_type!r}", ""))
    if model_type is not None and template is not None:
        return Naming()
    if args is not None and _text(args.get("model_type")) is not None:
        saved_type = model_type or _text(args.get("model_type"))
        return Naming(
            saved_type if model_type is None else None,
            "args.json of the folder",
            _text(args.get("template")) if template is None else None,
            "args.json of the folder",
        )
    raw = config.get("architectures") if config is not None else None
    arch = raw[0] if isinstance(raw, list) and raw and isinstance(raw[0], str) else None
    fitting = registry.architectures.get(arch, ()) if arch is not None else ()
    named = _by_name(registry, names, fitting)
    chosen: Naming
    if model_type is not None:
        chosen = Naming()
    elif named is not None:
        chosen = Naming(named[0], named[2])
    elif fitting and config is not None and arch is not None:
        found = _by_architecture(registry, config, arch, fitting, what)
        if isinstance(found, tuple):
            return Naming(problem=found)
        chosen = found
    else:
        return Naming()
    if template is not None:
        return chosen
    kind = model_type or chosen.model_type
    if named is not None and named[0] == kind and named[1] is not None:
        return _with_template(chosen, named[1], named[2])
    options = registry.templates.get(kind or "", ())
    if len(options) == 1:
        return _with_template(chosen, options[0], f"the only template of {kind}")
    if options:
        others = ", ".join(options[1:])
        return _with_template(
            chosen, options[0], f"the first of ms-swift's templates for {kind}; the others: {others}"
        )
    return chosen


def _with_template(chosen: Naming, template: str, source: str) -> Naming:
    return Naming(chosen.model_type, chosen.model_type_source, template, source)
