"""What squeue and sinfo say, read into our terms. Pure: the executor hands in their JSON text.

`squeue --json` (openapi v0.0.38 in Slurm 22.05) lists every job the controller still knows,
finished ones for MinJobAge; it ignores `-j`, so jobs are picked out here by id or by name.
`exit_code` is the batch script's raw wait status (768 = exit 3, 9 = SIGKILL).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.runs.swift.failures import Failure

__all__ = [
    "ACTIVE",
    "Cluster",
    "SlurmEnd",
    "SlurmJob",
    "cluster_summary",
    "ended",
    "parse_squeue",
    "pending_reason",
]

ACTIVE = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING"}
)
"""States in which the job's end is still to come; any other is final."""


@dataclass(frozen=True)
class SlurmJob:
    job_id: int
    name: str
    state: str
    reason: str | None
    """Slurm's state_reason ("Resources", "Priority", "QOSMaxGRESPerUser", ...); None for "None"."""
    exit_status: int
    """The batch script's raw wait status."""
    nodes: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def _text(job: Mapping[str, Any], key: str) -> str:
    value = job.get(key)
    return value if isinstance(value, str) else ""


def _state(job: Mapping[str, Any]) -> str:
    value = job.get("job_state")
    if isinstance(value, list):  # newer openapi versions give a list of flags
        value = value[0] if value else ""
    return str(value or "").upper()


def parse_squeue(text: str) -> list[SlurmJob]:
    """Every job in `squeue --json`'s output; raises ValueError when it is not that output."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise ValueError("squeue --json gave no job list")
    found = []
    for job in data["jobs"]:
        if not isinstance(job, dict) or not isinstance(job.get("job_id"), int):
            continue
        reason = _text(job, "state_reason")
        status = job.get("exit_code")
        found.append(
            SlurmJob(
                job_id=job["job_id"],
                name=_text(job, "name"),
                state=_state(job),
                reason=None if reason in ("", "None") else reason,
                exit_status=status if isinstance(status, int) else 0,
                nodes=_text(job, "nodes"),
            )
        )
    return found


def pending_reason(job: SlurmJob) -> str:
    """The reason a person reads while the job waits in Slurm's queue."""
    why = f" ({job.reason})" if job.reason else ""
    return f"Slurm job {job.job_id} is {job.state.lower()}{why}"


@dataclass(frozen=True)
class SlurmEnd:
    """How an attempt ended as Slurm and the batch script tell it, in the runner's terms."""

    returncode: int | None
    stopped: str | None
    """"cancel" or "timeout" as for a local run."""
    error: str | None
    failure: Failure | None = None
    """A class Slurm itself decided (node failure, its out-of-memory killer); None: the log decides."""


_NODE_TROUBLE = {
    "NODE_FAIL": "a node of the allocation failed",
    "BOOT_FAIL": "a node of the allocation failed to boot",
    "PREEMPTED": "Slurm preempted the job",
}


def _status(raw: int) -> int:
    """A raw wait status as subprocess reports it: the exit code, or minus the signal."""
    return -(raw & 0x7F) if raw & 0x7F else (raw >> 8) & 0xFF


def ended(job: SlurmJob | None, slurm_id: int, exit_info: Mapping[str, Any] | None) -> SlurmEnd:
    """The end of a job that left the active states (or that Slurm no longer knows: `job` None).
    `exit_info` is what the batch script wrote when swift ended (its exit.json), when it did."""
    code = exit_info.get("returncode") if exit_info is not None else None
    returncode = code if isinstance(code, int) else None
    if job is None:
        if returncode is not None:
            return SlurmEnd(returncode, None, None)
        why = f"Slurm no longer knows job {slurm_id}, and the job left no exit status"
        return SlurmEnd(None, None, why, Failure("unknown", False, why))
    state = job.state
    if state == "COMPLETED":
        return SlurmEnd(0 if returncode is None else returncode, None, None)
    if state == "CANCELLED":
        return SlurmEnd(returncode, "cancel", None)
    if state in ("TIMEOUT", "DEADLINE"):
        return SlurmEnd(returncode, "timeout", None)
    if state == "OUT_OF_MEMORY":
        why = f"Slurm job {slurm_id} ran out of memory (OUT_OF_MEMORY); ask for more with slurm: {{mem: ...}}"
        return SlurmEnd(returncode, None, None, Failure("out_of_memory", False, why))
    if state in _NODE_TROUBLE:
        why = f"{_NODE_TROUBLE[state]} ({state}, Slurm job {slurm_id})"
        return SlurmEnd(returncode, None, None, Failure("node_failure", True, why))
    return SlurmEnd(_status(job.exit_status) if returncode is None else returncode, None, None)


@dataclass(frozen=True)
class Cluster:
    """What `sinfo --json` says, summed up for /v1/status and /metrics."""

    partitions: tuple[str, ...]
    nodes: int
    nodes_up: int
    cpus: int
    gpus: int


_DOWN = ("down", "drain", "fail", "future", "unknown", "not_responding", "power")


def _gres_gpus(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def cluster_summary(text: str) -> Cluster:
    """The cluster in `sinfo --json`'s output; raises ValueError when it is not that output."""
    data = json.loads(text)
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, list):
        raise ValueError("sinfo --json gave no node list")
    partitions: set[str] = set()
    up = cpus = gpus = 0
    for node in nodes:
        if not isinstance(node, dict):
            continue
        partitions.update(str(p) for p in node.get("partitions") or [])
        flags = [str(f).lower() for f in node.get("state_flags") or []]
        state = str(node.get("state", "")).lower()
        if not any(word in state or word in flags for word in _DOWN):
            up += 1
        cpus += int(node.get("cpus") or 0)
        gpus += _gres_gpus(str(node.get("gres") or ""))
    return Cluster(tuple(sorted(partitions)), len(nodes), up, cpus, gpus)
