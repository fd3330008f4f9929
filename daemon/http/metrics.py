"""/metrics in the Prometheus text format, computed from the folded state when it is scraped.

Nothing in the daemon increments a metric: a scrape reads the state (jobs, their runs' progress, the
intake counts), the last GPU probe and the SSE hub's counts, and renders them through
prometheus-client's own families and exposition code. Counters here are monotonic because the state
is: the intake counts only grow as events are folded.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from daemon.core.deployment import serves
from daemon.core.state import WAITING, State
from daemon.http.views import JOB_STATES

__all__ = ["CONTENT_TYPE", "QUEUE_WAIT_BUCKETS", "Scrape", "families", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
QUEUE_WAIT_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0)
"""Seconds from a job's submission to its first start."""
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Scrape:
    """Everything one scrape reports, read at scrape time."""

    state: State
    now: float
    """Wall-clock time (the state's timestamps are wall-clock)."""
    version: str
    uptime_s: float
    healthy: bool
    last_seq: int
    gpus: list[dict[str, Any]] = field(default_factory=list)
    """`views.gpus_view` of the last probe."""
    sse_clients: dict[str, int] = field(default_factory=dict)
    sse_dropped: int = 0
    sse_buffered_bytes: int = 0
    disk: Mapping[str, Any] = field(default_factory=dict)
    """The state folder's free space (`daemon.core.disk.disk_view`)."""
    notify: list[dict[str, Any]] = field(default_factory=list)
    """The notifier's target views (GET /v1/notify's `targets`)."""
    executor: Mapping[str, Any] = field(default_factory=dict)
    """/v1/status's `executor`: the kind, and for Slurm the cluster summary."""


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _daemon(s: Scrape) -> Iterable[Metric]:
    info = GaugeMetricFamily("llmtraind_info", "The daemon's version.", labels=["version"])
    info.add_metric([s.version], 1)
    yield info
    yield _gauge("llmtraind_healthy", "1 while the event log can be written.", 1 if s.healthy else 0)
    yield _gauge("llmtraind_uptime_seconds", "Seconds since this daemon started.", s.uptime_s)
    yield _gauge("llmtraind_event_log_last_seq", "The seq of the newest event in the log.", s.last_seq)
    yield _gauge("llmtraind_datasets", "Datasets accepted (distinct contents).", len(s.state.datasets))


def _jobs(s: Scrape) -> Iterable[Metric]:
    """Comprehensions over the jobs, not a loop: a scrape of 10,000 jobs is some 5 ms of work on the
    loop, not 30."""
    jobs = s.state.jobs.values()
    counts = Counter(j.state for j in jobs)
    waiting_since = [j.submitted_ts for j in jobs if j.state in WAITING]
    waits = [j.runs[0].placed_ts - j.submitted_ts for j in jobs if j.runs]
    by_state = GaugeMetricFamily("llmtraind_jobs", "Jobs by state.", labels=["state"])
    for name in JOB_STATES:
        by_state.add_metric([name], counts[name])
    yield by_state
    yield _gauge("llmtraind_queue_length", "Jobs waiting to run (queued or interrupted).", len(waiting_since))
    oldest = max((s.now - ts for ts in waiting_since), default=0.0)
    yield _gauge(
        "llmtraind_queue_oldest_wait_seconds", "How long the longest-waiting job has waited.", oldest
    )
    waits.sort()
    counts_le = [bisect_right(waits, b) for b in QUEUE_WAIT_BUCKETS]
    hist = HistogramMetricFamily(
        "llmtraind_queue_wait_seconds", "Seconds from a job's submission to its first start."
    )
    hist.add_metric(
        [],
        [(repr(b), c) for b, c in zip(QUEUE_WAIT_BUCKETS, counts_le, strict=True)] + [("+Inf", len(waits))],
        sum_value=sum(waits),
    )
    yield hist


def _running(s: Scrape) -> Iterable[Metric]:
    labels = ["job", "name", "project"]
    fams = {
        "progress": GaugeMetricFamily(
            "llmtraind_job_progress_ratio", "Steps done / max steps of a running job.", labels=labels
        ),
        "step": GaugeMetricFamily("llmtraind_job_step", "A running job's training step.", labels=labels),
        "max_steps": GaugeMetricFamily(
            "llmtraind_job_max_steps", "A running job's step count.", labels=labels
        ),
        "eta": GaugeMetricFamily(
            "llmtraind_job_eta_seconds", "Time left, as swift estimates it.", labels=labels
        ),
        "loss": GaugeMetricFamily("llmtraind_job_loss", "A running job's last training loss.", labels=labels),
        "speed": GaugeMetricFamily(
            "llmtraind_job_train_speed_seconds_per_iteration",
            "A running job's training speed (swift's train_speed(s/it)).",
            labels=labels,
        ),
    }
    for job in s.state.jobs.values():
        if job.state != "running":
            continue
        p = job.run.progress if job.run is not None else None
        if p is None:
            continue
        key = [str(job.id), job.name, job.project]
        fams["progress"].add_metric(key, p.percent / 100.0)
        fams["step"].add_metric(key, p.step)
        fams["max_steps"].add_metric(key, p.max_steps)
        if p.eta_s is not None:
            fams["eta"].add_metric(key, p.eta_s)
        if p.loss is not None:
            fams["loss"].add_metric(key, p.loss)
        if p.train_speed is not None:
            fams["speed"].add_metric(key, p.train_speed)
    yield from fams.values()


_EVAL_TIMING = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def _evals(s: Scrape) -> Iterable[Metric]:
    """Each job's last evaluation (its current or last attempt), every metric under swift's name
    without the `eval_` prefix: loss, token_acc, and rouge-l / bleu-4 with predict_with_generate."""
    fam = GaugeMetricFamily(
        "llmtraind_job_eval",
        "A job's last evaluation metrics (eval_loss, eval_rouge-l, ... as swift logs them).",
        labels=["job", "name", "project", "metric"],
    )
    step = GaugeMetricFamily(
        "llmtraind_job_eval_step", "The step of a job's last evaluation.", labels=["job", "name", "project"]
    )
    for job in s.state.jobs.values():
        e = job.runs[-1].last_eval if job.runs else None
        if e is None:
            continue
        key = [str(job.id), job.name, job.project]
        step.add_metric(key, e.step)
        for name, value in e.raw.items():
            if name.startswith("eval_") and not name.endswith(_EVAL_TIMING):
                fam.add_metric([*key, name.removeprefix("eval_")], value)
    yield fam
    yield step


def _disk(s: Scrape) -> Iterable[Metric]:
    if "free_bytes" not in s.disk:
        return
    yield _gauge(
        "llmtraind_state_disk_free_bytes", "Free space under the state folder.", s.disk["free_bytes"]
    )
    yield _gauge(
        "llmtraind_state_disk_min_free_bytes",
        "[runs] min_free_disk_gib: no run starts with less free (0: no guard).",
        s.disk["min_free_bytes"],
    )


def _gpus(s: Scrape) -> Iterable[Metric]:
    labels = ["gpu", "uuid", "name"]
    total = GaugeMetricFamily("llmtraind_gpu_memory_total_bytes", "GPU memory.", labels=labels)
    used = GaugeMetricFamily("llmtraind_gpu_memory_used_bytes", "GPU memory in use.", labels=labels)
    util = GaugeMetricFamily("llmtraind_gpu_utilization_ratio", "GPU busy time (NVML).", labels=labels)
    leased = GaugeMetricFamily("llmtraind_gpu_leased", "1 while a job of ours runs on it.", labels=labels)
    foreign = GaugeMetricFamily(
        "llmtraind_gpu_foreign_processes", "Processes on it that are not our runs'.", labels=labels
    )
    for g in s.gpus:
        key = [str(g["index"]), g["uuid"], g["name"]]
        total.add_metric(key, g["memory_total_mib"] * _MIB)
        used.add_metric(key, g["memory_used_mib"] * _MIB)
        util.add_metric(key, g["utilization_pct"] / 100.0)
        leased.add_metric(key, 0 if g["lease"] is None else 1)
        foreign.add_metric(key, g["foreign_processes"])
    yield from (total, used, util, leased, foreign)


def _intake(s: Scrape) -> Iterable[Metric]:
    c = s.state.intake
    accepted = CounterMetricFamily(
        "llmtraind_intake_accepted", "Inbox files accepted, by kind.", labels=["kind"]
    )
    for kind, n in (("dataset", c.datasets), ("job", c.jobs), ("control", c.controls)):
        accepted.add_metric([kind], n)
    yield accepted
    yield CounterMetricFamily(
        "llmtraind_intake_duplicates", "Inbox files that repeated known content.", value=c.duplicates
    )
    yield CounterMetricFamily("llmtraind_intake_rejected", "Inbox files rejected.", value=c.rejected)
    yield _gauge("llmtraind_intake_validating", "Datasets being read now.", len(s.state.validating))


def _sse(s: Scrape) -> Iterable[Metric]:
    clients = GaugeMetricFamily("llmtraind_sse_clients", "Open SSE streams, by feed.", labels=["feed"])
    for feed in ("events", "log"):
        clients.add_metric([feed], s.sse_clients.get(feed, 0))
    yield clients
    yield CounterMetricFamily(
        "llmtraind_sse_dropped",
        "SSE streams closed because their client stopped reading.",
        value=s.sse_dropped,
    )
    yield _gauge(
        "llmtraind_sse_buffered_bytes",
        "Encoded frames the feeds keep for their clients.",
        s.sse_buffered_bytes,
    )


def _deployments(s: Scrape) -> Iterable[Metric]:
    up = GaugeMetricFamily(
        "llmtraind_deployment_up",
        "1 once a running deploy job's server has answered at url, 0 while it starts.",
        labels=["job", "name", "project", "url"],
    )
    for job in s.state.jobs.values():
        if job.state != "running":
            continue
        run = job.run
        if run is not None and serves(run.argv):
            url = run.serving.url if run.serving is not None else ""
            up.add_metric([str(job.id), job.name, job.project, url], 1 if run.serving is not None else 0)
    yield up


def _notify(s: Scrape) -> Iterable[Metric]:
    """The notifier's counts since this daemon started (a restart resets them, as Prometheus
    counters may), and each target's lag."""
    fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
        "delivered": CounterMetricFamily(
            "llmtraind_notify_delivered", "Notifications a target acknowledged.", labels=["target"]
        ),
        "failed": CounterMetricFamily(
            "llmtraind_notify_failed", "Delivery attempts that failed (each retry counts).", labels=["target"]
        ),
        "given_up": CounterMetricFamily(
            "llmtraind_notify_given_up",
            "Notifications given up after every attempt failed.",
            labels=["target"],
        ),
        "lag_s": GaugeMetricFamily(
            "llmtraind_notify_lag_seconds",
            "Age of the event a target is being sent (0 when caught up).",
            labels=["target"],
        ),
        "lag_events": GaugeMetricFamily(
            "llmtraind_notify_lag_events", "Events recorded after a target's cursor.", labels=["target"]
        ),
    }
    for t in s.notify:
        for key, fam in fams.items():
            fam.add_metric([t["name"]], t[key])
    yield from fams.values()


def _slurm(s: Scrape) -> Iterable[Metric]:
    """Only with `[executor] kind = "slurm"`: the cluster as sinfo and squeue last showed it."""
    cluster = s.executor.get("slurm")
    if not isinstance(cluster, Mapping):
        return
    for key, name, doc in (
        ("nodes", "llmtraind_slurm_nodes", "Nodes of the Slurm cluster (sinfo)."),
        ("nodes_up", "llmtraind_slurm_nodes_up", "Nodes of the Slurm cluster that are up."),
        ("cpus", "llmtraind_slurm_cpus", "CPUs of the Slurm cluster."),
        ("gpus", "llmtraind_slurm_gpus", "GPUs (gres gpu) of the Slurm cluster."),
    ):
        value = cluster.get(key)
        if isinstance(value, int):
            yield _gauge(name, doc, value)
    jobs = GaugeMetricFamily("llmtraind_slurm_jobs", "Jobs squeue lists, by Slurm state.", labels=["state"])
    for state, count in sorted((cluster.get("jobs") or {}).items()):
        jobs.add_metric([state], count)
    yield jobs
    yield _gauge("llmtraind_slurm_up", "1 while sinfo answers.", 0 if cluster.get("error") else 1)


def families(s: Scrape) -> list[Metric]:
    parts = (_daemon, _jobs, _running, _evals, _deployments, _disk, _gpus, _intake, _sse, _notify, _slurm)
    return [m for part in parts for m in part(s)]


class _Once(Collector):
    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterable[Metric]:
        return families(self.scrape)


def render(s: Scrape) -> bytes:
    """The text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Once(s))
    return generate_latest(registry)
