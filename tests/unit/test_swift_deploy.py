"""Where a swift deploy run listens, as its log says (lines captured from a real ms-swift 4.6 run)."""

from __future__ import annotations

import pytest

from daemon.core.deployment import serves
from daemon.runs.swift.deploy import listening_url, local_url

LOG = (
    b"[INFO:swift] model_list: ['tiny-qwen2']\n"
    b"INFO:     Started server process [22611]\n"
    b"INFO:     Waiting for application startup.\n"
    b"INFO:     Application startup complete.\n"
    b"INFO:     Uvicorn running on http://127.0.0.1:8001 (Press CTRL+C to quit)\n"
)


@pytest.mark.timeout(10)
def test_the_port_swift_moved_to_is_read_from_uvicorns_line() -> None:
    assert listening_url(LOG) == "http://127.0.0.1:8001"
    assert listening_url(LOG.replace(b"8001", b"8000") + LOG) == "http://127.0.0.1:8001"
    assert listening_url(LOG.replace(b"Uvicorn running", b"Uvicorn starting")) is None
    assert listening_url(b"") is None


@pytest.mark.timeout(10)
def test_a_server_bound_everywhere_is_asked_on_loopback() -> None:
    assert local_url("http://0.0.0.0:8000") == "http://127.0.0.1:8000"
    assert local_url("http://[::]:8000") == "http://[::1]:8000"
    assert local_url("https://10.1.2.3:443") == "https://10.1.2.3:443"
    assert local_url("not a url") == "not a url"


@pytest.mark.timeout(10)
def test_only_deploy_commands_serve() -> None:
    assert serves(["/venv/bin/python", "-m", "swift.cli.deploy", "--model", "/m"])
    assert not serves(["/venv/bin/python", "-m", "swift.cli.sft", "--model", "/m"])
