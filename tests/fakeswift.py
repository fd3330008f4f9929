"""A stand-in for `[swift] python` in tests that need runs of a chosen length or ending.

The wrapper is what the daemon runs as its interpreter (`<wrapper> -m swift.cli.sft --model M ...`).
When `--model` names a directory called `fake-model`, it plays swift: one logging.jsonl record and
one stdout line per step, `--max_steps` steps of FAKE_STEP_S each (after step N, silence while
`fake-model/hang_at_N` exists: a hang; once the pause file the daemon names in LLMTRAIND_PAUSE_FILE
exists, `checkpoint-N` and exit 0, as the pause callback does), a wait while `fake-model/hold`
exists, then the text in `fake-model/stderr` on stderr (an error swift would print) and the exit
status in `fake-model/exit_status` (0 if absent). It writes the GPU environment it was given to
`<output_dir>/fake_env.json`. Any other model runs the real interpreter with the same
arguments, so one daemon can run real swift and fake jobs side by side.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["FAKE_MODEL", "fake_model", "write_wrapper"]

FAKE_MODEL = "fake-model"

_WRAPPER = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
def value(flag, default=None):
    return args[args.index(flag) + 1] if flag in args else default
model = value("--model", "")
if os.path.basename(model.rstrip("/")) != "{fake}":
    os.execv({python!r}, [{python!r}, *args])
out = value("--output_dir")
steps = int(value("--max_steps", "10"))
step_s = float(os.environ.get("FAKE_STEP_S", "{step_s}"))
start = int(value("--resume_from_checkpoint", "checkpoint-0").rsplit("-", 1)[-1]) + 1
os.makedirs(out, exist_ok=True)
gpu_env = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NPROC_PER_NODE", "MASTER_PORT", "OMP_NUM_THREADS")
with open(os.path.join(out, "fake_env.json.tmp"), "w") as f:
    json.dump({{k: os.environ.get(k) for k in gpu_env}}, f)
os.replace(os.path.join(out, "fake_env.json.tmp"), os.path.join(out, "fake_env.json"))
for step in range(start, steps + 1):
    record = {{"loss": 1.0 / step, "learning_rate": 1e-4, "grad_norm": 1.0, "epoch": step / steps,
              "global_step/max_steps": f"{{step}}/{{steps}}", "elapsed_time": "0s",
              "remaining_time": "0s", "train_speed(s/it)": step_s}}
    with open(os.path.join(out, "logging.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\\n")
    print(f"fake step {{step}}/{{steps}}", flush=True)
    time.sleep(step_s)
    while os.path.exists(os.path.join(model, f"hang_at_{{step}}")):
        time.sleep(0.05)
    pause = os.environ.get("LLMTRAIND_PAUSE_FILE")
    if pause and os.path.exists(pause):
        saved = os.path.join(out, f"checkpoint-{{step}}")
        os.makedirs(saved, exist_ok=True)
        with open(os.path.join(saved, "trainer_state.json"), "w") as f:
            json.dump({{"global_step": step}}, f)
        sys.exit(0)
while os.path.exists(os.path.join(model, "hold")):
    time.sleep(0.05)
error = os.path.join(model, "stderr")
if os.path.exists(error):
    sys.stderr.write(open(error).read())
status = os.path.join(model, "exit_status")
sys.exit(int(open(status).read()) if os.path.exists(status) else 0)
"""


def write_wrapper(folder: Path, step_s: float = 0.1) -> Path:
    """The executable to give as `[swift] python`."""
    path = folder / "python-or-fake"
    path.write_text(_WRAPPER.format(python=sys.executable, fake=FAKE_MODEL, step_s=step_s))
    path.chmod(0o755)
    return path


def fake_model(folder: Path, exit_status: int = 0, stderr: str = "") -> Path:
    """A model directory the wrapper recognises; its runs end with `stderr`, then `exit_status`."""
    model = folder / FAKE_MODEL
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text("{}")
    if exit_status:
        (model / "exit_status").write_text(str(exit_status))
    if stderr:
        (model / "stderr").write_text(stderr)
    return model
