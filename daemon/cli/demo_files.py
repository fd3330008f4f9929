"""What `llmtraind demo` writes: three small datasets and four jobs, the same bytes on every run;
and, where swift can train a vision-language model, an image bundle with a LoRA VLM job and its merge.

Pure: the texts are values, so a test can check them against the daemon's own validators, and a
re-run's datasets are recognised by the daemon as the ones it already has.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw

__all__ = [
    "BUNDLE",
    "DPO",
    "MERGE",
    "PROJECT",
    "PT",
    "SFT",
    "VLM",
    "VLM_MERGE",
    "VLM_STEPS",
    "DemoJob",
    "demo_bundle",
    "demo_datasets",
    "demo_jobs",
    "demo_vlm_jobs",
    "next_run",
]

SFT, MERGE, DPO, PT = "demo-sft-lora", "demo-merge", "demo-dpo", "demo-pt"
"""Job names before the run number: `demo-sft-lora-3` is the third demo's LoRA job."""
VLM, VLM_MERGE = "demo-vlm-lora", "demo-vlm-merge"
BUNDLE = "demo_shapes.zip"
VLM_STEPS = 3
"""At most this many steps for the VLM job: each costs several times a text step on a CPU, and three
show the loss move and the pictures' tokens train (the demo's whole VLM part: about 1-2 minutes)."""
_SHAPES = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 60, 220), "yellow": (230, 200, 20)}
PROJECT = "demo"
ROWS = 32
"""Two optimizer steps per epoch at swift's default 16 samples per step: enough to see a loss move."""
SAVE_STEPS = 5
_RUN_RE = re.compile(rf"(?:{'|'.join(map(re.escape, (SFT, MERGE, DPO, PT, VLM, VLM_MERGE)))})-([0-9]{{1,9}})")
_HEADER = (
    "# Written by `llmtraind demo`: check it with `llmtraind check FILE`,\n"
    "# run it again (once this job has ended) with `llmtraind submit FILE`.\n"
)


def _sums() -> list[tuple[int, int]]:
    """Fixed two-digit pairs: the files are byte-identical on every run, so a re-run's drop of a
    dataset is recognised by the daemon as the one it already has."""
    return [(10 + 37 * i % 90, 10 + (53 * i + 17) % 90) for i in range(ROWS)]


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def demo_datasets() -> dict[str, bytes]:
    """File name -> bytes: conversations (SFT), preference pairs in the original design's
    prompt/chosen/rejected form (DPO), and plain documents (pretraining)."""
    pairs = _sums()
    sft = (
        {
            "messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
            ]
        }
        for a, b in pairs
    )
    dpo = (
        {
            "prompt": f"What is {a} plus {b}?",
            "chosen": f"{a} plus {b} is {a + b}.",
            "rejected": f"I do not know what {a} plus {b} is.",
        }
        for a, b in pairs
    )
    pt = ({"text": f"What is {a} plus {b}? {a} plus {b} is {a + b}."} for a, b in pairs)
    return {"demo_sft.jsonl": _jsonl(sft), "demo_dpo.jsonl": _jsonl(dpo), "demo_pt.jsonl": _jsonl(pt)}


@dataclass(frozen=True)
class DemoJob:
    """One demo job, with what `outcomes` needs to tell when it can never run."""

    name: str
    text: str
    """The job file's YAML."""
    needs: tuple[str, ...] = ()
    """Dataset file names it reads: if one is rejected, the job can never start."""
    after: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}.yaml"


def _yaml(fields: Mapping[str, Any]) -> str:
    return _HEADER + yaml.safe_dump(dict(fields), sort_keys=False, allow_unicode=True)


def demo_jobs(model: Path, run: int, steps: int) -> list[DemoJob]:
    """The four jobs of demo run `run`, each job after the ones it depends on.

    `gpus` is left out so the daemon's default applies (one GPU, or a CPU slot on a box without);
    the model is named by its absolute directory, as swift needs for offline runs.
    """
    sft, merge, dpo, pt = (f"{base}-{run}" for base in (SFT, MERGE, DPO, PT))

    def training(name: str, task: dict[str, Any], dataset: str) -> DemoJob:
        fields = {
            "name": name,
            "project": PROJECT,
            **task,
            "model": str(model),
            "model_type": "qwen2",  # the tiny model also matches qwen2_gte; swift wants to be told
            "template": "qwen",
            "dataset": dataset,
            "max_steps": steps,
            "save_steps": SAVE_STEPS,
        }
        return DemoJob(name, _yaml(fields), needs=(f"{dataset}.jsonl",))

    export = {"name": merge, "project": PROJECT, "task_type": "export", "adapters": f"@{sft}"}
    return [
        training(sft, {"task_type": "sft", "tuner": "lora"}, "demo_sft"),
        DemoJob(merge, _yaml({**export, "merge_lora": True}), after=(sft,)),
        training(dpo, {"task_type": "rl", "algorithm": "dpo", "tuner": "lora"}, "demo_dpo"),
        training(pt, {"task_type": "pretrain", "tuner": "full"}, "demo_pt"),
    ]


def _picture(colour: tuple[int, int, int], shape: str) -> bytes:
    """A 56x56 PNG (4 image tokens for the tiny VLM): a coloured square or disc on white."""
    image = Image.new("RGB", (56, 56), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    box = (10, 10, 45, 45)
    (draw.ellipse if shape == "disc" else draw.rectangle)(box, fill=colour)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def demo_bundle() -> bytes:
    """A multimodal bundle: one .jsonl and eight coloured shapes, byte-identical on every run (fixed
    member times), so a re-run's drop is the dataset the daemon already has."""
    members: dict[str, bytes] = {}
    rows = []
    for name, colour in _SHAPES.items():
        for shape in ("square", "disc"):
            path = f"shapes/{name}-{shape}.png"
            members[path] = _picture(colour, shape)
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": "<image>What colour is the shape?"},
                        {"role": "assistant", "content": f"The {shape} is {name}."},
                    ],
                    "images": [path],
                }
            )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in {"demo_shapes.jsonl": _jsonl(rows), **members}.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def demo_vlm_jobs(model: Path, run: int, steps: int) -> list[DemoJob]:
    """A LoRA run of the tiny Qwen2-VL on the shapes bundle (at most `VLM_STEPS`), then its merge."""
    tune, merge = f"{VLM}-{run}", f"{VLM_MERGE}-{run}"
    fields = {
        "name": tune,
        "project": PROJECT,
        "task_type": "sft",
        "tuner": "lora",
        "model": str(model),
        "model_type": "qwen2_vl",
        "template": "qwen2_vl",
        "dataset": BUNDLE.removesuffix(".zip"),
        "max_steps": min(steps, VLM_STEPS),
        "save_steps": min(steps, VLM_STEPS),
        "max_pixels": 3136,
        "freeze_vit": True,
    }
    export = {
        "name": merge,
        "project": PROJECT,
        "task_type": "export",
        "adapters": f"@{tune}",
        "merge_lora": True,
    }
    return [DemoJob(tune, _yaml(fields), needs=(BUNDLE,)), DemoJob(merge, _yaml(export), after=(tune,))]


def next_run(names: Iterable[str]) -> int:
    """One more than the highest demo run number among `names`: a live job's name cannot be
    taken again, and distinct names keep each run's jobs and `@` references apart."""
    runs = [int(m[1]) for name in names if (m := _RUN_RE.fullmatch(name))]
    return max(runs, default=0) + 1
