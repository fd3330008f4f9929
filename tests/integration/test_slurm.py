"""The Slurm executor against a real Slurm started on this machine (tests/slurm_cluster.py: munged,
slurmctld and two slurmd with -N n1/n2), a real daemon and real swift on the tiny model."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon
from tests.integration.test_runs import finished, job_yaml, maybe_job, sft_rows
from tests.slurm_cluster import SlurmCluster, available

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]


def slurm_config(poll_s: float = 0.5) -> str:
    return f"""
[runs]
stop_grace_s = 3
poll_s = 0.2
schedule_s = 0.5
[executor]
kind = "slurm"
[slurm]
poll_s = {poll_s}
python = "{sys.executable}"
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    """In a folder of its own under /tmp: pytest's are owner-only, and munged runs as munge."""
    why = available()
    if why is not None:
        pytest.fail(f"a real Slurm is needed here ({why}); `make test-slurm` installs it as root")
    c = SlurmCluster(Path(tempfile.mkdtemp(prefix="llmtraind-slurm-")))
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture
def daemon(daemon_factory: type[Daemon], tmp_path: Path, cluster: SlurmCluster) -> Daemon:
    return daemon_factory(tmp_path / "d", extra_config=slurm_config(), env=cluster.env).start()


def events_of(d: Daemon, ref: str) -> list[dict[str, Any]]:
    code, body = d.get(f"/v1/jobs/{ref}/events")
    assert code == 200, body
    return list(body["events"])


def slurm_jobs_named(cluster: SlurmCluster, name: str) -> list[dict[str, Any]]:
    return [j for j in json.loads(cluster.run("squeue", "--json"))["jobs"] if j["name"] == name]


def test_a_lora_sft_runs_through_sbatch_to_succeeded(
    daemon: Daemon, tiny_model: Path, cluster: SlurmCluster
) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("tune.yaml", job_yaml(tiny_model, "lora", dataset="chat", max_steps=3, logging_steps=1))
    body = finished(d, "tune", 200)
    assert body["state"] == "succeeded", (body["reason"], d.log()[-3000:])
    run = body["run"]
    assert run["command"].startswith("#!/bin/bash") and "#SBATCH --ntasks-per-node=1" in run["command"]
    script = Path(run["run_dir"]) / "slurm.sbatch"
    assert script.read_text() == run["command"], "the script kept in the run folder is the run's command"
    assert body["metrics"] is not None and body["progress"]["step"] == 3
    code, metrics = d.get("/v1/jobs/tune/metrics")
    assert code == 200 and len(metrics["metrics"]) >= 3
    assert any(a["kind"] == "adapter" for a in body["artifacts"])
    types = [e["type"] for e in events_of(d, "tune")]
    assert types.count("SlurmSubmitted") == 1 and types.count("RunExited") == 1
    assert types.index("SlurmSubmitted") < types.index("SlurmJobState")
    [slurm_job] = slurm_jobs_named(cluster, f"llmtraind-{_log_id(d)}-{body['id']}-1")
    assert slurm_job["job_state"] == "COMPLETED"
    code, status = d.get("/v1/status")
    assert status["executor"]["kind"] == "slurm"
    assert status["executor"]["slurm"]["nodes"] == 2 and status["executor"]["slurm"]["partitions"] == [
        "debug"
    ]


def _log_id(d: Daemon) -> str:
    return (d.state / "log-id").read_text().strip()[:8]


def test_an_unknown_partition_fails_naming_it(daemon: Daemon, tiny_model: Path) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("lost.yaml", job_yaml(tiny_model, "lora", dataset="chat", slurm={"partition": "nosuchpart"}))
    body = finished(d, "lost", 60)
    assert body["state"] == "failed"
    assert "nosuchpart" in body["reason"] and "invalid partition" in body["reason"], body["reason"]


def test_a_job_bigger_than_the_cluster_waits_with_slurms_reason_and_cancels(
    daemon: Daemon, tiny_model: Path, cluster: SlurmCluster
) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop("huge.yaml", job_yaml(tiny_model, "lora", dataset="chat", nodes=3))
    body = d.wait_for(
        "Slurm's pending reason",
        lambda: (b := maybe_job(d, "huge")).get("reason", "").startswith("Slurm job") and b,
        60,
    )
    assert body["state"] == "running" and "pending (PartitionConfig)" in body["reason"], body["reason"]
    assert body["run"]["slurm"]["state"] == "PENDING"
    d.drop("stop.yaml", "cancel: huge\n")
    done = finished(d, "huge", 60)
    assert done["state"] == "cancelled"
    [slurm_job] = slurm_jobs_named(cluster, f"llmtraind-{_log_id(d)}-{done['id']}-1")
    assert slurm_job["job_state"] == "CANCELLED", "the cancel reached scancel"


def test_a_daemon_killed_after_sbatch_and_mid_run_submits_once_and_records_one_end(
    daemon_factory: type[Daemon], tmp_path: Path, tiny_model: Path, cluster: SlurmCluster
) -> None:
    env = cluster.env | {"LLMTRAIND_TEST_SLURM_EXIT_AFTER_SBATCH": "1"}
    d = daemon_factory(tmp_path / "d", extra_config=slurm_config(), env=env).start()
    d.drop("chat.jsonl", sft_rows())
    d.drop("once.yaml", job_yaml(tiny_model, "lora", dataset="chat", max_steps=12, logging_steps=1))
    assert d.proc is not None
    d.proc.wait(60)  # it died right after sbatch accepted the job, before recording its id
    d.env = dict(cluster.env)
    d.start()
    body = d.wait_for("progress", lambda: (b := maybe_job(d, "once")).get("progress") and b, 150)
    name = f"llmtraind-{_log_id(d)}-{body['id']}-1"
    assert len(slurm_jobs_named(cluster, name)) == 1, "found again by its name, not submitted twice"
    d.stop(signal.SIGKILL)
    d.start()
    done = finished(d, "once", 200)
    assert done["state"] == "succeeded", (done["reason"], d.log()[-3000:])
    types = [e["type"] for e in events_of(d, "once")]
    assert types.count("JobStarted") == 1 and types.count("SlurmSubmitted") == 1
    assert types.count("RunExited") == 1
    assert len(slurm_jobs_named(cluster, name)) == 1


def processes_naming(text: str) -> list[str]:
    """Command lines of live processes that name `text` (a run's output folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_a_two_node_job_trains_across_both_nodes_and_a_cancel_leaves_no_process(
    daemon: Daemon, tiny_model: Path, cluster: SlurmCluster
) -> None:
    d = daemon
    d.drop("chat.jsonl", sft_rows())
    d.drop(
        "pair.yaml",
        job_yaml(tiny_model, "lora", dataset="chat", nodes=2, max_steps=3, logging_steps=1),
    )
    body = finished(d, "pair", 240)
    assert body["state"] == "succeeded", (body["reason"], d.log()[-3000:])
    run = body["run"]
    assert run["slurm"]["nodes"] == "n[1-2]" and "--nnodes=2" in run["command"]
    assert "--ddp_backend \\\n    gloo" in run["command"], "CPU nodes train together over gloo"
    assert body["progress"]["step"] == 3 and body["metrics"] is not None, "rank 0's metrics"
    log = Path(run["log"]).read_text(errors="replace")
    assert "rank: 1, local_rank: 0, world_size: 2" in log, "the second node's torchrun joined"
    records = [json.loads(r) for r in Path(run["output_dir"], "logging.jsonl").read_text().splitlines()]
    steps = [r.get("global_step/max_steps") for r in records if "loss" in r]
    assert steps == ["1/3", "2/3", "3/3"], ("one data-parallel training, logged by rank 0 only", records)

    d.drop("long.yaml", job_yaml(tiny_model, "lora", dataset="chat", nodes=2, max_steps=500))
    running = d.wait_for("training", lambda: (b := maybe_job(d, "long")).get("progress") and b, 200)
    output = running["run"]["output_dir"]
    assert processes_naming(output), "swift runs on the nodes"
    d.drop("stop.yaml", "cancel: long\n")
    done = finished(d, "long", 60)
    assert done["state"] == "cancelled"
    d.wait_for("no process left on either node", lambda: not processes_naming(output), 30)
