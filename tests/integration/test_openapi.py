"""schemathesis against a real daemon: requests generated from /openapi.json (valid and invalid
parameters, odd job and dataset names, odd Last-Event-IDs) never get a server error, and every
answer is one the document declares.

The event log's stream never ends, so it is left to tests/integration/test_sse.py; a finished job's
log stream ends after its last line and is exercised here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection

from daemon.http.openapi import openapi_spec
from tests.daemon_proc import Daemon
from tests.integration.test_sse import ROW, dataset, finished, sse_daemon, start_job

pytestmark = pytest.mark.timeout(120)

TOKEN = "schemathesis"
schema = schemathesis.openapi.from_dict(openapi_spec()).exclude(path="/v1/events/stream")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the whole run, with a dataset, a finished job and a rejected file to show."""
    root = tmp_path_factory.mktemp("openapi")
    d = sse_daemon(Daemon, root / "d", token=TOKEN)
    try:
        dataset(d)
        start_job(d, "done", lines=30, gap=0.0)
        finished(d, "done")
        d.drop("broken.jsonl", "not json\n")
        d.drop("other.jsonl", ROW.replace("hello", "hi there"))
        yield d
    finally:
        d.kill()
        d.kill_runs()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_server_error_and_every_answer_is_declared(
    case: schemathesis.Case[Any], live: Daemon, http: requests.Session
) -> None:
    case.call_and_validate(
        base_url=live.url,
        session=http,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
        # Unknown query parameters are ignored on purpose (cache busters, newer clients); the
        # invalid values of known ones are 400s, checked here through the declared responses.
        excluded_checks=[negative_data_rejection],
    )


def test_the_served_document_is_the_published_one(live: Daemon) -> None:
    code, served = live.get("/openapi.json")
    assert code == 200
    published = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "openapi.json").read_text())
    assert served == published == openapi_spec()
