"""llmtraind.toml: defaults, overrides, and errors that name the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.core.config import ConfigError, config_digest, load_config, merge_reload, resolve_config_path

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_file_equals_the_embedded_defaults(tmp_path: Path) -> None:
    shipped = load_config(ROOT / "llmtraind.toml", environ={})
    embedded = load_config(None, environ={})
    assert shipped.model_dump(exclude={"paths"}) == embedded.model_dump(exclude={"paths"})
    assert shipped.paths.inbox == ROOT / "inbox" and shipped.paths.state == ROOT / "state"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    cfg_file = tmp_path / "sub" / "x.toml"
    cfg_file.write_text('[paths]\ninbox = "drop"\nstate = "/var/lib/llmtraind"\n')
    cfg = load_config(cfg_file, environ={})
    assert cfg.paths.inbox == tmp_path / "sub" / "drop"
    assert cfg.paths.state == Path("/var/lib/llmtraind")
    assert cfg.db_path == Path("/var/lib/llmtraind/llmtraind.sqlite3")


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[api]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"c\.toml: invalid configuration\n  api\.prot: unknown key"):
        load_config(f, environ={})


def test_a_key_older_versions_took_still_loads(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[store]\nsnapshot_every = 1000\n")
    cfg = load_config(f, environ={})
    assert cfg.store.snapshot_every == 1000
    assert cfg.store.snapshot_bytes == load_config(None, environ={}).store.snapshot_bytes


def test_wrong_type_names_the_key_and_the_expectation(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[api]\nport = "eighty"\n[gpus]\ncpu_slots = -1\n')
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    text = str(err.value)
    assert "api.port: Input should be a valid integer" in text and "'eighty'" in text
    assert "gpus.cpu_slots: Input should be greater than or equal to 0" in text


def test_a_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a folder")
    f = tmp_path / "c.toml"
    f.write_text("")
    with pytest.raises(ConfigError, match="paths.state = .* exists and is not a folder"):
        load_config(f, environ={})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[api\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_environment_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[api]\nport = 1\n")
    cfg = load_config(
        f,
        environ={
            "LLMTRAIND_API_PORT": "0",
            "LLMTRAIND_API_TOKEN": "s3cret",
            "LLMTRAIND_GPUS_DEVICES": "[0, 'GPU-abc']",
            "LLMTRAIND_SWIFT_OFFLINE": "false",
            "LLMTRAIND_STORE_BUSY_TIMEOUT_MS": "100",
        },
    )
    assert cfg.api.port == 0 and cfg.api.token == "s3cret"
    assert cfg.gpus.devices == [0, "GPU-abc"]
    assert cfg.swift.offline is False and cfg.store.busy_timeout_ms == 100


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="LLMTRAIND_NOPE_X: no config section"):
        load_config(None, environ={"LLMTRAIND_NOPE_X": "1"})
    with pytest.raises(ConfigError, match="api.nope: unknown key"):
        load_config(None, environ={"LLMTRAIND_API_NOPE": "1"})


def test_config_file_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(None, {}) is None
    (tmp_path / "llmtraind.toml").write_text("")
    assert resolve_config_path(None, {}) == Path("llmtraind.toml")
    assert resolve_config_path(None, {"LLMTRAIND_CONFIG": "/etc/x.toml"}) == Path("/etc/x.toml")
    assert resolve_config_path("a.toml", {"LLMTRAIND_CONFIG": "/etc/x.toml"}) == Path("a.toml")


def test_digest_changes_with_the_config() -> None:
    a = load_config(None, environ={})
    b = load_config(None, environ={"LLMTRAIND_API_PORT": "1"})
    assert config_digest(a) == config_digest(load_config(None, environ={})) != config_digest(b)


def test_models_map_names_to_folders_relative_to_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[models]\nqwen-7b = "models/qwen"\n"Qwen/Qwen2.5-7B-Instruct" = "/srv/qwen2.5"\n')
    cfg = load_config(f, environ={})
    assert cfg.models == {
        "qwen-7b": tmp_path / "models" / "qwen",
        "Qwen/Qwen2.5-7B-Instruct": Path("/srv/qwen2.5"),
    }
    assert load_config(None, environ={}).models == {}
    f.write_text('[models]\n"" = "/m"\n')
    with pytest.raises(ConfigError, match="models: '' is not a model name as a job writes it"):
        load_config(f, environ={})
    f.write_text('[models]\nq = ""\n')
    with pytest.raises(ConfigError, match="models.q must name a model folder"):
        load_config(f, environ={})


def test_a_reload_applies_the_models_table_as_a_whole(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[models]\nqwen-7b = "/a"\n')
    old = load_config(f, environ={})
    f.write_text('[models]\nqwen-7b = "/b"\nllama2-7b = "/c"\n\n[api]\nport = 1\n')
    merged, applied, refused = merge_reload(old, load_config(f, environ={}))
    assert (applied, refused) == (["models"], ["api.port"])
    assert merged.models == {"qwen-7b": Path("/b"), "llama2-7b": Path("/c")}
    assert config_digest(merged) != config_digest(old)
