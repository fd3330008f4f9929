"""A job's models as this box has them: names that become folders ([models], the Hugging Face and
ModelScope caches) and the model_type/template settled from a folder's config.json with ms-swift's
own registry; a job that cannot find or type its model is refused with the key to set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.core.jobs import JobSpec, parse_job_file
from daemon.core.models import ModelRegistry, infer_naming, model_name
from daemon.core.swift_args import bundled
from daemon.intake.models import find_model, registry, settle_models

QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}
REGISTRY = ModelRegistry.from_json(
    json.dumps(
        {
            "ms_swift_version": "9.9",
            "types": {
                "qwen": {"architectures": ["QWenLMHeadModel"], "templates": ["qwen"]},
                "qwen2": {"architectures": ["Qwen2ForCausalLM"], "templates": ["qwen", "qwen2_5"]},
                "qwen2_gte": {"architectures": ["Qwen2ForCausalLM"], "templates": ["dummy"]},
                "llama": {"architectures": ["LlamaForCausalLM"], "templates": ["llama"]},
            },
            "architectures": {
                "QWenLMHeadModel": ["qwen"],
                "Qwen2ForCausalLM": ["qwen2", "qwen2_gte"],
                "LlamaForCausalLM": ["llama"],
            },
            "names": {"qwen-7b": ["qwen", "qwen"], "qwen2.5-7b-instruct": ["qwen2", "qwen2_5"]},
        }
    )
)


def infer(**kw: object) -> tuple[object, ...]:
    args: dict[str, object] = {
        "what": "model /m",
        "model_type": None,
        "template": None,
        "config": QWEN2,
        "args": None,
        "names": ["/models/tiny-qwen2"],
    } | kw
    n = infer_naming(REGISTRY, **args)  # type: ignore[arg-type]
    return n.model_type, n.template, n.problem


def test_an_architecture_with_two_model_types_takes_the_one_named_like_config_json() -> None:
    assert infer() == ("qwen2", "qwen", None)


def test_still_ambiguous_is_a_problem_naming_the_candidates() -> None:
    _, _, problem = infer(config={"architectures": ["Qwen2ForCausalLM"], "model_type": "other"})
    assert problem == (
        "model /m: ms-swift 9.9 cannot tell its model_type from config.json (Qwen2ForCausalLM): it could be "
        "any of qwen2, qwen2_gte",
        "qwen2, qwen2_gte",
    )


def test_a_known_name_gives_both_when_it_fits_the_architecture() -> None:
    assert infer(names=["Qwen/Qwen2.5-7B-Instruct", "/m"]) == ("qwen2", "qwen2_5", None)
    # qwen-7b is Qwen 1: it does not fit a Qwen2 folder, so the architecture decides
    assert infer(names=["qwen-7b", "/m"]) == ("qwen2", "qwen", None)


def test_what_the_job_gives_is_kept_and_an_unknown_model_type_is_a_problem() -> None:
    assert infer(model_type="qwen2") == (None, "qwen", None)
    assert infer(model_type="qwen2", template="qwen2_5") == (None, None, None)
    assert infer(template="qwen2_5") == ("qwen2", None, None)
    assert infer(model_type="qwen-7b-chat")[2] == (
        "model /m: ms-swift 9.9 has no model_type 'qwen-7b-chat'",
        "",
    )


def test_a_folder_swift_wrote_names_its_own_types_and_an_unknown_architecture_is_left_to_swift() -> None:
    assert infer(args={"model_type": "llama", "template": "llama"}) == ("llama", "llama", None)
    assert infer(config={"architectures": ["Unknown"]}) == (None, None, None)
    assert infer(config=None) == (None, None, None)


def test_model_names_as_swift_matches_them() -> None:
    assert model_name("/c/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/abc") == "qwen2.5-7b-instruct"
    assert model_name("/c/modelscope/models/Qwen/Qwen2___5-7B/") == "qwen2.5-7b"
    assert model_name("hf::Qwen/Qwen-7B") == "qwen-7b"


def test_the_bundled_registry_types_the_tiny_model(tiny_model: Path) -> None:
    config = json.loads((tiny_model / "config.json").read_text())
    n = infer_naming(
        registry(),
        what="model",
        model_type=None,
        template=None,
        config=config,
        args=None,
        names=[str(tiny_model)],
    )
    assert (n.model_type, n.template) == ("qwen2", "qwen")


@pytest.mark.swift
@pytest.mark.timeout(120)
def test_the_bundled_registry_is_what_the_installed_ms_swift_says() -> None:
    script = Path(__file__).resolve().parents[2] / "daemon" / "intake" / "swift_models.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, check=True, timeout=110).stdout
    assert ModelRegistry.from_json(out) == registry()


def hf_cache(root: Path, hub_id: str) -> Path:
    repo = root / ("models--" + hub_id.replace("/", "--"))
    snap = repo / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(QWEN2))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    return snap


def test_a_name_is_found_in_models_then_the_caches_only_offline(tmp_path: Path) -> None:
    mapped = tmp_path / "mapped"
    mapped.mkdir()
    snap = hf_cache(tmp_path / "hf", "Qwen/Qwen2.5-7B-Instruct")
    ms = tmp_path / "ms" / "models" / "Qwen" / "Qwen2___5-0___5B"
    ms.mkdir(parents=True)
    (ms / "config.json").write_text("{}")
    env = {"HF_HUB_CACHE": str(tmp_path / "hf"), "MODELSCOPE_CACHE": str(tmp_path / "ms")}
    models = {"qwen-7b": mapped, "gone": tmp_path / "nothing"}
    assert find_model("qwen-7b", models, True, env) == (mapped, "[models]")
    assert find_model("gone", models, True, env) == (None, f"[models] maps it to {tmp_path / 'nothing'}")
    assert find_model("Qwen/Qwen2.5-7B-Instruct", models, True, env) == (snap, "Hugging Face cache")
    assert find_model("Qwen/Qwen2.5-0.5B", models, True, env) == (ms, "ModelScope cache")
    assert find_model("ms::Qwen/Qwen2.5-7B-Instruct", models, True, env) is None
    assert find_model("Qwen/Qwen2.5-7B-Instruct", models, False, env) is None
    home = {"HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hfhome")}
    assert find_model("Qwen/Qwen2.5-7B-Instruct", {}, True, home) is None
    hf_cache(tmp_path / "hfhome" / "hub", "Qwen/Qwen2.5-7B-Instruct")
    assert find_model("Qwen/Qwen2.5-7B-Instruct", {}, True, home) is not None


def spec(text: str) -> JobSpec:
    parsed = parse_job_file(text.encode(), "j.yaml", max_bytes=1 << 20, swift_args=bundled())
    assert isinstance(parsed, JobSpec)
    return parsed


def test_a_mapped_name_becomes_its_folder_and_is_recorded_with_its_types(
    tmp_path: Path, tiny_model: Path
) -> None:
    job = spec(
        "task_type: rl\nalgorithm: ppo\npolicy_model: qwen-7b-sft\nreward_model: qwen-7b-rm\ndataset: d\n"
    )
    settled, problems = settle_models(
        job, {"qwen-7b-sft": tiny_model, "qwen-7b-rm": tiny_model}, offline=True, environ={}
    )
    assert problems == []
    assert settled.model is not None and settled.model.kind == "path"
    assert settled.model.ref == str(tiny_model.resolve())
    assert (settled.model_type, settled.template) == ("qwen2", "qwen")
    assert settled.swift_args == {"reward_model_type": "qwen2", "reward_template": "qwen"}
    shown = [str(r) for r in settled.resolved]
    assert shown[:2] == [
        f"model qwen-7b-sft -> {tiny_model.resolve()} ([models])",
        f"reward_model qwen-7b-rm -> {tiny_model.resolve()} ([models])",
    ]
    assert "model_type qwen2 (config.json: Qwen2ForCausalLM, model_type qwen2)" in shown
    assert JobSpec.model_validate(settled.model_dump(mode="json")) == settled


def test_a_name_found_nowhere_offline_is_refused_with_what_to_add(tmp_path: Path) -> None:
    job = spec("task_type: sft\nmodel_name: Qwen/Qwen2.5-7B-Instruct\ndataset: d\n")
    env = {"HOME": str(tmp_path)}
    same, problems = settle_models(job, {}, offline=True, environ=env)
    assert same == job
    (p,) = problems
    assert p.message == (
        "model Qwen/Qwen2.5-7B-Instruct: not a folder, not in [models], not in the Hugging Face or ModelScope "
        f"cache under {tmp_path}/.cache/huggingface/hub or {tmp_path}/.cache/modelscope/hub"
    )
    assert p.hint.startswith('add `"Qwen/Qwen2.5-7B-Instruct" = "/path/to/the/model"` under [models]')
    assert p.hint.endswith("or set [swift] offline = false to let swift download it")
    # online, swift downloads it as before
    assert settle_models(job, {}, offline=False, environ=env) == (job, [])


def test_an_ambiguous_folder_is_refused_naming_the_key_to_set(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    job = spec(f"task_type: sft\nmodel_name: {folder}\ndataset: d\n")
    _, (p,) = settle_models(job, {}, offline=True, environ={})
    assert "it could be any of qwen2, qwen2_gte" in p.message
    assert (p.field, p.hint) == (
        "model_type",
        "set `model_type: qwen2` (or another of qwen2, qwen2_gte) in the job",
    )
    given = spec(f"task_type: sft\nmodel_name: {folder}\nmodel_type: qwen2\ndataset: d\n")
    settled, problems = settle_models(given, {}, offline=True, environ={})
    assert problems == [] and settled.template == "qwen"


def test_a_model_type_the_installed_swift_does_not_have_is_refused_even_before_the_folder_exists() -> None:
    job = spec("task_type: sft\nmodel_name: /models/not-here-yet\nmodel_type: qwen-7b-chat\ndataset: d\n")
    _, (p,) = settle_models(job, {}, offline=True, environ={})
    assert p.message == "model /models/not-here-yet: ms-swift 4.6.0 has no model_type 'qwen-7b-chat'"
    assert p.hint == "set model_type to a model type of the installed ms-swift, or leave it out to infer it"
    fine = spec("task_type: sft\nmodel_name: /models/not-here-yet\nmodel_type: qwen2\ndataset: d\n")
    assert settle_models(fine, {}, offline=True, environ={}) == (fine, [])
