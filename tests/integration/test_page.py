"""The status page at `/`, in headless Chromium (Debian's chromium and chromium-driver; `make
test-browser` installs them): a running job's progress advances on screen, fed by EventSource."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from tests.fakeswift import fake_model, write_wrapper
from tests.integration.test_runs import finished, job_yaml, sft_rows, wait_state

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver"),
]


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _progress(driver: object) -> int | None:
    """The first running job's step, read in one script: the page re-renders its tables as events
    arrive, so an element found in one call may be gone (stale) by the next."""
    text = driver.execute_script(  # type: ignore[attr-defined]
        "const c = document.querySelector('#running td.progress'); return c ? c.textContent : null"
    )
    match = re.search(r"step (\d+)/", text or "")
    return int(match.group(1)) if match else None


def test_the_page_shows_a_running_job_advancing(
    daemon_factory: type[Daemon], tmp_path: Path, browser: object
) -> None:
    wrapper = write_wrapper(tmp_path, step_s=0.3)
    extra = f'[swift]\npython = "{wrapper}"\n[runs]\npoll_s = 0.2\nschedule_s = 0.5\n'
    d = daemon_factory(tmp_path / "d", extra_config=extra).start()
    d.drop("chat.jsonl", sft_rows())
    d.drop("slow.yaml", job_yaml(fake_model(tmp_path / "m"), "sft", dataset="chat", max_steps=60))
    d.drop("later.yaml", job_yaml(fake_model(tmp_path / "n"), "sft", dataset="chat", max_steps=5))
    wait_state(d, "slow", ("running",), 60)

    browser.get(d.url + "/")  # type: ignore[attr-defined]
    first = d.wait_for("progress on the page", lambda: _progress(browser), 30)
    browser.save_screenshot(str(tmp_path / "first.png"))  # type: ignore[attr-defined]
    second = d.wait_for("progress advancing", lambda: (p := _progress(browser)) and p > first and p, 30)
    browser.save_screenshot(str(tmp_path / "second.png"))  # type: ignore[attr-defined]
    assert second > first
    assert (tmp_path / "second.png").stat().st_size > 1000
    page = browser.page_source  # type: ignore[attr-defined]
    assert "needs a CPU slot" in page, "the queue shows why `later` waits"
    assert "JobProgress" in page, "recent events come from the feed"
    assert finished(d, "slow", 60)["state"] == "succeeded"
