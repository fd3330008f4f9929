"""`llmtraind demo`: the whole path a newcomer should see once, on any machine, in about a minute.

It builds the tiny model (`tinymodel`), writes three small datasets and four jobs that use them,
finds a daemon (or starts one on the same config), drops the files into the inbox the way
`llmtraind submit` does, and follows the jobs through the HTTP API until each has ended. Every
file it writes stays under `<state>/demo/`, so a person can read, `llmtraind check` and re-submit
it afterwards.

The file contents, the job texts, the progress lines and the "is everything over" decision are
pure functions; only `run_demo` and its helpers touch the disk, the network and processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from daemon.cli import tinymodel
from daemon.core.config import Config
from daemon.core.layout import InboxLayout
from daemon.intake.submit import SubmitError, deliver

__all__ = [
    "DPO",
    "MERGE",
    "PT",
    "SFT",
    "DemoError",
    "DemoJob",
    "Outcome",
    "curl_hints",
    "daemon_urls",
    "demo_datasets",
    "demo_jobs",
    "describe",
    "job_line",
    "line_key",
    "next_run",
    "outcomes",
    "rejections",
    "run_demo",
]

SFT, MERGE, DPO, PT = "demo-sft-lora", "demo-merge", "demo-dpo", "demo-pt"
"""Job names before the run number: `demo-sft-lora-3` is the third demo's LoRA job."""
PROJECT = "demo"
ROWS = 32
"""Two optimizer steps per epoch at swift's default 16 samples per step: enough to see a loss move."""
SAVE_STEPS = 5
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
POLL_S = 0.5
EVENTS_PAGE = 1000
START_TIMEOUT_S = 60.0
UNREACHABLE_TRIES = 10
"""Polls in a row that may fail (about 5 s) before the daemon counts as gone."""
QUIET_WARN_S = 20.0
"""After this long with a job neither seen nor rejected, say which inbox the files went to."""
_RUN_RE = re.compile(rf"(?:{'|'.join(map(re.escape, (SFT, MERGE, DPO, PT)))})-([0-9]{{1,9}})")
_COLORS = {"queued": "33", "running": "36", "succeeded": "32", "failed": "31", "cancelled": "35"}
_HEADER = (
    "# Written by `llmtraind demo`: check it with `llmtraind check FILE`,\n"
    "# run it again (once this job has ended) with `llmtraind submit FILE`.\n"
)


class DemoError(Exception):
    """The demo cannot go on; the message says what to do."""


class _Unreachable(DemoError):
    """No answer from the daemon: while following, a few of these in a row are tolerated."""


# ---------------------------------------------------------------------------------------------
# What the demo writes (pure)


def _sums() -> list[tuple[int, int]]:
    """Fixed two-digit pairs: the files are byte-identical on every run, so a re-run's drop of a
    dataset is recognised by the daemon as the one it already has."""
    return [(10 + 37 * i % 90, 10 + (53 * i + 17) % 90) for i in range(ROWS)]


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def demo_datasets() -> dict[str, bytes]:
    """File name -> bytes: conversations (SFT), preference pairs in the original design's
    prompt/chosen/rejected form (DPO), and plain documents (pretraining)."""
    pairs = _sums()
    sft = (
        {
            "messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
            ]
        }
        for a, b in pairs
    )
    dpo = (
        {
            "prompt": f"What is {a} plus {b}?",
            "chosen": f"{a} plus {b} is {a + b}.",
            "rejected": f"I do not know what {a} plus {b} is.",
        }
        for a, b in pairs
    )
    pt = ({"text": f"What is {a} plus {b}? {a} plus {b} is {a + b}."} for a, b in pairs)
    return {"demo_sft.jsonl": _jsonl(sft), "demo_dpo.jsonl": _jsonl(dpo), "demo_pt.jsonl": _jsonl(pt)}


@dataclass(frozen=True)
class DemoJob:
    """One demo job, with what `outcomes` needs to tell when it can never run."""

    name: str
    text: str
    """The job file's YAML."""
    needs: tuple[str, ...] = ()
    """Dataset file names it reads: if one is rejected, the job can never start."""
    after: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}.yaml"


def _yaml(fields: Mapping[str, Any]) -> str:
    return _HEADER + yaml.safe_dump(dict(fields), sort_keys=False, allow_unicode=True)


def demo_jobs(model: Path, run: int, steps: int) -> list[DemoJob]:
    """The four jobs of demo run `run`, each job after the ones it depends on.

    `gpus` is left out so the daemon's default applies (one GPU, or a CPU slot on a box without);
    the model is named by its absolute directory, as swift needs for offline runs.
    """
    sft, merge, dpo, pt = (f"{base}-{run}" for base in (SFT, MERGE, DPO, PT))

    def training(name: str, task: dict[str, Any], dataset: str) -> DemoJob:
        fields = {
            "name": name,
            "project": PROJECT,
            **task,
            "model": str(model),
            "model_type": "qwen2",  # the tiny model also matches qwen2_gte; swift wants to be told
            "template": "qwen",
            "dataset": dataset,
            "max_steps": steps,
            "save_steps": SAVE_STEPS,
        }
        return DemoJob(name, _yaml(fields), needs=(f"{dataset}.jsonl",))

    export = {"name": merge, "project": PROJECT, "task_type": "export", "adapters": f"@{sft}"}
    return [
        training(sft, {"task_type": "sft", "tuner": "lora"}, "demo_sft"),
        DemoJob(merge, _yaml({**export, "merge_lora": True}), after=(sft,)),
        training(dpo, {"task_type": "rl", "algorithm": "dpo", "tuner": "lora"}, "demo_dpo"),
        training(pt, {"task_type": "pretrain", "tuner": "full"}, "demo_pt"),
    ]


def next_run(names: Iterable[str]) -> int:
    """One more than the highest demo run number among `names`: a live job's name cannot be
    taken again, and distinct names keep each run's jobs and `@` references apart."""
    runs = [int(m[1]) for name in names if (m := _RUN_RE.fullmatch(name))]
    return max(runs, default=0) + 1


# ---------------------------------------------------------------------------------------------
# Following (pure)


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
    if color and state in _COLORS:
        shown = f"\033[{_COLORS[state]}m{shown}\033[0m"
    return f"{name:<{width}}  {shown}  {detail}".rstrip()


def curl_hints(url: str, run: int, token: bool) -> list[str]:
    """A few requests to try next; the token is never printed, only where it goes."""
    auth = ' -H "Authorization: Bearer $TOKEN"' if token else ""
    paths = ("/v1/status", "/v1/jobs", f"/v1/jobs/{SFT}-{run}/metrics", f"/v1/jobs/{MERGE}-{run}/artifacts")
    lines = [f"curl -s{auth} {url}{path}" for path in paths]
    return (["TOKEN=...  # [api] token from the config"] if token else []) + lines


def daemon_urls(url: str | None, cfg: Config) -> list[str]:
    """Where to look for a daemon: --url alone, else the one the daemon wrote, else the config's."""
    if url:
        if not url.startswith(("http://", "https://")):
            raise DemoError(f"--url {url!r} is not an http:// or https:// address")
        return [url.rstrip("/")]
    found = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        found.append(str(json.loads((cfg.paths.state / "daemon.json").read_text())["url"]).rstrip("/"))
    if cfg.api.port:
        found.append(f"http://{cfg.api.host}:{cfg.api.port}")
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------------------------------------
# Effects: the model, the daemon, the inbox, the API


def _say(text: str = "") -> None:
    print(text, flush=True)


class _Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path)  # noqa: S310 (daemon_urls allows http(s) only)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (as above)
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise DemoError(f"GET {path}: {e.code} {_error_message(e)}") from None
        except (OSError, ValueError) as e:
            raise _Unreachable(f"no answer from the daemon at {self.url}: {e}") from None


def _error_message(e: urllib.error.HTTPError) -> str:
    """The API's own message (`{"error": {"message": ...}}`), which says more than the status line."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(e.read())["error"]["message"])
    return str(e.reason)


def _answers(url: str) -> bool:
    """Whether an llmtraind answers /healthz at `url` (an unhealthy one still counts: it is there)."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:  # noqa: S310 (http(s) only)
            body = resp.read()
    except urllib.error.HTTPError as e:
        body = e.read()
    except (OSError, ValueError):
        return False
    with contextlib.suppress(ValueError):
        return isinstance(parsed := json.loads(body), dict) and "ok" in parsed
    return False


@dataclass
class _Daemon:
    """A daemon this demo started: it is stopped again when the demo ends."""

    proc: subprocess.Popen[bytes]
    log: Path
    log_from: int
    """Where this start's output begins in the log (the file is appended to on every run)."""
    grace_s: float

    def tail(self, lines: int = 30) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(self.log_from)
                text = f.read().decode(errors="replace")
        except OSError as e:
            return f"(cannot read {self.log}: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise DemoError(f"the daemon exited with status {code}; the end of {self.log}:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: do not wait for the orderly stop
            self.proc.kill()
            self.proc.wait()
            raise


def _start_daemon(cfg: Config, config_path: Path | None, log: Path) -> tuple[_Daemon, str]:
    """`llmtraind serve` on the same config, with the same interpreter; returns it and its URL.

    It gets a session of its own so that a Ctrl-C at the terminal reaches only the demo, which
    then stops the daemon itself, after the jobs' last lines are printed.
    """
    argv = [sys.executable, "-m", "daemon", "serve"]
    if config_path is not None:
        argv += ["--config", str(config_path.resolve())]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        start = out.tell()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    daemon = _Daemon(proc, log, start, cfg.daemon.stop_timeout_s + 5)
    try:
        return daemon, _wait_until_up(daemon, cfg.paths.state / "daemon.json")
    except BaseException:
        daemon.stop()
        raise


def _wait_until_up(daemon: _Daemon, endpoint: Path) -> str:
    """The URL the daemon wrote, once it answers there; a stale daemon.json (another pid) is skipped."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        daemon.check_alive()
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            written = json.loads(endpoint.read_text())
            url = str(written["url"]).rstrip("/")
            if written["pid"] == daemon.proc.pid and _answers(url):
                return url
        time.sleep(0.1)
    raise DemoError(
        f"the daemon did not answer within {START_TIMEOUT_S:.0f} s; the end of {daemon.log}:\n{daemon.tail()}"
    )


def _ensure_model(dest: Path, python: str) -> None:
    """Build the tiny model once. With `[swift] python` set, that interpreter builds it: it has the
    transformers that will load it, and this one may have none."""
    if dest.is_dir():  # build_tiny_model renames a complete model into place, so it is whole
        _say(f"model     {dest} (built before)")
        return
    _say(f"model     building the tiny Qwen2 model into {dest} (a few seconds)")
    if python:
        done = subprocess.run(
            [python, tinymodel.__file__, str(dest)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DemoError(f"{python} could not build the tiny model:\n{done.stderr[-3000:]}")
        return
    try:
        tinymodel.build_tiny_model(dest)
    except ImportError as e:
        raise DemoError(
            f"building the tiny model needs torch and transformers ({e}); install the train extra "
            "(`make setup`, or pip install -e '.[train]'), or set [swift] python to an interpreter that has them"
        ) from None


def _write(folder: Path, files: Mapping[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def _drop(inbox: InboxLayout, path: Path) -> None:
    """Submit like `llmtraind submit`; a same-named file still waiting in the inbox (left by an
    interrupted run while no daemon ran) is waited out, since the daemon takes it within seconds."""
    deadline = time.monotonic() + 10
    while True:
        try:
            deliver(inbox, path.name, path)
            return
        except (OSError, SubmitError) as e:
            if not (inbox.root / path.name).exists() or time.monotonic() > deadline:
                raise DemoError(f"cannot drop {path.name} into {inbox.root}: {e}") from None
        time.sleep(0.2)


def _find_daemon(url: str | None, cfg: Config) -> str | None:
    candidates = daemon_urls(url, cfg)
    found = next((u for u in candidates if _answers(u)), None)
    if found is None and url:
        raise DemoError(f"no llmtraind answers at {url}; leave out --url to let the demo start one")
    return found


def run_demo(
    cfg: Config, config_path: Path | None, *, url: str | None, keep_serving: bool, steps: int
) -> int:
    """The demo from start to end: 0 when every job succeeded, 1 when one did not."""
    home = cfg.paths.state / "demo"
    _ensure_model(home / "tiny-qwen2", cfg.swift.python)
    data = _write(home / "data", demo_datasets())
    daemon: _Daemon | None = None
    try:
        base = _find_daemon(url, cfg)
        if base is None:
            _say(f"daemon    none answers; starting `llmtraind serve` (its log: {home / 'daemon.log'})")
            daemon, base = _start_daemon(cfg, config_path, home / "daemon.log")
        _say(f"daemon    {base}")
        client = _Client(base, cfg.api.token)
        rc, run = _submit_and_follow(client, cfg, home, data, steps, daemon)
        _say("\nTry next:")
        for line in curl_hints(base, run, bool(client.token)):
            _say(f"  {line}")
        if daemon is None:
            _say(f"\nThe daemon at {base} was running before the demo; it keeps running.")
        elif keep_serving:
            _say(f"\nThe daemon keeps serving at {base}; press Ctrl-C to stop it.")
            with contextlib.suppress(KeyboardInterrupt):
                daemon.proc.wait()
        else:
            _say("\nThe daemon the demo started stops now: `llmtraind demo --keep-serving` leaves it up.")
        return rc
    finally:
        if daemon is not None:
            daemon.stop()
            _say(f"daemon    stopped (exit status {daemon.proc.returncode})")


def _submit_and_follow(
    client: _Client, cfg: Config, home: Path, data: list[Path], steps: int, daemon: _Daemon | None
) -> tuple[int, int]:
    """Drop the files and follow the jobs: the exit status, and the run number the jobs' names carry."""
    inbox = InboxLayout(cfg.paths.inbox)
    since = int(client.get("/v1/status")["last_seq"])
    taken = [str(job.get("name")) for job in client.get("/v1/jobs")["jobs"]]
    if inbox.root.is_dir():  # an earlier run's files the daemon has not taken yet
        taken += [p.stem for p in inbox.root.glob("*.yaml")]
    run = next_run(taken)
    plan = demo_jobs(home / "tiny-qwen2", run, steps)
    files = _write(home / "jobs", {job.filename: job.text.encode() for job in plan})
    for path in (*data, *files):
        _drop(inbox, path)
        _say(f"submitted {path.name}")
    return _follow(client, plan, since, inbox, daemon), run


def _follow(
    client: _Client, plan: list[DemoJob], since: int, inbox: InboxLayout, daemon: _Daemon | None
) -> int:
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    width = max(len(job.name) for job in plan)
    names = {job.name for job in plan}
    filenames = sorted({need for job in plan for need in job.needs}) + [job.filename for job in plan]
    shown: dict[str, tuple[Any, ...]] = {}
    rejected: dict[str, str] = {}
    started, warned, misses = time.monotonic(), False, 0
    while True:
        try:
            since = _read_rejections(client, since, filenames, inbox, rejected)
            jobs = {j["name"]: j for j in client.get("/v1/jobs")["jobs"] if j.get("name") in names}
            misses = 0
        except _Unreachable:
            if daemon is not None:
                daemon.check_alive()
            misses += 1
            if misses >= UNREACHABLE_TRIES:
                raise
            time.sleep(POLL_S)
            continue
        results = outcomes(plan, jobs, rejected)
        for job in plan:
            _show_change(job.name, width, jobs.get(job.name), results[job.name], shown, color)
        if all(result is not None for result in results.values()):
            return _summary(results)
        unseen = [j.name for j in plan if j.name not in jobs and results[j.name] is None]
        if unseen and not warned and time.monotonic() - started > QUIET_WARN_S:
            warned = True
            _say(f"note      {', '.join(unseen)} not picked up yet: does {client.url} watch {inbox.root}?")
        time.sleep(POLL_S)


def _read_rejections(
    client: _Client, after: int, filenames: list[str], inbox: InboxLayout, into: dict[str, str]
) -> int:
    while True:
        page = client.get(f"/v1/events?after={after}&limit={EVENTS_PAGE}")
        into.update(rejections(page["events"], filenames, inbox.rejected))
        after = int(page["next_after"])
        if len(page["events"]) < EVENTS_PAGE:
            return after


def _show_change(
    name: str,
    width: int,
    job: Mapping[str, Any] | None,
    result: Outcome | None,
    shown: dict[str, tuple[Any, ...]],
    color: bool,
) -> None:
    if result is not None and (job is None or result.state not in TERMINAL):
        key: tuple[Any, ...] = result
        line = job_line(name, width, result.state, result.why, color)
    elif job is not None:
        key = line_key(job)
        line = job_line(name, width, str(job.get("state")), describe(job), color)
    else:
        return
    if shown.get(name) != key:
        shown[name] = key
        _say(line)


def _summary(results: Mapping[str, Outcome | None]) -> int:
    failed = {name: r for name, r in results.items() if r is not None and r.state != "succeeded"}
    if not failed:
        _say(f"\nAll {len(results)} demo jobs succeeded.")
        return 0
    _say(f"\n{len(failed)} of {len(results)} demo jobs did not succeed:")
    for name, result in failed.items():
        _say(f"  {name}: {result.state}" + (f": {result.why}" if result.why else ""))
    return 1
