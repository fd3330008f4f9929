"""What the demo prints while it follows its jobs, and when it is over. Pure: job JSON in, lines out.

A job that can never run (its dataset was rejected, or a job it waits for failed) counts as over,
so the demo ends instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from daemon.cli.client import STATE_COLOUR
from daemon.cli.demo_files import MERGE, SFT, DemoJob
from daemon.core.state import TERMINAL
from daemon.core.streams import job_id_of

__all__ = [
    "Outcome",
    "curl_hints",
    "describe",
    "job_line",
    "line_key",
    "outcomes",
    "rejections",
    "touched_jobs",
]


class Outcome(NamedTuple):
    state: str
    """succeeded, failed or cancelled (from the daemon), rejected, or "not run"."""
    why: str = ""


def rejections(
    events: Iterable[Mapping[str, Any]], filenames: Iterable[str], rejected_dir: Path
) -> dict[str, str]:
    """The demo's files among FileRejected events -> a line saying why and where the details are.

    A rejected file never becomes a job or a dataset, so only the event log says it happened.
    """
    ours = set(filenames)
    found: dict[str, str] = {}
    for event in events:
        data = event.get("data") or {}
        if event.get("type") == "FileRejected" and data.get("filename") in ours:
            details = rejected_dir / f"{data.get('kept_as')}.error.txt"
            found[data["filename"]] = f"{data.get('summary', 'rejected')} (details: {details})"
    return found


def outcomes(
    plan: Sequence[DemoJob], jobs: Mapping[str, Mapping[str, Any]], rejected: Mapping[str, str]
) -> dict[str, Outcome | None]:
    """Each planned job's final outcome, or None while it may still run.

    A queued job whose dataset was rejected, or that waits for a job which ended without
    success, would wait for ever; it counts as over ("not run"), whatever the daemon decides
    about it later. `plan` lists every job after the jobs it waits for.
    """
    out: dict[str, Outcome | None] = {}
    for planned in plan:
        job = jobs.get(planned.name)
        state = None if job is None else job.get("state")
        result = None
        if planned.filename in rejected:
            result = Outcome("rejected", rejected[planned.filename])
        elif state in TERMINAL:
            result = Outcome(str(state), str((job or {}).get("reason") or ""))
        elif state in (None, "queued"):
            result = _blocked(planned, out, rejected)
        out[planned.name] = result
    return out


def _blocked(
    planned: DemoJob, decided: Mapping[str, Outcome | None], rejected: Mapping[str, str]
) -> Outcome | None:
    for filename in planned.needs:
        if filename in rejected:
            return Outcome("not run", f"its dataset {filename} was rejected: {rejected[filename]}")
    for dep in planned.after:
        before = decided.get(dep)
        if before is not None and before.state != "succeeded":
            return Outcome("not run", f"{dep} {before.state}")
    return None


def _number(value: Any) -> str:
    """swift logs floats as strings rounded to 4 digits, or as floats: show either the same way."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _percent(job: Mapping[str, Any]) -> int | None:
    """The daemon's percent, else one worked out from the steps: the job JSON may carry either."""
    progress = job.get("progress") or {}
    with contextlib.suppress(TypeError, ValueError, ZeroDivisionError):
        if progress.get("percent") is not None:
            return int(float(progress["percent"]))
        if progress.get("step") is not None and progress.get("max_steps"):
            return int(100 * float(progress["step"]) / float(progress["max_steps"]))
    return None


def describe(job: Mapping[str, Any]) -> str:
    """Progress, loss and the daemon's reason, as far as the job JSON has them."""
    parts = []
    percent = _percent(job)
    if percent is not None:
        parts.append(f"{percent}%")
    progress = job.get("progress") or {}
    step, total = progress.get("step"), progress.get("max_steps")
    if step is not None:
        parts.append(f"step {step}/{total}" if total else f"step {step}")
    metrics = job.get("metrics") or {}
    loss = metrics.get("loss")
    if loss is not None:  # a finished run's summary holds swift's train_loss, the run's mean
        parts.append(f"{'mean loss' if metrics.get('kind') == 'summary' else 'loss'} {_number(loss)}")
    if job.get("reason"):
        parts.append(str(job["reason"]))
    return " ".join(parts)


def line_key(job: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must change for a job to be printed again: not every poll, nor every step of a long run."""
    return job.get("state"), job.get("reason"), _percent(job)


def job_line(name: str, width: int, state: str, detail: str, color: bool) -> str:
    """`demo-sft-lora-1  running    40% step 4/10 loss 6.02`, with the state coloured on a terminal."""
    shown = f"{state:<9}"
    if color and state in STATE_COLOUR:
        shown = f"\033[{STATE_COLOUR[state]}m{shown}\033[0m"
    return f"{name:<{width}}  {shown}  {detail}".rstrip()


def curl_hints(url: str, run: int, token: bool) -> list[str]:
    """A few requests to try next; the token is never printed, only where it goes."""
    auth = ' -H "Authorization: Bearer $TOKEN"' if token else ""
    paths = ("/v1/status", "/v1/jobs", f"/v1/jobs/{SFT}-{run}/metrics", f"/v1/jobs/{MERGE}-{run}/artifacts")
    lines = [f"curl -s{auth} {url}{path}" for path in paths]
    return (["TOKEN=...  # [api] token from the config"] if token else []) + lines


def touched_jobs(recorded: Mapping[str, Any]) -> set[int]:
    """The jobs whose JSON an event (as the event feed shows it) may have changed: the job of its
    stream, or every job a JobsWaiting gives a new reason."""
    job_id = job_id_of(str(recorded.get("stream")))
    if job_id is not None:
        return {job_id}
    if recorded.get("type") == "JobsWaiting":
        reasons = (recorded.get("data") or {}).get("reasons") or {}
        return {int(k) for k in reasons if str(k).isdigit()}
    return set()
