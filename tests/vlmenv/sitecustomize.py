"""Test environment only: lets the CUDA-only torchvision wheel import beside a CPU build of torch.

swift's Qwen2-VL processor needs qwen-vl-utils, which imports torchvision; for torch 2.13 the package
index has only torchvision's CUDA build, whose import under the CPU torch fails on
`register_fake("torchvision::nms")` (its C++ ops are not loaded, so the op has no schema). Defining
the two schemas just before torchvision is first imported lets it load; nothing here calls them.
With a CUDA torch the real ops load and this does nothing. `make vlm-env` puts torchvision and
qwen-vl-utils in build/vlm-site; the multimodal tests put this folder and that one on PYTHONPATH.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from typing import Any

_kept: list[Any] = []


class _TorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "torchvision":
            sys.meta_path.remove(self)
            torch: Any = importlib.import_module("torch")
            if torch.version.cuda is None:
                lib = torch.library.Library("torchvision", "DEF")
                lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                _kept.append(lib)


sys.meta_path.insert(0, _TorchvisionOps())
