"""The Slurm executor's pure parts: squeue/sinfo JSON read into our terms, a job's end mapped onto
our outcomes and failure classes, and the sbatch script of an attempt."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from daemon.cli.client import status_lines
from daemon.core.events import JobStarted
from daemon.core.state import State
from daemon.http.metrics import Scrape, render
from daemon.runs.slurm.executor import shared_root_problem
from daemon.runs.slurm.script import ScriptOptions, batch_script, job_name, slurm_time
from daemon.runs.slurm.states import SlurmJob, cluster_summary, ended, parse_squeue, pending_reason


def squeue(*jobs: dict[str, object]) -> str:
    return json.dumps({"meta": {}, "errors": [], "jobs": list(jobs)})


def test_squeue_json_is_read_as_slurm_22_05_writes_it() -> None:
    text = squeue(
        {
            "job_id": 4,
            "name": "a",
            "job_state": "PENDING",
            "state_reason": "Resources",
            "exit_code": 0,
            "nodes": "",
        },
        {
            "job_id": 5,
            "name": "b",
            "job_state": "FAILED",
            "state_reason": "NonZeroExitCode",
            "exit_code": 768,
        },
        {"job_id": 6, "name": "c", "job_state": ["RUNNING"], "state_reason": "None", "nodes": "n[1-2]"},
        {"name": "no id"},
    )
    a, b, c = parse_squeue(text)
    assert a == SlurmJob(4, "a", "PENDING", "Resources", 0, "")
    assert a.active and pending_reason(a) == "Slurm job 4 is pending (Resources)"
    assert b.exit_status == 768 and not b.active
    assert c.state == "RUNNING" and c.reason is None and c.nodes == "n[1-2]"


@pytest.mark.parametrize("text", ["[]", "{}", '{"jobs": 3}', "not json"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_squeue(text)


def job(state: str, status: int = 0) -> SlurmJob:
    return SlurmJob(7, "x", state, None, status, "n1")


def test_completed_and_failed_end_with_the_exit_status() -> None:
    assert ended(job("COMPLETED"), 7, None).returncode == 0
    assert ended(job("FAILED", 768), 7, None).returncode == 3
    assert ended(job("FAILED", 9), 7, None).returncode == -9
    assert ended(job("FAILED", 768), 7, {"returncode": 1}).returncode == 1, "the script's own word first"


def test_slurm_stops_map_onto_cancel_and_timeout() -> None:
    assert ended(job("CANCELLED"), 7, None).stopped == "cancel"
    assert ended(job("TIMEOUT"), 7, None).stopped == "timeout"
    assert ended(job("DEADLINE"), 7, None).stopped == "timeout"


def test_slurm_failures_get_their_class() -> None:
    oom = ended(job("OUT_OF_MEMORY"), 7, None).failure
    assert oom is not None and oom.kind == "out_of_memory" and not oom.transient
    for state in ("NODE_FAIL", "BOOT_FAIL", "PREEMPTED"):
        node = ended(job(state), 7, None).failure
        assert node is not None and node.kind == "node_failure" and node.transient and state in node.reason


def test_a_job_slurm_forgot_is_reported_unless_it_left_its_exit_status() -> None:
    gone = ended(None, 7, None)
    assert gone.returncode is None and gone.failure is not None
    assert "Slurm no longer knows job 7" in gone.failure.reason
    assert ended(None, 7, {"returncode": 0}).returncode == 0


def test_sinfo_json_sums_up_the_cluster() -> None:
    nodes = [
        {
            "name": "n1",
            "state": "idle",
            "state_flags": [],
            "cpus": 4,
            "gres": "gpu:a100:2(S:0)",
            "partitions": ["gpu"],
        },
        {
            "name": "n2",
            "state": "down",
            "state_flags": ["NOT_RESPONDING"],
            "cpus": 4,
            "gres": "",
            "partitions": ["cpu"],
        },
        {
            "name": "n3",
            "state": "mixed",
            "state_flags": [],
            "cpus": 8,
            "gres": "gpu:4",
            "partitions": ["gpu", "cpu"],
        },
    ]
    c = cluster_summary(json.dumps({"nodes": nodes}))
    assert (c.partitions, c.nodes, c.nodes_up, c.cpus, c.gpus) == (("cpu", "gpu"), 3, 2, 16, 6)


def started(tmp: Path, **kw: object) -> JobStarted:
    fields: dict[str, object] = {
        "job_id": 3,
        "attempt": 2,
        "gpu_uuids": [],
        "gpu_indices": [],
        "argv": [
            "/venv/bin/python",
            "-m",
            "swift.cli.sft",
            "--output_dir",
            str(tmp / "out"),
            "--api_key",
            "${LLMTRAIND_ARG_API_KEY}",
        ],
        "env": {"MASTER_PORT": "29511", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"},
        "unset_env": ["NPROC_PER_NODE"],
        "command": "",
        "run_dir": str(tmp),
        "output_dir": str(tmp / "out"),
        "log": str(tmp / "job.log"),
        "inputs": {},
    }
    return JobStarted.model_validate(fields | kw)


def test_the_script_asks_for_one_task_per_node_and_names_the_attempt(tmp_path: Path) -> None:
    name = job_name("0123456789abcdef", 3, 2)
    assert name == "llmtraind-01234567-3-2"
    options = ScriptOptions(
        name=name, nodes=2, gpus_per_node=4, master_port=29511, partition="gpu", qos="", time="90",
        job_options={"qos": "high", "cpus_per_task": "8"}, sbatch_args=("--exclusive",),
    )  # fmt: skip
    text = batch_script(started(tmp_path), options)
    directives = [shlex.split(line)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert f"--job-name={name}" in directives and f"--comment={name}" in directives
    assert {"--nodes=2", "--ntasks-per-node=1", "--gres=gpu:4", "--partition=gpu", "--time=90"} <= set(
        directives
    )
    assert {"--qos=high", "--cpus-per-task=8", "--exclusive", "--open-mode=append"} <= set(directives)
    assert f"--output={tmp_path / 'job.log'}" in directives and f"--chdir={tmp_path}" in directives
    assert "CUDA_VISIBLE_DEVICES" not in text.split("unset CUDA_VISIBLE_DEVICES")[1], (
        "the allocation decides GPUs"
    )
    assert "--nnodes=2" in text and "--nproc_per_node=4" in text and "PET_NODE_RANK=$SLURM_NODEID" in text
    assert '"${LLMTRAIND_ARG_API_KEY}"' in text, "a secret placeholder stays expandable"
    assert "export NNODES=2 NPROC_PER_NODE=4 MASTER_PORT=29511" in text
    assert slurm_time(61) == "2" and slurm_time(None) is None


def test_nodes_without_gpus_train_together_over_gloo(tmp_path: Path) -> None:
    text = batch_script(started(tmp_path), ScriptOptions(name="n", nodes=2))
    assert text.replace(" \\\n    ", " ").count("--ddp_backend gloo") == 1
    gpus = batch_script(started(tmp_path), ScriptOptions(name="n", nodes=2, gpus_per_node=1))
    assert "--ddp_backend" not in gpus, "swift's default (nccl) on GPUs"


def test_one_node_without_gpus_runs_swift_itself(tmp_path: Path) -> None:
    text = batch_script(started(tmp_path), ScriptOptions(name="n"))
    assert "torch.distributed.run" not in text and "--gres" not in text
    assert "/venv/bin/python -m swift.cli.sft" in text.replace(" \\\n    ", " ")


def test_the_script_is_valid_bash(tmp_path: Path) -> None:
    text = batch_script(started(tmp_path), ScriptOptions(name="n", nodes=2))
    done = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr


def test_metrics_gain_slurm_gauges_only_with_slurm() -> None:
    def scrape(executor: dict[str, object]) -> str:
        s = Scrape(
            state=State(), now=0.0, version="x", uptime_s=1.0, healthy=True, last_seq=0, executor=executor
        )
        return render(s).decode()

    assert "llmtraind_slurm" not in scrape({"kind": "local", "slurm": None})
    cluster = {
        "partitions": ["debug"],
        "nodes": 2,
        "nodes_up": 2,
        "cpus": 2,
        "gpus": 0,
        "jobs": {"PENDING": 1},
    }
    text = scrape({"kind": "slurm", "slurm": cluster | {"error": None}})
    assert "llmtraind_slurm_nodes_up 2.0" in text and 'llmtraind_slurm_jobs{state="PENDING"} 1.0' in text
    assert "llmtraind_slurm_up 1.0" in text


def test_llmtraind_status_names_the_executor_and_the_cluster() -> None:
    local = status_lines({"executor": {"kind": "local", "slurm": None}})
    assert "executor     local" in local
    cluster = {
        "partitions": ["debug"],
        "nodes": 2,
        "nodes_up": 1,
        "cpus": 2,
        "gpus": 0,
        "jobs": {"PENDING": 1},
    }
    [line] = [x for x in status_lines({"executor": {"kind": "slurm", "slurm": cluster}}) if "executor" in x]
    assert line == "executor     slurm: 1/2 nodes up, 2 CPUs, 0 GPUs; partitions debug; 1 pending"


def test_a_shared_root_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    assert shared_root_problem(tmp_path / "runs") is None
    (tmp_path / "file").write_text("x")
    problem = shared_root_problem(tmp_path / "file")
    assert problem is not None and "[slurm] shared_root" in problem and str(tmp_path / "file") in problem
