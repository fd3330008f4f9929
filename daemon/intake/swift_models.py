"""Print ms-swift's model registry as JSON: what `model_type` and `template` swift would pick for a
model folder, so intake can settle them before a run instead of swift failing after start-up.

The table is read through swift's own lookups (`get_matched_model_meta` for a model's name,
`get_matched_model_types` for an architecture, `ModelMeta.candidate_templates`), never re-derived.
`packages` names what a model type's loader imports before it loads anything: the Qwen-VL loaders
check `qwen_vl_utils` (which imports torchvision) when they build the processor, and a run without
them fails after start-up (`PackageNotFoundError: ... 'qwen_vl_utils'`, measured). `ModelMeta.requires`
is not used for this: it also lists what only some inputs need (`decord`, for video).
A table for ms-swift 4.6.0 is bundled (`daemon/core/data/swift_models-4.6.0.json`, written by
`python daemon/intake/swift_models.py > ...`); for another version intake runs this file under the
interpreter that has ms-swift.

Only the standard library is imported at the top, so that this file also runs as a plain script
under an interpreter that has ms-swift but not the daemon installed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from typing import Any

__all__ = ["main", "registry_json"]

_QWEN_VL_PACKAGES = ("qwen_vl_utils", "torchvision")


def registry_json() -> str:
    """The registry of the ms-swift importable here (slow: importing swift takes seconds)."""
    with contextlib.redirect_stdout(sys.stderr):  # swift logs while importing
        swift = importlib.import_module("swift")
        meta_module = importlib.import_module("swift.model.model_meta")
    mapping: dict[str, Any] = meta_module.MODEL_MAPPING
    types: dict[str, Any] = {}
    arches: dict[str, list[str]] = {}
    names: dict[str, list[str | None]] = {}
    for model_type, meta in mapping.items():
        types[model_type] = {
            "architectures": [a for a in meta.architectures if a != "null"],
            "templates": list(meta.candidate_templates),
        }
        if hasattr(meta.loader, "_check_qwen_vl_utils"):
            types[model_type]["packages"] = list(_QWEN_VL_PACKAGES)
        for arch in types[model_type]["architectures"]:
            arches.setdefault(arch, list(meta_module.get_matched_model_types([arch])))
        for group in meta.model_groups:
            for model in group.models:
                for value in (model.ms_model_id, model.hf_model_id, model.model_path):
                    if not isinstance(value, str):
                        continue
                    name = value.rsplit("/", 1)[-1].lower()
                    if name not in names:
                        found = meta_module.get_matched_model_meta(name)
                        names[name] = [found.model_type, found.template] if found else [None, None]
    body = {
        "ms_swift_version": str(swift.__version__),
        "types": types,
        "architectures": arches,
        "names": {k: v for k, v in names.items() if v[0] is not None},
    }
    return json.dumps(body, indent=0, sort_keys=True) + "\n"


def main() -> int:
    try:
        text = registry_json()
    except (ImportError, AttributeError) as exc:
        print(f"cannot read ms-swift's model registry: {exc!r}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
