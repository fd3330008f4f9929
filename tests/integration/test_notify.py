"""Notifications delivered from the event log by a real daemon to loopback receivers: signed webhooks
checked with `standardwebhooks`, apprise's json://, a command; retries, give-ups, crashes at each
step, a dead target beside a live one, a reload, and no secret in any answer or log line. Events are
made by dropping files the intake rejects or accepts, so no swift runs."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.daemon_proc import Daemon
from tests.notify_receiver import SECRET, Receiver, receiving, webhook_target

FAST = "backoff_s = 0.05\nbackoff_max_s = 0.2"


def _reject(d: Daemon, i: int) -> None:
    d.drop(f"bad{i}.jsonl", "not json\n")


def _notify_view(d: Daemon) -> dict[str, dict[str, Any]]:
    status, body = d.get("/v1/notify")
    assert status == 200
    return {t["name"]: t for t in body["targets"]}


def _records(d: Daemon, target: str) -> list[dict[str, Any]]:
    status, body = d.get("/v1/events?limit=1000")
    assert status == 200
    return [e for e in body["events"] if e["stream"] == f"notify:{target}"]


def test_each_matching_event_is_delivered_once_signed_and_no_secret_shows(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    with receiving() as r:
        extra = webhook_target("hook", r.url, on='["file.rejected", "daemon.started"]')
        extra += webhook_target("datasets-only", r.url.replace("/hook", "/ds"), on='["dataset.accepted"]')
        d = daemon_factory(tmp_path, extra_config=extra).start()
        for i in range(3):
            _reject(d, i)
        got = r.wait(4)
        time.sleep(0.5)
        assert len(r.hooks()) == 4 and all(g.verified for g in got)
        types = sorted(g.body["type"] for g in got)
        assert types == ["daemon.started", "file.rejected", "file.rejected", "file.rejected"]
        assert len({g.headers["webhook-id"] for g in got}) == 4
        rejected = [g.body["data"] for g in got if g.body["type"] == "file.rejected"]
        assert sorted(x["filename"] for x in rejected) == ["bad0.jsonl", "bad1.jsonl", "bad2.jsonl"]
        assert all(x["status_url"] == d.url + "/" for x in rejected)
        assert [g for g in r.got if g.path == "/ds"] == []
        view = d.wait_for("cursor", lambda: (v := _notify_view(d)) and v["hook"]["lag_events"] == 0 and v)
        assert view["hook"]["delivered"] == 4 and view["hook"]["kind"] == "webhook"
        assert view["hook"]["where"] == f"http://127.0.0.1:{r.port}"
        recorded = d.wait_for("records", lambda: len(r := _records(d, "hook")) == 5 and r)
        assert [e["type"] for e in recorded] == ["NotifyCursor"] + ["NotifyDelivered"] * 4
        with urllib.request.urlopen(d.url + "/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'llmtraind_notify_delivered_total{target="hook"} 4.0' in metrics
        assert 'llmtraind_notify_lag_seconds{target="hook"}' in metrics
        answers = [json.dumps(d.get(p)[1]) for p in ("/v1/notify", "/v1/events?limit=1000", "/v1/state")]
        d.stop()
    for text in [*answers, metrics, d.log()]:
        assert SECRET not in text and SECRET[6:] not in text and "/hook" not in text


def test_a_receiver_down_gets_it_once_back_and_one_that_never_answers_times_out(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    down = Receiver()
    with receiving("hang") as hang:
        extra = webhook_target("later", down.url, extra=f"attempts = 100\n{FAST}")
        extra += webhook_target("hang", hang.url, extra=f"attempts = 2\ntimeout_s = 0.5\n{FAST}")
        d = daemon_factory(tmp_path, extra_config=extra).start()
        _reject(d, 0)
        d.wait_for("failures", lambda: _notify_view(d)["later"]["failed"] >= 3)
        down.start()
        try:
            (got,) = down.wait(1)
            time.sleep(0.5)
            assert len(down.hooks()) == 1 and got.verified
        finally:
            down.stop()
        view = d.wait_for("give up", lambda: (v := _notify_view(d)) and v["hang"]["given_up"] == 1 and v)
        assert view["hang"]["last_error"] == "no answer within 0.5 s"
        assert view["later"]["delivered"] == 1 and view["later"]["last_error"].startswith("cannot connect")
        (given_up,) = d.wait_for(
            "the record", lambda: [e for e in _records(d, "hang") if e["type"] == "NotifyGivenUp"]
        )
        assert given_up["data"]["attempts"] == 2 and given_up["data"]["reason"] == "no answer within 0.5 s"


def test_a_dead_target_does_not_delay_a_live_one(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    with receiving("hang") as hang, receiving() as live:
        extra = webhook_target("dead", hang.url, extra="timeout_s = 30")
        extra += webhook_target("live", live.url)
        d = daemon_factory(tmp_path, extra_config=extra).start()
        delays = []
        for i in range(5):
            start = time.monotonic()
            _reject(d, i)
            live.wait(i + 1)
            delays.append(time.monotonic() - start)
        assert max(delays) < 2.0, delays
        assert _notify_view(d)["dead"]["delivered"] == 0


def test_kill_9_before_the_send_delivers_exactly_once_after_restart(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    with receiving() as r:
        extra = webhook_target("hook", r.url)
        d = daemon_factory(
            tmp_path, extra_config=extra, env={"LLMTRAIND_TEST_NOTIFY_FAULT": "picked"}
        ).start()
        _reject(d, 0)
        assert d.proc is not None and d.proc.wait(timeout=30) == -signal.SIGKILL
        assert r.got == []
        d = daemon_factory(tmp_path, extra_config=extra).start()
        r.wait(1)
        _reject(d, 1)
        got = r.wait(2)
        time.sleep(0.5)
        assert [g.body["data"]["filename"] for g in r.got] == ["bad0.jsonl", "bad1.jsonl"]
        assert all(g.verified for g in got)


def test_kill_9_after_the_2xx_repeats_at_most_once_with_the_same_webhook_id(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    with receiving() as r:
        extra = webhook_target("hook", r.url)
        d = daemon_factory(tmp_path, extra_config=extra, env={"LLMTRAIND_TEST_NOTIFY_FAULT": "delivered"})
        d.start()
        _reject(d, 0)
        assert d.proc is not None and d.proc.wait(timeout=30) == -signal.SIGKILL
        assert len(r.got) == 1
        d = daemon_factory(tmp_path, extra_config=extra).start()
        r.wait(2)
        _reject(d, 1)
        r.wait(3)
        time.sleep(0.5)
        ids = [g.headers["webhook-id"] for g in r.got]
        assert len(ids) == 3 and ids[0] == ids[1] != ids[2]
        assert [g.body["data"]["filename"] for g in r.got] == ["bad0.jsonl", "bad0.jsonl", "bad1.jsonl"]


def test_apprise_json_and_a_command_and_a_reload_that_adds_a_target(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    out = tmp_path / "command.out"
    script = tmp_path / "hook.py"
    script.write_text(
        "import os, sys\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(os.environ['WEBHOOK_ID'] + ' ' + sys.stdin.read() + '\\n')\n"
    )
    with receiving() as r:
        extra = f"""
[[notify]]
name = "chat"
apprise = "json://127.0.0.1:{r.port}/apprise"
on = ["file.rejected"]

[[notify]]
name = "cmd"
command = ["{sys.executable}", "{script}"]
on = ["file.rejected"]
"""
        d = daemon_factory(tmp_path, extra_config=extra).start()
        _reject(d, 0)
        (chat,) = r.wait(1, path="/apprise")
        assert "bad0.jsonl rejected" in chat.body["title"] and d.url + "/" in chat.body["message"]
        d.wait_for("command", lambda: out.exists() and out.read_text().count("\n") >= 1)
        msg_id, body = out.read_text().splitlines()[0].split(" ", 1)
        assert msg_id.startswith("msg_") and json.loads(body)["data"]["filename"] == "bad0.jsonl"
        view = _notify_view(d)
        assert view["chat"]["where"] == "json://…" and view["cmd"]["kind"] == "command"
        d.config.write_text(d.config.read_text() + webhook_target("hook", r.url))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("reload", lambda: "hook" in _notify_view(d))
        _reject(d, 1)
        (hooked,) = r.wait(1)
        assert hooked.body["data"]["filename"] == "bad1.jsonl" and hooked.verified
        r.wait(2, path="/apprise")


def test_notify_test_sends_one_signed_test_delivery(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    with receiving() as r:
        d = daemon_factory(tmp_path, extra_config=webhook_target("hook", r.url))
        done = d.cli("notify", "test", "hook")
        assert done.returncode == 0, done.stderr
        (got,) = r.wait(1)
        assert got.verified and got.body["type"] == "test"
        missing = d.cli("notify", "test", "nope")
        assert missing.returncode == 2 and "known: hook" in missing.stderr
    failed = d.cli("notify", "test", "hook")
    assert failed.returncode == 1 and "cannot connect" in failed.stderr and SECRET not in failed.stderr
