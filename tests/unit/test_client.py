"""The CLI client's pure parts: progress bars, tables, job details, and its SSE reader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.cli.client import (
    STATE_COLOUR,
    ApiError,
    ControlOutcome,
    SseEvent,
    SseReader,
    await_control,
    control_lines,
    control_verdict,
    gpus_table,
    job_detail,
    jobs_table,
    progress_bar,
    status_lines,
)
from daemon.core.state import JobState

RUNNING = {
    "id": 3,
    "name": "tune",
    "state": "running",
    "task_type": "sft",
    "tuner": "lora",
    "gpus": 1,
    "progress": {"step": 7, "max_steps": 20, "percent": 35.0, "eta_s": 125.0},
    "metrics": {"loss": 1.23456},
    "reason": "",
}
WAITING = {
    "id": 4,
    "name": "merge",
    "state": "queued",
    "task_type": "export",
    "gpus": 0,
    "progress": None,
    "reason": "after job tune (running)",
}


def test_progress_bar_fills_in_proportion_and_clamps() -> None:
    assert progress_bar(35.0, width=20) == "[#######.............]  35%"
    assert progress_bar(150.0, width=4) == "[####] 100%"
    assert progress_bar(-3.0, width=4) == "[....]   0%"
    assert progress_bar(None, width=4).strip() == ""


def test_the_jobs_table_shows_progress_loss_and_why_a_job_waits() -> None:
    lines = jobs_table([RUNNING, WAITING], width=200).splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "STATE", "TASK"]
    assert "tune" in lines[1] and "sft/lora" in lines[1] and "35%" in lines[1]
    assert "loss 1.235, 2m05s left" in lines[1]
    assert lines[2].rstrip().endswith("after job tune (running)")
    assert "\x1b[" not in "\n".join(lines)
    assert "\x1b[36mrunning\x1b[0m" in jobs_table([RUNNING], colour=True)


def test_job_detail_explains_a_failure_with_the_log_tail() -> None:
    job = RUNNING | {
        "state": "failed",
        "reason": "model or adapter directory /nope does not exist",
        "run": {
            "attempt": 1,
            "gpus": [],
            "command": "python -m swift.cli.sft --model /nope",
            "exit": {
                "outcome": "failed",
                "returncode": 1,
                "failure": {
                    "kind": "model_not_found",
                    "reason": "model or adapter directory /nope does not exist",
                },
                "log_tail": ["Traceback (most recent call last):", "ValueError: path: '/nope' not found"],
            },
        },
        "artifacts": [{"kind": "args", "bytes": 1234, "path": "/s/runs/3/1/output/args.json"}],
    }
    text = job_detail(job)
    assert "model_not_found" in text and "CPU slot" in text and "ValueError: path: '/nope' not found" in text
    assert "python -m swift.cli.sft --model /nope" in text and "1,234 B" in text


def test_job_detail_calls_a_finished_runs_loss_its_mean() -> None:
    run = {"attempt": 1, "gpus": [0], "metrics": {"kind": "train", "step": 9, "loss": 0.5}}
    assert "  loss" in job_detail(RUNNING | {"run": run})
    done = run | {"metrics": {"kind": "summary", "step": 10, "loss": 0.7}}
    assert "  mean loss" in job_detail(RUNNING | {"state": "succeeded", "run": done})


def test_a_deployment_shows_where_it_serves() -> None:
    serving = {"url": "http://127.0.0.1:8001", "openai_base": "http://127.0.0.1:8001/v1", "models": ["tiny"]}
    live = RUNNING | {"task_type": "deploy", "serving": serving, "run": {"attempt": 1, "serving": serving}}
    assert jobs_table([live], width=200).splitlines()[1].endswith("serving http://127.0.0.1:8001/v1")
    assert "http://127.0.0.1:8001/v1 (models: tiny)" in job_detail(live)
    ended = live | {"state": "cancelled", "serving": None}
    assert "(models: tiny), no longer" in job_detail(ended)


def test_status_lines_count_jobs_by_state() -> None:
    body = {
        "version": "0.3.0",
        "healthy": True,
        "uptime_s": 5,
        "last_seq": 9,
        "gpus": {"count": 0},
        "jobs": {"queued": 1, "running": 2, "failed": 0},
    }
    assert status_lines(body)[-1] == "jobs         1 queued, 2 running"
    assert "GPUs         none (CPU slots)" in status_lines(body)
    body["gpus"] = {"count": 4, "leased": 2, "free": 1, "foreign": 1}
    assert "GPUs         4: 2 running a job, 1 free, 1 with foreign processes" in status_lines(body)


def test_the_gpus_table_shows_each_gpus_job_and_foreign_processes() -> None:
    gpu = {"index": 0, "name": "NVIDIA H200", "memory_total_mib": 143771, "utilization_pct": 97.0}
    body = {
        "gpus": [
            gpu
            | {"memory_used_mib": 20480, "lease": {"job": 3, "name": "tune", "attempt": 1}, "processes": []},
            gpu
            | {
                "index": 1,
                "memory_used_mib": 81920,
                "utilization_pct": 12.0,
                "lease": None,
                "processes": [
                    {"pid": 4242, "used_mib": 81000, "foreign": True},
                    {"pid": 77, "used_mib": 920, "foreign": False},
                ],
            },
        ],
        "probed_s_ago": 2.4,
    }
    header, first, second, footer = gpus_table(body).splitlines()
    assert header.split()[:3] == ["GPU", "NAME", "MEMORY"]
    assert "20,480 / 143,771 MiB" in first and " 97%" in first and "3 tune" in first and first.endswith(" -")
    assert second.endswith("pid 4242 (81,000 MiB)") and "pid 77" not in second
    assert footer == "(probed 2 s ago)"
    assert gpus_table({"gpus": [], "probed_s_ago": 0}).startswith("no GPUs")


def test_sse_reader_handles_crlf_cr_comments_and_multiline_data() -> None:
    r = SseReader()
    stream = b": hello\r\nretry: 1000\r\nid: 5\r\ndata: one\r\ndata: two\r\r\nid: 9\ndata: caf\xc3\xa9\n\n"
    got = [e for i in range(len(stream)) for e in r.feed(stream[i : i + 1])]
    assert [(e.id, e.data) for e in got] == [("5", "one\ntwo"), ("9", "café")]
    assert r.last_id == "9"


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=20
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(1, 7),
)
def test_sse_reader_round_trips_any_lines_in_any_chunks(lines: list[str], size: int) -> None:
    payload = "".join(f"id: {i}\ndata: {line}\n\n" for i, line in enumerate(lines)).encode()
    r = SseReader()
    got = [e for i in range(0, len(payload), size) for e in r.feed(payload[i : i + size])]
    assert [e.data for e in got] == lines and [e.id for e in got] == [str(i) for i in range(len(lines))]


def test_every_job_state_has_a_colour() -> None:
    assert set(STATE_COLOUR) == set(get_args(JobState))


def test_keep_alive_comments_come_out_only_when_asked() -> None:
    frames = b": keep-alive\n\nid: 7\ndata: x\n\n"
    assert SseReader().feed(frames) == [SseEvent("7", "x")]
    assert SseReader(comments=True).feed(frames) == [
        SseEvent("", "keep-alive", "comment"),
        SseEvent("7", "x"),
    ]


# ---------------------------------------------------------------------------------------------
# `jobs`: the detail column wraps at word boundaries, the task is whole


LONG_REASON = (
    "model /models/qwen-7b is a hub id and [swift] offline = true; map it under [models] in the "
    "config or name a local folder"
)


def test_a_long_reason_wraps_between_words_under_its_column() -> None:
    job = WAITING | {"state": "failed", "reason": LONG_REASON}
    lines = jobs_table([job], width=120).splitlines()
    first, rest = lines[1], lines[2:]
    column = first.index("model /models")
    assert rest and all(len(line) <= 120 for line in lines)
    assert all(line[:column].strip() == "" for line in rest)
    assert " ".join(line.strip() for line in [first[column:], *rest]) == LONG_REASON


def test_on_a_narrow_terminal_the_detail_gets_lines_of_its_own() -> None:
    job = WAITING | {"state": "failed", "reason": LONG_REASON}
    lines = jobs_table([job], width=80).splitlines()
    assert "offline" not in lines[1] and lines[1] == lines[1].rstrip()
    assert all(line.startswith("      ") and len(line) <= 80 for line in lines[2:])
    assert " ".join(line.strip() for line in lines[2:]) == LONG_REASON


def test_wide_never_wraps_and_the_task_is_whole() -> None:
    job = WAITING | {"task_type": "rlhf", "tuner": "qlora", "reason": LONG_REASON}
    wide = jobs_table([job], width=60, wide=True).splitlines()
    assert len(wide) == 2 and wide[1].endswith(LONG_REASON) and "rlhf/qlora" in wide[1]
    narrow = jobs_table([job], width=60).splitlines()
    assert "rlhf/qlora" in narrow[1] and len(narrow) > 2


def test_a_word_longer_than_the_column_gets_a_line_of_its_own() -> None:
    path = "/very/long/" + "x" * 80 + "/checkpoint-30"
    job = WAITING | {"reason": f"resuming from {path}"}
    lines = jobs_table([job], width=80).splitlines()
    assert any(line.strip() == path for line in lines[1:])


def test_colour_does_not_change_where_the_detail_wraps() -> None:
    job = WAITING | {"state": "failed", "reason": LONG_REASON}
    plain = jobs_table([job], width=120).splitlines()
    coloured = jobs_table([job], width=120, colour=True).splitlines()
    assert [line.replace("\x1b[31m", "").replace("\x1b[0m", "") for line in coloured] == plain


# ---------------------------------------------------------------------------------------------
# cancel / retry: waiting for the daemon's verdict


class FakeApi:
    """Answers /v1/events with the events given, /v1/jobs/N with the job states given in turn."""

    def __init__(self, events: list[dict[str, Any]], jobs: list[dict[str, Any]] | None = None) -> None:
        self.events = events
        self.jobs = list(jobs or [])
        self.calls: list[str] = []
        self.down = False

    def get(self, path: str, timeout_s: float | None = None) -> Any:
        self.calls.append(path)
        if self.down:
            raise ApiError("cannot reach the daemon at http://x: refused")
        if path.startswith("/v1/events"):
            after = int(path.split("after=")[1].split("&")[0])
            page = [e for e in self.events if e["seq"] > after]
            return {"events": page, "next_after": page[-1]["seq"] if page else after}
        return self.jobs.pop(0) if len(self.jobs) > 1 else self.jobs[0]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def event(seq: int, type_: str, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "stream": "intake", "type": type_, "data": data}


def wait(
    api: FakeApi, action: str = "cancel", name: str = "cancel-x-1.yaml", wait_s: float = 5
) -> ControlOutcome:
    clock = Clock()
    return await_control(
        api,  # type: ignore[arg-type]
        action,
        name,
        after=10,
        wait_s=wait_s,
        clock=clock,
        sleep=clock.sleep,
    )


def test_a_refusal_comes_back_with_its_reason_and_note() -> None:
    api = FakeApi(
        [
            event(11, "FileRejected", filename="other.yaml", summary="not this one", kept_as="other.yaml"),
            event(
                12,
                "FileRejected",
                filename="cancel-x-1.yaml",
                summary="there is no job 'x' to cancel",
                kept_as="cancel-x-1.yaml",
            ),
        ]
    )
    outcome = wait(api)
    assert outcome == ControlOutcome(
        "refused", "there is no job 'x' to cancel", error_file="rejected/cancel-x-1.yaml.error.txt"
    )
    assert control_lines("cancel", "x", outcome, inbox="/in/", dropped="/in/cancel-x-1.yaml") == (
        "cancel x: refused: there is no job 'x' to cancel; see /in/rejected/cancel-x-1.yaml.error.txt"
    )


def test_an_accepted_cancel_waits_until_the_run_has_stopped() -> None:
    accepted = event(14, "CancelRequested", drop="d", job_id=3, source="cancel-x-1.yaml")
    running = {"id": 3, "name": "x", "state": "running"}
    ended = running | {"state": "cancelled", "reason": "cancelled while running"}
    api = FakeApi([accepted], [running, running, ended])
    outcome = wait(api)
    assert outcome == ControlOutcome("done", job=ended)
    assert control_lines("cancel", "x", outcome, inbox="/in", dropped="") == (
        "cancel x: accepted; job 3 x is cancelled (cancelled while running)"
    )


def test_a_run_still_stopping_at_the_deadline_is_accepted_but_pending() -> None:
    accepted = event(14, "CancelRequested", drop="d", job_id=3, source="cancel-x-1.yaml")
    running = {"id": 3, "name": "x", "state": "running"}
    outcome = wait(FakeApi([accepted], [running]), wait_s=2)
    assert outcome == ControlOutcome("pending", job=running)
    assert "accepted; job 3 x is still running" in control_lines("cancel", "x", outcome, inbox="", dropped="")


def test_an_action_without_a_destination_is_done_once_accepted() -> None:
    accepted = event(12, "RetryRequested", drop="d", job_id=3, source="retry-x-1.yaml")
    queued = {"id": 3, "name": "x", "state": "queued", "reason": "waiting for a CPU slot"}
    outcome = wait(FakeApi([accepted], [queued]), action="retry", name="retry-x-1.yaml")
    assert outcome.status == "done" and outcome.job == queued


def test_a_duplicate_request_is_refused() -> None:
    dup = event(12, "DuplicateDropped", drop="d", filename="cancel-x-1.yaml", kind="control", sha256="s")
    assert wait(FakeApi([dup])).status == "refused"


@pytest.mark.parametrize("down", [False, True])
def test_no_verdict_in_time_says_the_request_stays_in_the_inbox(down: bool) -> None:
    api = FakeApi([event(11, "JobProgress", job_id=1)])
    api.down = down
    outcome = wait(api, wait_s=3)
    assert outcome.status == "unanswered" and outcome.detail.startswith("none within 3 s")
    assert ("cannot reach the daemon" in outcome.detail) == down
    assert len(api.calls) >= 10, "it asks again until the time is up"
    text = control_lines("cancel", "x", outcome, inbox="/in", dropped="/in/cancel-x-1.yaml")
    assert "stays in the inbox as /in/cancel-x-1.yaml" in text


def test_the_verdict_is_matched_by_the_files_name_only() -> None:
    other: Mapping[str, Any] = event(5, "CancelRequested", drop="d", job_id=1, source="cancel-y-2.yaml")
    assert control_verdict("cancel-x-1.yaml", other) is None
    assert control_verdict("cancel-y-2.yaml", other) == ControlOutcome("pending", job={"id": 1})
