"""The client commands that read the API: every page of a list, whichever cursor the daemon names
(`next`, null on the last page, or the older `next_after`), and the API's address and token read
from the config without validating all of it, with the same values and errors as the validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from daemon.cli.endpoint import _plain, endpoint, from_config
from daemon.cli.main import main
from daemon.core.config import ConfigError, load_config
from tests.fakeapi import FakeApi, fake_api

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "llmtraind.toml"
    path.write_text('[paths]\nstate = "state"\n')
    return path


@pytest.mark.parametrize("cursor", ["next", "next_after"])
def test_jobs_shows_every_page(
    config: Path, cursor: Literal["next", "next_after"], capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_api(FakeApi(jobs=1201, page=500, cursor=cursor)) as api:
        assert main(["jobs", "--json", "--config", str(config), "--url", api.url]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == list(range(1, 1202))
    assert api.asked == ["/v1/jobs", "/v1/jobs?after=500", "/v1/jobs?after=1000"]


def test_jobs_passes_its_filters_to_every_page(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with fake_api(FakeApi(jobs=7, page=5)) as api:
        argv = ["jobs", "--state", "queued", "--project", "p", "--config", str(config), "--url", api.url]
        assert main(argv) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 7
    assert api.asked == ["/v1/jobs?state=queued&project=p", "/v1/jobs?state=queued&project=p&after=5"]


@pytest.mark.parametrize("cursor", ["next", "next_after"])
def test_events_prints_every_page(
    config: Path, cursor: Literal["next", "next_after"], capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_api(FakeApi(events=2500, page=1000, cursor=cursor)) as api:
        assert main(["events", "--json", "--after", "2", "--config", str(config), "--url", api.url]) == 0
    seqs = [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()]
    assert seqs == list(range(3, 2501))
    asked = [f"/v1/events?after={a}&limit=1000" for a in (2, 1002, 2002)]
    # a daemon without `next` says the end with an empty page
    assert api.asked == (asked if cursor == "next" else [*asked, "/v1/events?after=2500&limit=1000"])


def test_an_unreachable_daemon_with_a_broken_config_reports_the_config(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The client reads only the keys it needs; when the daemon cannot be reached, the whole file is
    validated first, so a broken config is still what the person is told about."""
    config.write_text('[paths]\nstate = "state"\n[swift]\nno_such_key = 1\n')
    assert main(["status", "--config", str(config), "--url", "http://127.0.0.1:9"]) == 2
    assert "swift.no_such_key: unknown key" in capsys.readouterr().err
    config.write_text('[paths]\nstate = "state"\n')
    assert main(["status", "--config", str(config), "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the daemon" in capsys.readouterr().err


def test_the_url_the_daemon_wrote_wins_over_the_config(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_api(FakeApi()) as api:
        (config.parent / "state").mkdir()
        (config.parent / "state" / "daemon.json").write_text(json.dumps({"url": api.url + "/"}))
        assert main(["status", "--config", str(config)]) == 0
    assert "2 queued, 1 succeeded" in capsys.readouterr().out


CASES: list[tuple[str, dict[str, str], bool]] = [
    ("", {}, True),
    ('[paths]\nstate = "s"\n', {}, True),
    ('[paths]\nstate = "/abs/s"\ninbox = "i"\n[api]\nhost = "0.0.0.0"\nport = 9000\ntoken = "x"\n', {}, True),
    ('[paths]\nstate = "../up/s"\n', {"LLMTRAIND_API_TOKEN": "from-env", "LLMTRAIND_API_PORT": "0"}, True),
    ("[api]\nport = 1\n", {"LLMTRAIND_PATHS_STATE": "/elsewhere", "LLMTRAIND_api_host": "h"}, True),
    ('[api]\nport = "8471"\n', {}, False),  # pydantic's lax mode takes the string
    ("[api]\nport = 70000\n", {}, False),
    ("[api]\nport = true\n", {}, False),
    ("[api]\ntoken = 5\n", {}, False),
    ("[api]\ntoken = 'x'\n", {"LLMTRAIND_API_TOKEN": "5"}, False),
    ('[paths]\nstate = ""\n', {}, False),
    ('[paths]\nstate = "./"\n', {}, False),
    ('[paths]\nstate = "afile"\n', {}, False),
    ("api = 3\n", {}, False),
    ("[api\n", {}, False),
]


@pytest.mark.parametrize(("text", "env", "plain"), CASES)
def test_the_endpoint_is_what_the_validated_config_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, env: dict[str, str], plain: bool
) -> None:
    """Read directly when the keys are plain (`plain`), else through the validation; the values,
    or the ConfigError, are the validated config's either way."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    path = tmp_path / "llmtraind.toml" if text else None
    if path is not None:
        path.write_text(text)
    try:
        want: object = from_config(load_config(path, env))
    except ConfigError as e:
        want = str(e)
    try:
        got: object = endpoint(path, env)
    except ConfigError as e:
        got = str(e)
    assert got == want
    if not isinstance(want, str):
        assert (_plain(path, env) is not None) == plain
