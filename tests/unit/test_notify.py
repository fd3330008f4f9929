"""The pure half of notifications: which events notify what, the payload, filtering by type and
project, webhook-ids, the text for people, the backoff schedule, redaction, and the [[notify]]
config (one way each, whsec secrets, unique names, reload, no secret in an error or a dump)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from daemon.core.config import NOTIFY_TYPES, ConfigError, NotifyTarget, load_config, merge_reload
from daemon.core.events import (
    ConfigReloaded,
    DaemonStarted,
    DatasetAccepted,
    FailureRecord,
    FileRejected,
    JobFailed,
    JobProgress,
    JobsWaiting,
    NotifyCursor,
    NotifyDelivered,
    NotifyGivenUp,
    Recorded,
    RunExited,
    RunInterrupted,
    RunServing,
    RunStarted,
)
from daemon.core.fold import fold
from daemon.core.notify import (
    Notification,
    backoff_s,
    notification_of,
    payload_json,
    redact,
    summary,
    unhealthy_notification,
    wants,
    webhook_id,
)
from daemon.core.state import Job, Run, State

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _job(state: State, job_id: int = 7, project: str = "vision") -> Job:
    job = Job(
        id=job_id,
        name="sft-1",
        project=project,
        filename="sft-1.yaml",
        sha256="s",
        task="sft",
        tuner="lora",
        rlhf_type=None,
        feeds="sft",
        datasets=["chat"],
        priority=0,
        after=[],
        gpus=None,
        gpu_ids=[],
        min_free_memory_mib=None,
        spec={},
        submitted_ts=1.0,
        submitted_seq=1,
    )
    run = Run(2, [], [], [], {}, [], "", "", "", "", {}, None, None, None, 2.0)
    run.progress = JobProgress(
        job_id=job_id, attempt=2, kind="train", step=10, max_steps=10, percent=100.0, loss=0.5
    )
    job.runs.append(run)
    state.jobs[job_id] = job
    return job


def _rec(event: object, seq: int = 5) -> Recorded:
    return Recorded(seq, "job:7", 1, 1_700_000_000.0, event)  # type: ignore[arg-type]


def _target(**kw: object) -> NotifyTarget:
    return NotifyTarget.model_validate({"name": "t", "command": ["true"]} | kw)


def test_a_finished_attempt_notifies_its_outcome_with_duration_loss_and_project() -> None:
    state = State()
    _job(state)
    failure = FailureRecord(kind="oom", transient=False, reason="out of memory")
    ev = RunExited(job_id=7, attempt=2, outcome="failed", returncode=1, failure=failure, duration_s=75.0)
    n = notification_of(_rec(ev), state)
    assert n is not None and n.type == "job.failed" and n.project == "vision"
    assert (n.data["name"], n.data["reason"], n.data["duration_s"], n.data["loss"]) == (
        "sft-1",
        "out of memory",
        75.0,
        0.5,
    )
    title, body = summary(n, "http://127.0.0.1:8470/")
    assert title == "llmtraind: job sft-1 failed"
    assert "reason: out of memory" in body and "duration: 1m15s" in body and "loss: 0.5" in body
    assert body.endswith("http://127.0.0.1:8470/")


def test_an_attempt_that_runs_again_is_not_an_end() -> None:
    state = State()
    _job(state)
    ev = RunExited(job_id=7, attempt=2, outcome="failed", returncode=1, retry=True)
    assert notification_of(_rec(ev), state) is None


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (
            RunStarted(
                job_id=7, attempt=2, pid=1, start_ticks=1, boot_id="b", child_pid=2, session=1, log_offset=0
            ),
            "job.started",
        ),
        (RunExited(job_id=7, attempt=2, outcome="succeeded", returncode=0), "job.succeeded"),
        (
            RunExited(job_id=7, attempt=2, outcome="cancelled", returncode=None, stopped="cancel"),
            "job.cancelled",
        ),
        (JobFailed(job_id=7, reason="dependency failed"), "job.failed"),
        (RunInterrupted(job_id=7, attempt=2, reason="reboot"), "job.paused"),
        (RunServing(job_id=7, attempt=2, url="http://127.0.0.1:8000", models=["m"]), "job.serving"),
        (
            FileRejected(drop="d", filename="x.yaml", kind="job", summary="bad", problems="p", kept_as="r/x"),
            "file.rejected",
        ),
        (
            DatasetAccepted(
                drop="d",
                name="chat",
                filename="chat.jsonl",
                sha256="s",
                format="messages",
                task_types=["sft"],
                rlhf_types=[],
                rows=3,
                bytes=10,
                stats={},
            ),
            "dataset.accepted",
        ),
        (DaemonStarted(version="v", config_digest="c", host="h", pid=1, boot_id="b"), "daemon.started"),
    ],
)
def test_each_event_kind_maps_to_its_notification(event: object, kind: str) -> None:
    state = State()
    _job(state)
    n = notification_of(_rec(event), state)
    assert n is not None and n.type == kind and n.data["seq"] == 5
    assert kind in NOTIFY_TYPES


@pytest.mark.parametrize(
    "event",
    [
        NotifyDelivered(target="t", seq=1, webhook_id="m", attempts=1),
        NotifyGivenUp(target="t", seq=1, webhook_id="m", attempts=1, reason="r"),
        NotifyCursor(target="t", seq=1),
        JobsWaiting(reasons={}),
        ConfigReloaded(config_digest="c", applied=[], refused=[]),
    ],
)
def test_the_notifiers_own_records_and_bookkeeping_notify_nothing(event: object) -> None:
    assert notification_of(_rec(event), State()) is None


def test_an_unknown_job_still_notifies_with_its_id() -> None:
    n = notification_of(_rec(JobFailed(job_id=99, reason="x")), State())
    assert n is not None and n.data["job_id"] == 99 and n.project is None


def test_filters_by_type_and_project() -> None:
    job_n = Notification("job.failed", 1, 0.0, {}, project="vision")
    other = Notification("job.failed", 1, 0.0, {}, project="nlp")
    file_n = Notification("file.rejected", 1, 0.0, {})
    t = _target(on=["job.failed", "file.rejected"], projects=["vision"])
    assert wants(t, job_n) and not wants(t, other) and wants(t, file_n)
    assert not wants(_target(on=["job.succeeded"]), job_n)
    assert wants(_target(), other)


def test_payload_is_standard_webhooks_shaped_and_signs_verifiably() -> None:
    n = Notification("job.succeeded", 5, 1_700_000_000.5, {"seq": 5, "job_id": 7})
    body = payload_json(n, "http://h/")
    doc = json.loads(body)
    assert doc == {
        "type": "job.succeeded",
        "timestamp": "2023-11-14T22:13:20.500000Z",
        "data": {"seq": 5, "job_id": 7, "status_url": "http://h/"},
    }
    msg_id = webhook_id("log", "t", 5)
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, now, body),
    }
    assert Webhook(SECRET).verify(body, headers) == doc


@given(st.text(max_size=20), st.text(max_size=20), st.integers(0, 2**62))
def test_webhook_id_is_stable_per_event_and_target(log_id: str, target: str, seq: int) -> None:
    a = webhook_id(log_id, target, seq)
    assert a == webhook_id(log_id, target, seq) and a.startswith("msg_")
    assert a != webhook_id(log_id, target + "x", seq) and a != webhook_id(log_id, target, seq + 1)


@given(st.integers(1, 200), st.floats(0.01, 10), st.floats(0.01, 1000), st.floats(0, 0.999999))
def test_backoff_doubles_within_its_cap_and_jitter_keeps_the_upper_half(
    attempt: int, base: float, cap: float, rand: float
) -> None:
    wait = backoff_s(attempt, base, cap, rand)
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    assert ceiling / 2 <= wait <= ceiling
    assert backoff_s(attempt, base, cap, 0.0) <= backoff_s(attempt + 1, base, cap, 0.0)


def test_redact_hides_every_secret() -> None:
    assert redact("failed at http://x/tok?k=1 with whsec_a", ["http://x/tok?k=1", "whsec_a", ""]) == (
        "failed at *** with ***"
    )


def test_unhealthy_alert_names_the_reason() -> None:
    n = unhealthy_notification("event log not writable", 10.0)
    assert n.type == "daemon.unhealthy" and "event log not writable" in summary(n)[1]


def test_config_takes_one_way_each_and_a_whsec_secret(tmp_path: Path) -> None:
    good = NotifyTarget(name="ops", url="https://example.org/hook", secret=SECRET)
    assert good.on == NOTIFY_TYPES and SECRET not in repr(good) and SECRET not in good.model_dump_json()
    for bad in (
        {"name": "a"},
        {"name": "a", "url": "https://x", "secret": "plain"},
        {"name": "a", "url": "ftp://x", "secret": SECRET},
        {"name": "a", "apprise": "json://x", "command": ["true"]},
        {"name": "a", "command": ["true"], "secret": SECRET},
        {"name": "a b", "command": ["true"]},
        {"name": "a", "command": ["true"], "on": ["job.exploded"]},
    ):
        with pytest.raises(ValueError):
            NotifyTarget.model_validate(bad)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[notify]]\nname = "a"\nurl = "https://x/p"\nsecret = "whsec_c2hvcnQ="\n')
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "secret must be whsec_" in str(e.value) and "c2hvcnQ" not in str(e.value)
    cfg.write_text(
        '[[notify]]\nname = "a"\ncommand = ["true"]\n[[notify]]\nname = "a"\ncommand = ["false"]\n'
    )
    with pytest.raises(ConfigError, match="twice: a"):
        load_config(cfg)


def test_reload_applies_the_notify_targets_live(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[notify]]\nname = "a"\ncommand = ["true"]\n')
    old = load_config(cfg)
    cfg.write_text(
        f'[[notify]]\nname = "a"\ncommand = ["true"]\n[[notify]]\nname = "b"\nurl = "http://h/"\nsecret = "{SECRET}"\n'
    )
    merged, applied, refused = merge_reload(old, load_config(cfg))
    assert applied == ["notify"] and refused == [] and [t.name for t in merged.notify] == ["a", "b"]
    assert merged.notify[1].secret.get_secret_value() == SECRET
    assert merge_reload(merged, load_config(cfg))[1:] == ([], [])


def test_the_records_fold_to_no_state() -> None:
    recs = [_rec(NotifyDelivered(target="t", seq=1, webhook_id="m", attempts=1), seq=1)]
    assert fold(recs) == State(last_seq=1)
