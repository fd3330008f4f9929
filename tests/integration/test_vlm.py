"""A vision-language model end to end on the CPU, with real ms-swift: an image bundle dropped, a LoRA
run on the tiny Qwen2-VL, its merge, and a deployment that answers a chat request carrying a picture.

swift needs qwen-vl-utils (and so torchvision) for Qwen2-VL; `make vlm-env` installs them into
build/vlm-site, and the daemon here runs with that folder and tests/vlmenv on PYTHONPATH.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.integration.test_runs import DIRECT, RUNS, assert_no_process_left, finished, job, maybe_job
from tests.mediafiles import make_zip, png, rows_bytes

pytestmark = [pytest.mark.extended, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "build" / "vlm-site"
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}


@pytest.fixture(scope="module")
def vlm_env() -> dict[str, str]:
    if not SITE.is_dir():
        pytest.skip("make vlm-env installs torchvision and qwen-vl-utils into build/vlm-site")
    return {"PYTHONPATH": f"{ROOT / 'tests' / 'vlmenv'}{os.pathsep}{SITE}"}


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory, vlm_env: dict[str, str]) -> Path:
    dest = tmp_path_factory.mktemp("vlm") / "tiny-qwen2-vl"
    builder = ROOT / "daemon" / "cli" / "tinyvlm.py"
    subprocess.run(
        [sys.executable, str(builder), str(dest)], env=os.environ | vlm_env, check=True, timeout=180
    )
    return dest


def shapes_bundle(folder: Path) -> Path:
    rows = []
    members = {}
    for name, colour in COLOURS.items():
        members[f"img/{name}.png"] = png(colour)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": "<image>What colour is this?"},
                    {"role": "assistant", "content": f"It is {name}."},
                ],
                "images": [f"img/{name}.png"],
            }
        )
    return make_zip(folder / "shapes.zip", {"shapes.jsonl": rows_bytes(*rows, *rows), **members})


def test_image_bundle_lora_merge_deploy_answer_cancel(
    daemon_factory: type[Daemon], tmp_path: Path, tiny_vlm: Path, vlm_env: dict[str, str]
) -> None:
    d = daemon_factory(tmp_path / "d", extra_config=RUNS, env=vlm_env).start()
    d.drop("shapes.zip", shapes_bundle(tmp_path).read_bytes())
    vlm = f"model: {json.dumps(str(tiny_vlm))}\nmodel_type: qwen2_vl\ntemplate: qwen2_vl\n"
    d.drop(
        "tune.yaml",
        f"task_type: lora\n{vlm}dataset: shapes\nmax_steps: 3\nsave_steps: 3\nlogging_steps: 1\n"
        "per_device_train_batch_size: 1\ngradient_accumulation_steps: 1\ntorch_dtype: float32\n"
        "max_pixels: 3136\nfreeze_vit: true\n",
    )
    d.drop("merge.yaml", 'task_type: export\nadapters: "@tune"\n')
    d.drop("serve.yaml", 'task_type: deploy\nmodel: "@merge"\nmodel_type: qwen2_vl\ntemplate: qwen2_vl\n')

    dataset = d.wait_for(
        "the bundle accepted",
        lambda: (r := d.get("/v1/datasets/shapes"))[0] == 200 and r[1].get("state") == "ready" and r[1],
        60,
    )
    assert dataset["stats"]["media"]["images"] == 8 and dataset["stats"]["media"]["files"] == 4

    tune = finished(d, "tune", 240)
    assert tune["state"] == "succeeded", tune
    metrics = d.get("/v1/jobs/tune/metrics")[1]["metrics"]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [1, 2, 3]
    log = Path(tune["run"]["log"]).read_text(errors="replace")
    assert "[151655 * 4]" in log, "the image placeholder was not expanded into the picture's tokens"
    argv = tune["run"]["argv"]
    assert argv[argv.index("--max_pixels") + 1] == "3136"

    merge = finished(d, "merge", 180)
    assert merge["state"] == "succeeded", merge
    assert any(Path(merge["final_model"]).glob("*.safetensors"))

    serving = d.wait_for("the deployment serving", lambda: maybe_job(d, "serve").get("serving"), 180)
    picture = "data:image/png;base64," + base64.b64encode(png(COLOURS["red"])).decode()
    content = [{"type": "image_url", "image_url": {"url": picture}}, {"type": "text", "text": "What colour?"}]
    ask = {"model": serving["models"][0], "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    request = urllib.request.Request(
        serving["openai_base"] + "/chat/completions",
        data=json.dumps(ask).encode(),
        headers={"Content-Type": "application/json"},
    )
    with DIRECT.open(request, timeout=120) as resp:
        answer = json.loads(resp.read())
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["prompt_tokens"] > 4

    assert d.cli("cancel", "serve").returncode == 0
    body = finished(d, "serve", 60)
    assert body["state"] == "cancelled"
    assert_no_process_left(d, body)
    assert job(d, "tune")["state"] == "succeeded"
