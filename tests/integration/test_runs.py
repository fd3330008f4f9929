"""Real ms-swift runs on the tiny model, through a running daemon: drop files, watch the API.

Each swift process costs about 10 s of start-up on these machines, so every test here runs as
few of them as its point needs, with `gradient_accumulation_steps: 1` and a handful of steps.
One CPU slot: the runs take turns, as they would on a CPU-only box.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon, session_members

pytestmark = pytest.mark.timeout(300)

RUNS = """
[runs]
stop_grace_s = 3
poll_s = 0.2
schedule_s = 0.5
"""


def sft_rows(n: int = 16) -> str:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"What is {i} plus {i}?"},
                    {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
                ]
            }
        )
        + "\n"
        for i in range(n)
    )


def preference_rows(n: int = 16) -> str:
    """The original management API's preference format."""
    return "".join(
        json.dumps({"prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": f"Not {i}, but {i + 1}."}) + "\n"
        for i in range(n)
    )


def text_rows(n: int = 16) -> str:
    return "".join(
        json.dumps({"text": f"Line {i}: the quick brown fox jumps over {i} dogs."}) + "\n" for i in range(n)
    )


MODEL_KEY = {"sft": "model_name", "pretrain": "model_name", "lora": "base_model", "rl": "policy_model"}
"""Where the management API's job format names the model, per task type."""


def job_yaml(model: Path | str, task_type: str, **keys: Any) -> str:
    """A management-API job on `model`; `keys` add or override YAML keys."""
    fields: dict[str, Any] = {
        "task_type": task_type,
        MODEL_KEY[task_type]: str(model),
        "model_type": "qwen2",
        "template": "qwen",
        "gradient_accumulation_steps": 1,
        "max_steps": 3,
        **keys,
    }
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items())


def job(d: Daemon, ref: str) -> dict[str, Any]:
    code, body = d.get(f"/v1/jobs/{ref}")
    assert code == 200, body
    return dict(body)


def maybe_job(d: Daemon, ref: str) -> dict[str, Any]:
    """The job, or {} while intake has not recorded it yet."""
    code, body = d.get(f"/v1/jobs/{ref}")
    return dict(body) if code == 200 else {}


def wait_state(d: Daemon, ref: str, states: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        code, body = d.get(f"/v1/jobs/{ref}")
        return body if code == 200 and body["state"] in states else None

    found: dict[str, Any] = d.wait_for(f"job {ref} in {states}", check, timeout)
    return found


def finished(d: Daemon, ref: str, timeout: float = 120) -> dict[str, Any]:
    return wait_state(d, ref, ("succeeded", "failed", "cancelled"), timeout)


def started_order(d: Daemon) -> list[str]:
    code, page = d.get("/v1/events?limit=1000")
    assert code == 200
    names = {j["id"]: j["name"] for j in d.get("/v1/jobs")[1]["jobs"]}
    return [names[e["data"]["job_id"]] for e in page["events"] if e["type"] == "JobStarted"]


def assert_no_process_left(d: Daemon, body: dict[str, Any]) -> None:
    state_dir = Path(body["run"]["run_dir"])
    sid = json.loads((state_dir / "supervisor.json").read_text())["sid"]
    assert session_members(sid) == [], f"processes of job {body['name']} still running"


@pytest.fixture
def daemon(daemon_factory: type[Daemon], tmp_path: Path) -> Daemon:
    return daemon_factory(tmp_path / "d", extra_config=RUNS).start()


def test_lora_then_merge_dropped_together(daemon: Daemon, tiny_model: Path) -> None:
    """SFT LoRA and the export that merges it, dropped at once: the export waits for its parent,
    then merges the parent's final checkpoint into a model on disk."""
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("tune.yaml", job_yaml(tiny_model, "lora", dataset="chat", max_steps=4, save_steps=2))
    d.drop("merge.yaml", 'task_type: export\nadapters: "@tune"\n')

    running = wait_state(d, "tune", ("running",), 60)
    assert running["gpus"] == 0
    # merge.yaml may be taken in after tune started: its reason comes with the next decision.
    waiting = d.wait_for(
        "merge's reason", lambda: "after job tune" in (j := job(d, "merge"))["reason"] and j, 30
    )
    assert waiting["state"] == "queued", waiting

    tune = finished(d, "tune")
    assert tune["state"] == "succeeded", tune
    assert tune["progress"]["percent"] == 100.0 and tune["progress"]["step"] == 4
    metrics = d.get("/v1/jobs/tune/metrics")[1]["metrics"]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [1, 2, 3, 4]
    assert all(
        m["loss"] is not None and m["learning_rate"] is not None for m in metrics if m["kind"] == "train"
    )
    artifacts = d.get("/v1/jobs/tune/artifacts")[1]
    final = artifacts["final_checkpoint"]
    assert final.endswith("checkpoint-4") and Path(final, "adapter_model.safetensors").is_file()
    listed = {Path(a["path"]).name: a for a in artifacts["artifacts"]}
    assert listed["checkpoint-2"]["kind"] == "adapter" and listed["checkpoint-2"]["bytes"] > 0

    merge = finished(d, "merge")
    assert merge["state"] == "succeeded", merge
    argv = merge["run"]["argv"]
    assert argv[argv.index("--adapters") + 1] == final
    model = Path(merge["final_model"])
    assert (model / "config.json").is_file() and any(model.glob("*.safetensors"))
    assert "-m" in argv and "swift.cli.export" in argv


def test_full_pretrain_and_dpo_take_the_slot_in_priority_order(daemon: Daemon, tiny_model: Path) -> None:
    """Three jobs queued behind a running one on one CPU slot start by priority, one at a time,
    and each task type trains to the end."""
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("prefs.jsonl", preference_rows())
    d.drop("corpus.jsonl", text_rows())
    d.drop("first.yaml", job_yaml(tiny_model, "sft", dataset="chat", max_steps=2))
    wait_state(d, "first", ("running",), 60)
    d.drop("full.yaml", job_yaml(tiny_model, "sft", tuner="full", dataset="chat", priority=1))
    d.drop("pretrain.yaml", job_yaml(tiny_model, "pretrain", dataset="corpus", priority=5))
    d.drop("dpo.yaml", job_yaml(tiny_model, "rl", algorithm="dpo", dataset="prefs", priority=9))

    def placed(name: str) -> bool:
        code, body = d.get(f"/v1/jobs/{name}")
        return code == 200 and (body["state"] != "queued" or bool(body["reason"]))

    d.wait_for("three jobs placed or told why not", lambda: all(map(placed, ("full", "pretrain", "dpo"))))
    assert "CPU slot" in job(d, "dpo")["reason"] or job(d, "dpo")["state"] != "queued"

    for name in ("first", "dpo", "pretrain", "full"):
        body = finished(d, name, 180)
        assert body["state"] == "succeeded", (name, body["reason"], body["run"]["exit"])
        assert body["progress"]["percent"] == 100.0
    assert started_order(d) == ["first", "dpo", "pretrain", "full"]
    full = job(d, "full")
    assert full["final_model"] is not None and Path(full["final_model"], "model.safetensors").is_file()
    assert "--rlhf_type" in job(d, "dpo")["run"]["argv"]
    pt_argv = job(d, "pretrain")["run"]["argv"]
    assert "swift.cli.pt" in pt_argv and pt_argv[pt_argv.index("--tuner_type") + 1] == "full"


def test_cancel_during_training_frees_the_slot(daemon: Daemon, tiny_model: Path) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("long.yaml", job_yaml(tiny_model, "lora", dataset="chat", max_steps=5000))
    d.wait_for(
        "a training step", lambda: (maybe_job(d, "long").get("progress") or {}).get("step", 0) >= 1, 120
    )
    result = d.cli("cancel", "long")
    assert result.returncode == 0, result.stderr
    body = finished(d, "long", 60)
    assert body["state"] == "cancelled"
    assert body["run"]["exit"]["stopped"] == "cancel"
    assert_no_process_left(d, body)
    d.drop("next.yaml", job_yaml(tiny_model, "lora", dataset="chat", max_steps=1))
    wait_state(d, "next", ("running", "succeeded"), 60)


def test_failures_are_classified_with_their_evidence(daemon: Daemon, tiny_model: Path) -> None:
    """A missing model directory, and a dataset row that swift cannot parse (the converted copy
    damaged on disk after intake accepted it): each run fails with its reason and the line."""
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("nomodel.yaml", job_yaml("/nonexistent/model", "lora", dataset="chat"))
    body = finished(d, "nomodel")
    assert body["state"] == "failed"
    failure = body["run"]["exit"]["failure"]
    assert failure["kind"] == "model_not_found", failure
    assert "/nonexistent/model" in body["reason"]
    assert any("/nonexistent/model" in line for line in body["run"]["exit"]["log_tail"])

    sha = d.get("/v1/datasets/chat")[1]["sha256"]
    converted = d.state / "blobs" / "converted" / f"{sha}.jsonl"
    lines = converted.read_text().splitlines(keepends=True)
    lines[4] = lines[4][: len(lines[4]) // 2] + "\n"
    os.chmod(converted, 0o644)
    converted.write_text("".join(lines))
    d.drop("badrow.yaml", job_yaml(tiny_model, "lora", dataset="chat"))
    body = finished(d, "badrow")
    assert body["state"] == "failed"
    failure = body["run"]["exit"]["failure"]
    assert failure["kind"] == "bad_dataset", failure
    assert failure["row"] == 4 and failure["path"] == str(converted)


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def test_a_deployment_serves_where_swift_really_listens_until_cancelled(
    daemon: Daemon, tiny_model: Path
) -> None:
    """swift deploy moves off a port already taken without saying so in its arguments: the job
    shows the address it really answers on, the OpenAI API there works, and cancel stops it."""
    d = daemon
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d.drop(
            "serve.yaml",
            f"task_type: deploy\nmodel: {json.dumps(str(tiny_model))}\nmodel_type: qwen2\ntemplate: qwen\n"
            f"port: {port}\n",
        )
        serving = d.wait_for("the deployment serving", lambda: maybe_job(d, "serve").get("serving"), 120)
    base = serving["openai_base"]
    assert serving["url"].startswith("http://127.0.0.1:") and serving["url"] != f"http://127.0.0.1:{port}"
    assert serving["models"] == ["tiny-qwen2"] and base == serving["url"] + "/v1"
    ask = {"model": "tiny-qwen2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    req = urllib.request.Request(
        base + "/chat/completions",
        data=json.dumps(ask).encode(),
        headers={"Content-Type": "application/json"},
    )
    with DIRECT.open(req, timeout=60) as resp:
        assert json.loads(resp.read())["choices"][0]["message"]["role"] == "assistant"
    assert "serving http://127.0.0.1:" in d.cli("jobs").stdout
    assert f"{base} (models: tiny-qwen2)" in d.cli("show", "serve").stdout

    # The server outlives a kill -9 of the daemon, which finds it again, serving, recorded once.
    log = Path(job(d, "serve")["run"]["log"])
    asked = log.read_text(errors="replace").count('"GET /v1/models ')  # only the daemon asks it
    d.kill()
    with DIRECT.open(serving["url"] + "/health", timeout=10) as resp:
        assert resp.status == 200
    d.start()  # up once the log's running runs are adopted
    d.wait_for(
        "the adopted run's server to be asked again (uvicorn logs each request)",
        lambda: log.read_text(errors="replace").count('"GET /v1/models ') > asked,
        60,
    )
    body = job(d, "serve")
    assert body["state"] == "running" and body["serving"] == serving
    events = d.get("/v1/jobs/serve/events")[1]["events"]
    assert [e["type"] for e in events].count("RunServing") == 1

    assert d.cli("cancel", "serve").returncode == 0
    body = finished(d, "serve", 60)
    assert body["state"] == "cancelled" and body["serving"] is None
    assert body["run"]["serving"]["url"] == serving["url"]
    assert_no_process_left(d, body)
    with pytest.raises(OSError):
        DIRECT.open(serving["url"] + "/health", timeout=5)
