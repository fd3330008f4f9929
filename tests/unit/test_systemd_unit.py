"""The generated unit runs the daemon as a dedicated user with the GPU devices' groups, never root."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.systemd import SERVICE_USER, gpu_groups, unit_text


def unit(**overrides: object) -> list[str]:
    args: dict[str, object] = {
        "executable": "/opt/llmtraind/bin/llmtraind",
        "config": Path("/etc/llmtraind/llmtraind.toml"),
        "inbox": Path("/srv/llmtraind/inbox"),
        "state": Path("/var/lib/llmtraind"),
        "user": SERVICE_USER,
        "stop_timeout_s": 10.0,
        "stop_grace_s": 30.0,
        "version": 255,
        **overrides,
    }
    return unit_text(**args).splitlines()  # type: ignore[arg-type]


def test_the_service_runs_as_its_own_user_and_group_with_the_gpu_groups() -> None:
    lines = unit(groups=["video", "render"])
    assert "User=llmtraind" in lines and "Group=llmtraind" in lines
    assert "SupplementaryGroups=video render" in lines
    assert lines.index("User=llmtraind") > lines.index("[Service]")


def test_a_named_user_and_group_and_no_gpu_groups() -> None:
    lines = unit(user="trainer", group="ml")
    assert "User=trainer" in lines and "Group=ml" in lines
    assert not any(line.startswith("SupplementaryGroups=") for line in lines)


@pytest.mark.parametrize("user", ["root", "0", ""])
def test_root_is_refused(user: str) -> None:
    with pytest.raises(ValueError, match="dedicated user"):
        unit(user=user)


def test_only_groups_that_exist_are_named() -> None:
    assert gpu_groups(["no-such-group-llmtraind", "root"]) == ["root"]
