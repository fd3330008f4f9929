"""`llmtraind unit` says what its own sandbox would hide: paths under PrivateTmp's /tmp, under
ProtectHome's homes, written paths ProtectSystem=strict leaves read-only, a home where caches cannot
be written; and it runs the install it is told, not a checkout, without saying so."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli.main import main
from daemon.core.config import Config, load_config
from daemon.systemd import (
    STATE_DIRECTORY,
    Need,
    config_needs,
    hardening,
    service_unit,
    source_checkout,
    unit_text,
)

ETC = Path("/etc/llmtraind/llmtraind.toml")
INBOX = Path("/srv/llmtraind/inbox")
LAYOUT = [
    Need("the config file", ETC),
    Need("[paths] state", STATE_DIRECTORY, writes=True),
    Need("[paths] inbox", INBOX, writes=True),
    Need("the llmtraind executable", Path("/opt/llmtraind/bin/llmtraind")),
]


def everything_exists(path: Path) -> bool:
    return True


def test_the_service_layout_needs_nothing_relaxed() -> None:
    hard = hardening(LAYOUT, user="llmtraind", home=STATE_DIRECTORY, exists=everything_exists)
    assert hard.warnings == ()
    assert hard.protect_home == "yes"
    assert hard.read_write == (INBOX,), "StateDirectory= already makes /var/lib/llmtraind writable"


@pytest.mark.parametrize("tmp", ["/tmp", "/var/tmp"])
def test_paths_under_private_tmp_are_named_with_where_they_belong(tmp: str) -> None:
    needs = [
        Need("[paths] state", Path(f"{tmp}/s"), writes=True, instead=str(STATE_DIRECTORY)),
        Need("[models] qwen-7b", Path(f"{tmp}/models/Qwen-7B")),
    ]
    hard = hardening(needs, user="llmtraind", home=STATE_DIRECTORY, exists=everything_exists)
    assert len(hard.warnings) == 2
    assert hard.warnings[0] == (
        f"[paths] state {tmp}/s is under {tmp}: the unit's PrivateTmp=yes gives the service a {tmp} "
        f"of its own, where it is not; move it to {STATE_DIRECTORY}"
    )
    assert hard.warnings[1].startswith(f"[models] qwen-7b {tmp}/models/Qwen-7B is under {tmp}")


def test_a_path_under_home_relaxes_protect_home_to_read_only_and_says_so() -> None:
    needs = [*LAYOUT[:2], Need("[paths] inbox", Path("/home/alice/inbox"), writes=True)]
    hard = hardening(needs, user="llmtraind", home=STATE_DIRECTORY, exists=everything_exists)
    assert hard.protect_home == "read-only"
    assert hard.read_write == (Path("/home/alice/inbox"),)
    (warning,) = hard.warnings
    assert warning.startswith("[paths] inbox /home/alice/inbox: under a home folder, which ProtectHome=yes")
    assert "ProtectHome=read-only" in warning


def test_a_missing_written_path_is_named_but_not_the_state_directory() -> None:
    missing = {INBOX}
    hard = hardening(LAYOUT, user="llmtraind", home=STATE_DIRECTORY, exists=lambda p: p not in missing)
    (warning,) = hard.warnings
    assert warning.startswith(f"[paths] inbox {INBOX} does not exist: systemd refuses")
    assert "owned by llmtraind" in warning


@pytest.mark.parametrize("home", ["/home/llmtraind", "/nonexistent"])
def test_a_home_the_sandbox_leaves_read_only_is_named(home: str) -> None:
    hard = hardening(LAYOUT, user="llmtraind", home=Path(home), exists=everything_exists)
    (warning,) = hard.warnings
    assert warning.startswith(f"llmtraind's home {home} is read-only for the service")
    assert f"usermod -d {STATE_DIRECTORY} llmtraind" in warning


def test_a_home_inside_a_written_path_is_fine_and_a_missing_user_is_named() -> None:
    hard = hardening(LAYOUT, user="llmtraind", home=INBOX / "h", exists=everything_exists)
    assert hard.warnings == ()
    hard = hardening(LAYOUT, user="trainer", home=None, exists=everything_exists)
    assert hard.warnings == (
        "there is no user trainer here yet: create it with the home /var/lib/llmtraind "
        "(useradd --system --user-group --home-dir /var/lib/llmtraind trainer)",
    )


def layout_config(tmp_path: Path, extra: str = "") -> Config:
    path = tmp_path / "llmtraind.toml"
    path.write_text(f'[paths]\nstate = "{STATE_DIRECTORY}"\ninbox = "{INBOX}"\n{extra}')
    return load_config(path, environ={})


def test_the_config_names_every_path_it_reads(tmp_path: Path) -> None:
    models = tmp_path / "m"
    cfg = layout_config(
        tmp_path,
        f'[swift]\npython = "/opt/swift/bin/python"\nallowed_paths = ["/srv/ds"]\n'
        f'[models]\nqwen-7b = "{models}"\n',
    )
    needs = {(n.what, n.path, n.writes) for n in config_needs(cfg, ETC)}
    assert needs == {
        ("the config file", ETC, False),
        ("[paths] state", STATE_DIRECTORY, True),
        ("[paths] inbox", INBOX, True),
        ("[swift] python", Path("/opt/swift/bin/python"), False),
        ("[swift] allowed_paths", Path("/srv/ds"), False),
        ("[models] qwen-7b", models, False),
    }


def test_the_unit_runs_the_executable_it_is_given_under_a_strict_sandbox(tmp_path: Path) -> None:
    exe = tmp_path / "opt" / "bin" / "llmtraind"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    cfg = layout_config(tmp_path)
    unit = service_unit(cfg, ETC, user="llmtraind", executable=exe, home=STATE_DIRECTORY, checkout=None)
    lines = unit.text.splitlines()
    assert f"ExecStart={exe} serve --config {ETC}" in lines
    assert "ProtectSystem=strict" in lines and "ProtectHome=yes" in lines and "PrivateTmp=yes" in lines
    assert f"ReadWritePaths={INBOX}" in lines
    assert "StateDirectory=llmtraind" in lines and "StateDirectoryMode=0700" in lines
    assert all(f"# WARNING: {w}" in lines for w in unit.warnings)
    assert not any("is not a file" in w or "checkout" in w for w in unit.warnings)


def test_a_checkout_is_named_when_the_unit_would_run_it(tmp_path: Path) -> None:
    checkout = tmp_path / "src"
    (checkout / "daemon").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    assert source_checkout(checkout / "daemon") == checkout
    assert source_checkout(tmp_path / "site-packages" / "daemon") is None
    cfg = layout_config(tmp_path)
    default = service_unit(cfg, ETC, user="llmtraind", home=STATE_DIRECTORY, checkout=checkout)
    assert default.warnings[0].startswith(f"this llmtraind runs from the source checkout {checkout}")
    assert "--executable" in default.warnings[0]
    inside = checkout / ".venv" / "bin" / "llmtraind"
    inside.parent.mkdir(parents=True)
    inside.write_text("")
    given = service_unit(
        cfg, ETC, user="llmtraind", executable=inside, home=STATE_DIRECTORY, checkout=checkout
    )
    assert given.warnings[0] == f"--executable {inside} is inside the source checkout {checkout}"
    missing = service_unit(
        cfg, ETC, user="llmtraind", executable=Path("/opt/none/llmtraind"), home=STATE_DIRECTORY
    )
    assert missing.warnings[0] == "--executable /opt/none/llmtraind is not a file here"


def test_exec_words_keep_percent_and_dollar_literal() -> None:
    text = unit_text(
        executable=["/opt/llm 100%/bin/python", "-m", "daemon"],
        config=Path("/etc/llmtraind/$x.toml"),
        inbox=INBOX,
        state=STATE_DIRECTORY,
        user="llmtraind",
        stop_timeout_s=10,
        stop_grace_s=30,
        version=255,
    )
    assert (
        "ExecStart='/opt/llm 100%%/bin/python' -m daemon serve --config '/etc/llmtraind/$$x.toml'"
        in text.splitlines()
    )


def test_the_command_prints_the_unit_and_its_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "llmtraind.toml"
    config.write_text('[paths]\nstate = "/var/tmp/llmtraind-unit-test/s"\ninbox = "i"\n')
    rc = main(["unit", "--config", str(config), "--user", "nobody-llmtraind-test"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "User=nobody-llmtraind-test" in out.splitlines()
    assert "llmtraind: unit: WARNING: [paths] state /var/tmp/llmtraind-unit-test/s is under /var/tmp" in err
    assert "there is no user nobody-llmtraind-test here yet" in err
