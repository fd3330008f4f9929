"""The CLI client's pure parts: progress bars, tables, job details, and its SSE reader."""

from __future__ import annotations

from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from daemon.cli.client import (
    STATE_COLOUR,
    SseEvent,
    SseReader,
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
