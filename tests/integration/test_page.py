"""The status page at `/`, in headless Chromium (Debian's chromium and chromium-driver; `make
test-browser` installs them): a running job's progress advances on screen, fed by EventSource; a
job's view (curves, log tail, artifacts, events), runs compared, a dataset's view and the finished
list, with fake swift (tests/fakeswift.py) here and real tiny-model runs under `extended`.

Screenshots of the job view and the compare chart go to $LLMTRAIND_SCREENSHOTS (default: the test's
tmp folder); their paths are printed (`pytest -s` shows them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


TOKEN = "page-token"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>&amp;'
"""Markup in a dataset row, a log line and a failure's evidence: it must reach the screen as text."""


def _js(driver: object, script: str, *args: object) -> Any:
    return driver.execute_script(script, *args)  # type: ignore[attr-defined]


def _open(driver: object, d: Daemon, hash_: str) -> None:
    driver.get(d.url + "/#" + hash_)  # type: ignore[attr-defined]


def _shot(driver: object, tmp_path: Path, name: str) -> Path:
    """The whole page (up to 6,000 px tall), not just what the window shows."""
    folder = Path(os.environ.get("LLMTRAIND_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    size = driver.get_window_size()  # type: ignore[attr-defined]
    tall = min(int(_js(driver, "return document.documentElement.scrollHeight")) + 120, 6000)
    driver.set_window_size(size["width"], max(tall, size["height"]))  # type: ignore[attr-defined]
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    driver.set_window_size(size["width"], size["height"])  # type: ignore[attr-defined]
    print(f"screenshot: {path}")
    assert path.stat().st_size > 1000
    return path


_POINTS = """return [...document.querySelectorAll(arguments[0] + ' .chart[data-title="' + arguments[1] + '"] polyline.series')]
  .map(p => +p.getAttribute('data-points'))"""


def _train_losses(d: Daemon, job_id: int) -> int:
    code, body = d.get(f"/v1/jobs/{job_id}/metrics")
    assert code == 200
    return sum(1 for r in body["metrics"] if r["kind"] == "train" and r["loss"] is not None)


_ROWS = "return [...document.querySelectorAll('#finished tbody tr[data-job]')].map(t => [...t.cells].map(c => c.textContent))"


def _finished_rows(driver: object) -> list[list[str]]:
    return list(_js(driver, _ROWS))


_OVERFLOW = "return document.documentElement.scrollWidth <= window.innerWidth"


def _log_lines(driver: object) -> int:
    return int(_js(driver, "return document.querySelectorAll('#log > div').length"))


def _not_pwned(driver: object) -> None:
    assert _js(driver, "return window.__pwned === undefined"), "markup from the data ran"
    assert _js(driver, "return document.querySelectorAll('#view img, #view script').length") == 0


def check_job_view(driver: object, d: Daemon, job_id: int, tmp_path: Path, shot: str) -> None:
    """The job view's loss curve has one point per train record the metrics endpoint holds."""
    want = _train_losses(d, job_id)
    assert want > 0
    _open(driver, d, f"/jobs/{job_id}")
    got = d.wait_for(
        "the loss curve", lambda: (p := _js(driver, _POINTS, "#charts", "loss")) and sum(p) == want, 20
    )
    assert got
    titles = _js(driver, "return [...document.querySelectorAll('#charts .chart')].map(c => c.dataset.title)")
    assert {"loss", "learning rate", "grad norm"} <= set(titles)
    head = _js(driver, "return document.getElementById('view').textContent")
    code, body = d.get(f"/v1/jobs/{job_id}")
    assert code == 200
    assert body["run"]["command"] in _js(driver, "return document.getElementById('command').textContent")
    assert "a CPU slot" in head and "attempts" in head
    d.wait_for(
        "the job's events in words",
        lambda: (
            "succeeded" in _js(driver, "return document.getElementById('job-events').textContent") or None
        ),
        10,
    )
    _shot(driver, tmp_path, shot)


def check_compare(driver: object, d: Daemon, ids: list[int], tmp_path: Path, shot: str) -> str:
    """One loss series per chosen job; the settings that differ listed side by side."""
    _open(driver, d, "/compare/" + ",".join(map(str, ids)))
    counts = d.wait_for("the compare chart", lambda: _js(driver, _POINTS, "#compare-charts", "loss"), 20)
    assert len(counts) == len(ids)
    assert counts == [_train_losses(d, i) for i in ids]
    _shot(driver, tmp_path, shot)
    return str(_js(driver, "return document.getElementById('differences').textContent"))


def check_failed(driver: object, d: Daemon, job_id: int, kind: str) -> str:
    """The failed job's header says its classified reason, as the API does."""
    code, body = d.get(f"/v1/jobs/{job_id}")
    assert code == 200 and body["state"] == "failed"
    assert body["run"]["exit"]["failure"]["kind"] == kind
    _open(driver, d, f"/jobs/{job_id}")
    reason = d.wait_for(
        "the reason",
        lambda: _js(driver, "const r = document.getElementById('job-reason'); return r && r.textContent"),
        20,
    )
    assert reason == body["reason"]
    return str(reason)


def test_job_view_compare_dataset_and_finished_list(
    daemon_factory: type[Daemon], tmp_path: Path, browser: object
) -> None:
    wrapper = write_wrapper(tmp_path, step_s=0.1)
    extra = f'[swift]\npython = "{wrapper}"\n[runs]\npoll_s = 0.2\nschedule_s = 0.5\n'
    d = daemon_factory(tmp_path / "d", token=TOKEN, extra_config=extra).start()
    row = {
        "messages": [
            {"role": "user", "content": HOSTILE},
            {"role": "assistant", "content": "text, not markup"},
        ]
    }
    d.drop("chat.jsonl", json.dumps(row) + "\n" + sft_rows())
    d.wait_for("the dataset", lambda: d.get("/v1/datasets/chat")[0] == 200 or None, 30)
    oom = f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB {HOSTILE}\n"
    d.drop(
        "good.yaml",
        job_yaml(fake_model(tmp_path / "a"), "sft", dataset="chat", max_steps=8, learning_rate=1e-4),
    )
    d.drop(
        "other.yaml",
        job_yaml(fake_model(tmp_path / "b"), "sft", dataset="chat", max_steps=6, learning_rate=2e-4),
    )
    d.drop("bad.yaml", job_yaml(fake_model(tmp_path / "c", 1, oom), "sft", dataset="chat", max_steps=3))
    ids = {n: finished(d, n, 60)["id"] for n in ("good", "other", "bad")}
    d.drop("slow.yaml", job_yaml(fake_model(tmp_path / "s"), "sft", dataset="chat", max_steps=60))
    browser.get(d.url + "/?token=" + TOKEN)  # type: ignore[attr-defined]

    # The finished list: newest first, duration, final loss, the reason; a row opens the job view.
    rows = d.wait_for("finished rows", lambda: (r := _finished_rows(browser)) and len(r) == 3 and r, 20)
    newest = sorted(ids.items(), key=lambda kv: -kv[1])
    assert [r[1] for r in rows] == [f"#{i} {n}" for n, i in newest], "newest first"
    rows = sorted(rows, key=lambda r: ["good", "other", "bad"].index(r[1].split()[1]))
    assert all(r[4] for r in rows), "every finished job shows its duration"
    assert rows[0][5] == "0.125" and rows[0][3] == "succeeded", "good's final loss is its last step's (1/8)"
    assert "out of GPU memory" in rows[2][7]
    _js(
        browser,
        "document.querySelector('#finished tr[data-job=\"' + arguments[0] + '\"] td:nth-child(4)').click()",
        ids["good"],
    )
    d.wait_for(
        "the job view", lambda: _js(browser, "return location.hash") == f"#/jobs/{ids['good']}" or None, 10
    )

    check_job_view(browser, d, ids["good"], tmp_path, "job-view.png")
    differing = check_compare(browser, d, [ids["good"], ids["other"], ids["bad"]], tmp_path, "compare.png")
    assert "max_steps" in differing and "learning_rate" in differing
    reason = check_failed(browser, d, ids["bad"], "out_of_memory")
    assert "out of GPU memory" in reason
    log_text = d.wait_for(
        "the log",
        lambda: (
            (t := _js(browser, "return document.getElementById('log').textContent")) and HOSTILE in t and t
        ),
        20,
    )
    assert "fake step 3/3" in log_text
    _not_pwned(browser)

    # The dataset view: format, rows, a sample row as text, the jobs that read it.
    _open(browser, d, "/datasets/chat")
    samples = d.wait_for(
        "sample rows",
        lambda: _js(browser, "const s = document.getElementById('samples'); return s && s.textContent"),
        20,
    )
    assert json.dumps(HOSTILE) in samples, "the row as JSON text"
    used = _js(browser, "return document.getElementById('used-by').textContent")
    assert all(n in used for n in ("good", "other", "bad"))
    assert "17" in _js(browser, "return document.getElementById('view').textContent"), "its row count"
    _not_pwned(browser)

    # A phone-sized screen: nothing wider than the screen but the tables' own scrolling boxes.
    browser.set_window_size(390, 844)  # type: ignore[attr-defined]
    for view in ("/", f"/jobs/{ids['good']}", f"/compare/{ids['good']},{ids['other']}"):
        _open(browser, d, view)
        d.wait_for(
            f"{view} drawn",
            lambda: _js(browser, "return document.querySelectorAll('#view h2').length > 1") or None,
            20,
        )
        assert _js(browser, _OVERFLOW), view
    _shot(browser, tmp_path, "phone-compare.png")
    browser.set_window_size(1200, 1000)  # type: ignore[attr-defined]

    # A running job's log tail follows, stops while paused, and follows again.
    wait_state(d, "slow", ("running",), 60)
    slow = d.get("/v1/jobs/slow")[1]["id"]
    _open(browser, d, f"/jobs/{slow}")
    first = d.wait_for("log lines", lambda: _log_lines(browser), 20)
    d.wait_for("the log following", lambda: _log_lines(browser) > first + 3 or None, 20)
    _js(browser, "document.getElementById('pause').click()")
    time.sleep(0.3)
    held = _log_lines(browser)
    time.sleep(1.0)
    assert _log_lines(browser) == held, "a paused tail does not move"
    _js(browser, "document.getElementById('pause').click()")
    d.wait_for("the log following again", lambda: _log_lines(browser) > held + 3 or None, 20)
    assert finished(d, "slow", 60)["state"] == "succeeded"
    d.wait_for(
        "the whole log",
        lambda: (
            "fake step 60/60" in _js(browser, "return document.getElementById('log').textContent") or None
        ),
        20,
    )


@pytest.mark.extended
@pytest.mark.timeout(300)
def test_the_page_on_real_tiny_model_runs(
    daemon_factory: type[Daemon], tmp_path: Path, browser: object, tiny_model: Path
) -> None:
    """Real ms-swift on the tiny model: the loss curve has a point per train record, the log tail
    follows the running job, compare draws a series per job, a failed job shows its classified
    reason, and markup in a model path (its reason, its log) stays text."""
    extra = "[runs]\nstop_grace_s = 3\npoll_s = 0.2\nschedule_s = 0.5\n"
    d = daemon_factory(tmp_path / "d", token=TOKEN, extra_config=extra).start()
    d.drop("chat.jsonl", sft_rows())
    d.wait_for("the dataset", lambda: d.get("/v1/datasets/chat")[0] == 200 or None, 30)
    common = {"dataset": "chat", "logging_steps": 1, "val_dataset": "chat", "eval_steps": 4}
    d.drop("first.yaml", job_yaml(tiny_model, "lora", max_steps=8, learning_rate=1e-4, **common))
    running = wait_state(d, "first", ("running",), 60)
    d.drop("second.yaml", job_yaml(tiny_model, "lora", max_steps=6, learning_rate=5e-4, **common))
    d.drop("broken.yaml", job_yaml(f"/nonexistent/{HOSTILE.replace(' ', '_')}", "lora", dataset="chat"))
    browser.get(d.url + "/?token=" + TOKEN)  # type: ignore[attr-defined]
    _open(browser, d, f"/jobs/{running['id']}")
    first = d.wait_for("log lines", lambda: _log_lines(browser), 60)
    d.wait_for("the log following the run", lambda: _log_lines(browser) > first + 5 or None, 120)

    ids = [finished(d, n, 180)["id"] for n in ("first", "second")]
    assert all(d.get(f"/v1/jobs/{i}")[1]["state"] == "succeeded" for i in ids)
    check_job_view(browser, d, ids[0], tmp_path, "real-job-view.png")
    titles = _js(browser, "return [...document.querySelectorAll('#charts .chart')].map(c => c.dataset.title)")
    assert "eval_loss" in titles, titles
    view = _js(browser, "return document.getElementById('view').textContent")
    assert "best eval" in view and "eval_loss" in view
    artifacts = _js(browser, "return document.getElementById('artifacts').textContent")
    assert "checkpoint-8final" in artifacts.replace(" ", ""), "the final checkpoint is marked"
    differing = check_compare(browser, d, ids, tmp_path, "real-compare.png")
    assert "learning_rate" in differing and "max_steps" in differing

    broken = finished(d, "broken", 120)
    reason = check_failed(browser, d, broken["id"], "model_not_found")
    assert "/nonexistent/" in reason
    _not_pwned(browser)
