"""The CLI's side of the HTTP API: requests, an SSE reader that resumes where it stopped, and the
tables and progress bars people read. Formatting is pure; only `Api` touches the network.

Standard library only (urllib), so the client commands start fast and need nothing the daemon
does not already install.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import shutil
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "STATE_COLOUR",
    "Api",
    "ApiError",
    "ControlOutcome",
    "await_control",
    "control_lines",
    "control_verdict",
    "SseEvent",
    "SseReader",
    "job_detail",
    "jobs_table",
    "progress_bar",
    "status_lines",
]

STATE_COLOUR: Mapping[str, str] = {
    "queued": "33",
    "running": "36",
    "succeeded": "32",
    "failed": "31",
    "cancelled": "35",
    "interrupted": "33",
    "paused": "34",
}
"""ANSI colours of the job states (`JobState`, every one of them) on a terminal; interrupted waits,
like queued."""


class ApiError(Exception):
    """The daemon answered with an error, or could not be reached; the message says which."""


@dataclass(frozen=True)
class SseEvent:
    id: str
    data: str
    event: str = "message"


class SseReader:
    """Splits an SSE byte stream into events (WHATWG "interpreting an event stream", the parts
    the daemon's feeds use: `id`, `data` on one or more lines, `event`, comments)."""

    def __init__(self, *, comments: bool = False) -> None:
        self.comments = comments
        """Whether a comment (the daemon's keep-alive) comes out as an event of type "comment": a
        reader that must notice time passing on a quiet feed gets a beat at least every keep-alive."""
        self._pending = b""
        self._id = ""
        self._data: list[str] = []
        self._event = ""
        self.last_id = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._pending += chunk
        out: list[SseEvent] = []
        while True:
            cut = min(
                (i for i in (self._pending.find(b"\n"), self._pending.find(b"\r")) if i >= 0), default=-1
            )
            if cut < 0 or (self._pending[cut : cut + 1] == b"\r" and cut + 1 == len(self._pending)):
                return out  # a CR at the end may be the first half of CRLF
            line = self._pending[:cut].decode("utf-8", "replace")
            step = 2 if self._pending[cut : cut + 2] == b"\r\n" else 1
            self._pending = self._pending[cut + step :]
            event = self._line(line)
            if event is not None:
                out.append(event)

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._id, "\n".join(self._data), self._event or "message")
            self.last_id = self._id
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return SseEvent("", line[1:].strip(), "comment") if self.comments else None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "event":
            self._event = value
        return None


class Api:
    def __init__(self, base_url: str, token: str = "", timeout_s: float = 10.0) -> None:
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _request(self, path: str, headers: Mapping[str, str] | None = None) -> urllib.request.Request:
        req = urllib.request.Request(self.base + path, headers=dict(headers or {}))  # noqa: S310 (http URL from our config)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return req

    def get(self, path: str, timeout_s: float | None = None) -> Any:
        req = self._request(path)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:  # noqa: S310 (the URL is ours)
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise ApiError(f"{path}: {e.code} {_message(e)}") from None
        except urllib.error.URLError as e:
            raise ApiError(f"cannot reach the daemon at {req.full_url}: {e.reason}") from None

    def stream(
        self, path: str, after: str | None = None, retries: int = 30, *, keepalive: bool = False
    ) -> Iterator[SseEvent]:
        """The events of an SSE feed; on a dropped connection, resume from the last id (the daemon
        replays what was missed). Ends when the server ends the stream on purpose (a finished job's
        log) or answers 204. With `keepalive`, the feed's keep-alive comments come out too."""
        last = after
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last:
                headers["Last-Event-ID"] = last
            reader = SseReader(comments=keepalive)
            try:
                with urllib.request.urlopen(self._request(path, headers), timeout=60) as resp:  # noqa: S310
                    if resp.status == 204:
                        return
                    while chunk := resp.read1(65536):
                        failures = 0
                        for event in reader.feed(chunk):
                            last = event.id or last
                            yield event
                return
            except urllib.error.HTTPError as e:
                raise ApiError(f"{path}: {e.code} {_message(e)}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                # a daemon killed mid-stream cuts the chunked body (IncompleteRead): resume
                failures += 1
                if failures > retries:
                    raise ApiError(f"lost the stream {path}: {e}") from None
                time.sleep(min(5.0, 0.2 * failures))


def _message(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"{}")
    except ValueError:
        return str(e.reason)
    return str(body.get("error", {}).get("message", e.reason))


# -- control requests: from a dropped file to the daemon's verdict ------------------------------


@dataclass(frozen=True)
class ControlOutcome:
    """What became of a control request (`cancel`, `retry`, ...) dropped into the inbox."""

    status: Literal["done", "pending", "refused", "unanswered"]
    """done: accepted, and the job got where the request sends it; pending: accepted, and the
    job is still on its way (a run still stopping); refused: the daemon rejected the file;
    unanswered: no verdict in time, so the request is still waiting in the inbox."""
    detail: str = ""
    """Why it was refused, or why no answer came."""
    job: Mapping[str, Any] | None = None
    error_file: str | None = None
    """The refused file's note, relative to the inbox (`rejected/NAME.error.txt`)."""


_ARRIVED: Mapping[str, Callable[[Mapping[str, Any]], bool]] = {
    "cancel": lambda job: job.get("state") != "running",
    "pause": lambda job: job.get("state") != "running",
}
"""Per action, whether the job is where an accepted request sends it. A cancelled or paused running
job still has to stop its run (a pause first saves a checkpoint at its next step); an action not
named here is done once it is accepted."""


_EVAL_TIMING = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def eval_text(record: Mapping[str, Any] | None) -> str | None:
    """The last evaluation as a person reads it: its step, then every metric swift logged for it
    (eval_loss, eval_token_acc, eval_rouge-l, eval_bleu-4, ...) under swift's name, without the
    timings."""
    if not record:
        return None
    raw = record.get("raw") or {}
    shown = [
        f"{name.removeprefix('eval_')} {value:.4g}"
        for name, value in raw.items()
        if name.startswith("eval_") and not name.endswith(_EVAL_TIMING) and isinstance(value, int | float)
    ]
    return f"step {record.get('step')}: " + (", ".join(shown) or "no metrics")


def control_verdict(filename: str, event: Mapping[str, Any]) -> ControlOutcome | None:
    """The daemon's answer to the control file `filename`, if `event` is it: an accepting event
    names the file as its `source`; a refusal (or a duplicate) names it as its `filename`."""
    data = event.get("data") or {}
    if data.get("source") == filename and isinstance(data.get("job_id"), int):
        return ControlOutcome("pending", job={"id": data["job_id"]})
    if data.get("filename") != filename:
        return None
    if event.get("type") == "FileRejected":
        kept = data.get("kept_as")
        note = f"rejected/{kept}.error.txt" if kept else None
        return ControlOutcome("refused", str(data.get("summary") or "rejected"), error_file=note)
    if event.get("type") == "DuplicateDropped":
        return ControlOutcome("refused", "the same request is already recorded; nothing new was done")
    return None


def await_control(
    api: Api,
    action: str,
    filename: str,
    *,
    after: int,
    wait_s: float,
    poll_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ControlOutcome:
    """Follow the event log from `after` for the daemon's verdict on `filename`, then the job until
    the request has taken effect, for at most `wait_s` seconds in all. A daemon that cannot be
    reached meanwhile is tried again until the time is up (it may be restarting)."""
    deadline = clock() + wait_s
    verdict: ControlOutcome | None = None
    trouble = ""
    while True:
        remaining = max(0.5, deadline - clock())
        full_page = False
        try:
            if verdict is None:
                page = api.get(f"/v1/events?after={after}&limit=1000", timeout_s=remaining)
                for event in page["events"]:
                    verdict = verdict or control_verdict(filename, event)
                    after = event["seq"]
                full_page = len(page["events"]) == 1000
            if verdict is not None and verdict.status == "pending" and verdict.job is not None:
                job = api.get(f"/v1/jobs/{verdict.job['id']}", timeout_s=remaining)
                verdict = ControlOutcome("pending", job=job)
                arrived = _ARRIVED.get(action)
                if arrived is None or arrived(job):
                    return ControlOutcome("done", job=job)
            elif verdict is not None:
                return verdict
        except ApiError as e:
            trouble = str(e)
        if clock() >= deadline:
            if verdict is not None:
                return verdict
            why = f"none within {wait_s:g} s" + (f"; {trouble}" if trouble else "")
            return ControlOutcome("unanswered", why)
        if not full_page:
            sleep(poll_s)


def control_lines(action: str, ref: str, outcome: ControlOutcome, *, inbox: str, dropped: str) -> str:
    """The CLI's line about a control request, as a person reads it."""
    job = outcome.job or {}
    who = f"job {job.get('id')} {job.get('name', '')}".rstrip()
    reason = f" ({job['reason']})" if job.get("reason") else ""
    if outcome.status == "done":
        return f"{action} {ref}: accepted; {who} is {job.get('state')}{reason}"
    if outcome.status == "pending":
        state = job.get("state") or "in a state the daemon did not report in time"
        return (
            f"{action} {ref}: accepted; {who} is still {state} (`llmtraind show {job.get('id')}` follows it)"
        )
    if outcome.status == "refused":
        note = f"; see {inbox.rstrip('/')}/{outcome.error_file}" if outcome.error_file else ""
        return f"{action} {ref}: refused: {outcome.detail}{note}"
    return (
        f"{action} {ref}: no verdict from the daemon ({outcome.detail}); the request stays in the "
        f"inbox as {dropped} and takes effect when the daemon reads it (delete that file to withdraw it)"
    )


# -- formatting (pure) ------------------------------------------------------------------------


def progress_bar(percent: float | None, width: int = 20) -> str:
    """`[#######.............]  35%`; blanks when there is no progress yet."""
    if percent is None or not math.isfinite(percent):
        return " " * (width + 7)
    p = min(100.0, max(0.0, percent))
    filled = int(round(width * p / 100))
    return f"[{'#' * filled}{'.' * (width - filled)}] {p:3.0f}%"


def _colour(state: str, colour: bool) -> str:
    code = STATE_COLOUR.get(state)
    return f"\x1b[{code}m{state}\x1b[0m" if colour and code else state


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _what(job: Mapping[str, Any]) -> str:
    """The column after the bar: the loss while running, else why it waits or how it ended."""
    metrics = job.get("metrics") or {}
    if job.get("serving"):
        return f"serving {job['serving']['openai_base']}"
    if job.get("state") == "running" and metrics.get("loss") is not None:
        eta = _eta((job.get("progress") or {}).get("eta_s"))
        return f"loss {metrics['loss']:.4g}" + (f", {eta} left" if eta else "")
    return str(job.get("reason") or "")


def jobs_table(
    jobs: Sequence[Mapping[str, Any]], *, colour: bool = False, width: int | None = None, wide: bool = False
) -> str:
    """One line per job: id, name, state, task, GPUs, progress bar, and loss or reason. The task is
    shown whole; a detail too long for the terminal wraps at word boundaries onto lines of its
    own under its column (`wide`: never wrapped, for a pager or a wide window)."""
    cols = width or shutil.get_terminal_size((120, 24)).columns
    tasks = [_task(job) for job in jobs]
    tw = max([len("TASK"), 10, *map(len, tasks)])
    header = f"{'ID':>4}  {'NAME':<24} {'STATE':<10} {'TASK':<{tw}} {'GPUS':>4}  {'PROGRESS':<27}  DETAIL"
    lines = [header]
    for job, task in zip(jobs, tasks, strict=True):
        progress = job.get("progress") or {}
        state = str(job.get("state", ""))
        pad = " " * max(0, 10 - len(state))
        gpus = job.get("gpus") if job.get("gpus") is not None else "-"
        head = (
            f"{job.get('id', ''):>4}  {str(job.get('name', ''))[:24]:<24} {_colour(state, colour)}{pad} "
            f"{task:<{tw}} {gpus:>4}  {progress_bar(progress.get('percent'))}  "
        )
        indent = len(_ANSI.sub("", head))
        detail = _what(job)
        if wide or indent + len(detail) <= cols:
            lines.append(head + detail)
        elif cols - indent >= _MIN_DETAIL:
            first, *rest = _wrap(detail, cols - indent)
            lines += [head + first, *(" " * indent + part for part in rest)]
        else:
            lines += [head.rstrip(), *(_UNDER + part for part in _wrap(detail, cols - len(_UNDER)))]
    return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MIN_DETAIL = 24
"""A detail column narrower than this (a narrow terminal) is not used: the detail goes on lines
of its own under the job's, indented by `_UNDER`."""
_UNDER = " " * 6


def _task(job: Mapping[str, Any]) -> str:
    task = str(job.get("task_type", ""))
    return f"{task}/{job['tuner']}" if job.get("tuner") else task


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters, broken only between words; a word longer than a line
    (a path, a URL) gets a line of its own rather than being cut."""
    return textwrap.wrap(text, max(width, 1), break_long_words=False, break_on_hyphens=False) or [""]


def _serving(serving: Mapping[str, Any] | None, *, live: bool) -> str | None:
    if not serving:
        return None
    models = ", ".join(serving.get("models") or []) or "?"
    return f"{serving['openai_base']} (models: {models})" + ("" if live else ", no longer")


def _section(title: str, rows: Sequence[tuple[str, Any]]) -> list[str]:
    out = [title]
    out += [f"  {k:<16} {v}" for k, v in rows if v not in (None, "", [], {})]
    return out


def _resolution(r: Mapping[str, Any]) -> str:
    given = f"{r.get('given')} -> " if r.get("given") is not None else ""
    return f"{r.get('key')} {given}{r.get('value')} ({r.get('source')})"


def _settled(spec: Mapping[str, Any]) -> list[str]:
    """What intake settled on this box (a model name that became a folder, an inferred
    model_type) and the job's warnings: keys it sets that the daemon does not apply."""
    lines = []
    if spec.get("resolved"):
        lines += ["settled at intake"] + [f"  {_resolution(r)}" for r in spec["resolved"]]
    if spec.get("notes"):
        lines += ["warnings"] + [f"  {note}" for note in spec["notes"]]
    return lines


def job_detail(job: Mapping[str, Any]) -> str:
    """`llmtraind show JOB`: what a person asks about one job, in the order they ask it."""
    progress = job.get("progress") or {}
    lines = _section(
        f"job {job.get('id')} {job.get('name')}",
        [
            ("state", job.get("state")),
            ("reason", job.get("reason")),
            ("task", f"{job.get('task_type')}" + (f" ({job.get('tuner')})" if job.get("tuner") else "")),
            ("project", job.get("project")),
            ("priority", job.get("priority")),
            (
                "datasets",
                ", ".join(f"{k} ({(v or 'missing')[:12]})" for k, v in (job.get("datasets") or {}).items()),
            ),
            ("after", ", ".join(job.get("after") or [])),
            ("attempts", job.get("attempts")),
            (
                "progress",
                f"{progress_bar(progress.get('percent'))} step {progress.get('step')}/{progress.get('max_steps')}"
                if progress
                else None,
            ),
            ("final checkpoint", job.get("final_checkpoint")),
            ("final model", job.get("final_model")),
        ],
    )
    lines += _settled(job.get("spec") or {})
    run = job.get("run")
    if run:
        metrics = run.get("metrics") or {}
        lines += _section(
            f"attempt {run.get('attempt')}",
            [
                ("gpus", ",".join(map(str, run.get("gpus") or [])) or "CPU slot"),
                ("pid", run.get("pid")),
                ("resumes from", run.get("resume_from")),
                ("command", run.get("command")),
                ("log", run.get("log")),
                ("serving", _serving(run.get("serving"), live=job.get("state") == "running")),
                ("mean loss" if metrics.get("kind") == "summary" else "loss", metrics.get("loss")),
                ("learning rate", metrics.get("learning_rate")),
                ("grad norm", metrics.get("grad_norm")),
                ("token accuracy", metrics.get("token_acc")),
                ("evaluation", eval_text(run.get("eval"))),
            ],
        )
        end = run.get("exit")
        if end:
            failure = end.get("failure") or {}
            lines += _section(
                "exit",
                [
                    ("outcome", end.get("outcome")),
                    ("returncode", end.get("returncode")),
                    ("stopped", end.get("stopped")),
                    ("failure", failure.get("kind")),
                    ("why", failure.get("reason")),
                ],
            )
            if end.get("log_tail") and end.get("outcome") != "succeeded":
                lines += ["  last lines of the log:"] + [f"    {line}" for line in end["log_tail"][-15:]]
    artifacts = job.get("artifacts") or []
    if artifacts:
        lines.append("artifacts")
        lines += [
            f"  {a.get('kind', ''):<22} {a.get('bytes', 0):>12,} B  {a.get('path')}" for a in artifacts[:20]
        ]
    return "\n".join(lines)


def gpus_table(body: Mapping[str, Any]) -> str:
    """`/v1/gpus` as nvidia-smi-like lines: memory, utilisation, the job holding each GPU, and
    the processes on it that are not ours (a GPU with one is never given to a job)."""
    gpus = body.get("gpus") or []
    if not gpus:
        return "no GPUs (jobs run in the CPU slots: gpus: 0, or no gpus key)"
    lines = [f"{'GPU':>3}  {'NAME':<24} {'MEMORY USED':>22}  {'UTIL':>4}  {'JOB':<20} FOREIGN PROCESSES"]
    for g in gpus:
        lease = g.get("lease")
        job = f"{lease['job']} {lease['name']}" if lease else "-"
        foreign = [p for p in g.get("processes") or [] if p.get("foreign")]
        strangers = ", ".join(f"pid {p['pid']} ({p['used_mib']:,} MiB)" for p in foreign) or "-"
        memory = f"{g.get('memory_used_mib', 0):,} / {g.get('memory_total_mib', 0):,} MiB"
        lines.append(
            f"{g.get('index', ''):>3}  {str(g.get('name', ''))[:24]:<24} {memory:>22}  "
            f"{g.get('utilization_pct', 0):>3.0f}%  {job[:20]:<20} {strangers}"
        )
    lines.append(f"(probed {body.get('probed_s_ago', 0):.0f} s ago)")
    return "\n".join(lines)


def _gpu_line(gpus: Mapping[str, Any]) -> str:
    n = gpus.get("count") or 0
    if not n:
        return "none (CPU slots)"
    return f"{n}: {gpus.get('leased', 0)} running a job, {gpus.get('free', 0)} free, {gpus.get('foreign', 0)} with foreign processes"


def status_lines(body: Mapping[str, Any]) -> list[str]:
    counts = body.get("jobs") or {}
    rows = [
        ("version", body.get("version")),
        ("healthy", "yes" if body.get("healthy") else f"NO: {body.get('health_reason')}"),
        ("uptime", f"{body.get('uptime_s', 0):.0f} s"),
        ("last event", body.get("last_seq")),
        ("GPUs", _gpu_line(body.get("gpus") or {})),
        ("executor", _executor_line(body.get("executor") or {})),
        ("jobs", ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"),
    ]
    return [f"{k:<12} {v}" for k, v in rows]


def _executor_line(executor: Mapping[str, Any]) -> str:
    """`local`, or `slurm: ...` with the cluster as sinfo and squeue last showed it."""
    kind = str(executor.get("kind") or "local")
    cluster = executor.get("slurm")
    if kind != "slurm" or not isinstance(cluster, Mapping):
        return kind
    if cluster.get("nodes") is None:
        return f"slurm: {cluster.get('error') or 'no answer from sinfo yet'}"
    jobs = ", ".join(f"{n} {s.lower()}" for s, n in (cluster.get("jobs") or {}).items()) or "no jobs"
    partitions = ", ".join(cluster.get("partitions") or []) or "none"
    line = (
        f"slurm: {cluster['nodes_up']}/{cluster['nodes']} nodes up, {cluster['cpus']} CPUs, "
        f"{cluster['gpus']} GPUs; partitions {partitions}; {jobs}"
    )
    return line + (f" (sinfo: {cluster['error']})" if cluster.get("error") else "")
