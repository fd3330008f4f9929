"""The sbatch script of one attempt: pure text from the attempt's JobStarted and the job's Slurm keys.

One task per node (`--ntasks-per-node=1`); `srun` starts the same command on every node. A job on
one node with at most one GPU runs swift as the local executor would; more nodes or GPUs run one
`torch.distributed.run` per node with NNODES, NODE_RANK (Slurm's node id), MASTER_ADDR (the
address of the allocation's first node, from `scontrol show node`: a node's name need not
resolve) and MASTER_PORT, as ms-swift's multi-node examples set them. The script records its Slurm
job id when it starts and swift's exit status when it ends (exit.json, as the local supervisor
writes it), so a daemon that was away still learns how the run ended after Slurm forgot the job.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from daemon.core.events import JobStarted

__all__ = ["SCRIPT_FILE", "STARTED_FILE", "ScriptOptions", "batch_script", "job_name", "slurm_time"]

SCRIPT_FILE = "slurm.sbatch"
STARTED_FILE = "slurm-started.json"

_LOCAL_ONLY = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NPROC_PER_NODE", "MASTER_PORT", "MASTER_ADDR")
"""Placement the local executor decides; under Slurm the allocation and this script set them."""
_SECRET_ARG = re.compile(r"\$\{[A-Z_][A-Z0-9_]*\}")


def job_name(log_id: str, job_id: int, attempt: int) -> str:
    """Unique to the attempt across event logs: how a restarted daemon finds a job it submitted but
    did not live to record."""
    return f"llmtraind-{log_id[:8]}-{job_id}-{attempt}"


def slurm_time(timeout_s: float | None) -> str | None:
    """sbatch's --time in whole minutes, rounded up, from the job's `timeout`."""
    return None if timeout_s is None else str(max(1, math.ceil(timeout_s / 60)))


@dataclass(frozen=True)
class ScriptOptions:
    name: str
    nodes: int = 1
    gpus_per_node: int = 0
    master_port: int = 29500
    partition: str = ""
    account: str = ""
    qos: str = ""
    time: str = ""
    job_options: Mapping[str, str] = field(default_factory=dict)
    """The job's `slurm:` block (underscore names); it wins over the config's defaults."""
    sbatch_args: Sequence[str] = ()


def _word(arg: str) -> str:
    """A secret placeholder stays expandable; everything else is quoted as it is."""
    return f'"{arg}"' if _SECRET_ARG.fullmatch(arg) else shlex.quote(arg)


def _directives(started: JobStarted, o: ScriptOptions) -> list[str]:
    options = {"partition": o.partition, "account": o.account, "qos": o.qos, "time": o.time}
    options |= {k: v for k, v in o.job_options.items()}
    lines = [
        f"--job-name={o.name}",
        f"--comment={o.name}",
        f"--nodes={o.nodes}",
        "--ntasks-per-node=1",
        f"--output={started.log}",
        f"--error={started.log}",
        "--open-mode=append",
        f"--chdir={started.run_dir}",
    ]
    if o.gpus_per_node:
        lines.append(f"--gres=gpu:{o.gpus_per_node}")
    lines += [f"--{k.replace('_', '-')}={v}" for k, v in options.items() if v]
    lines += list(o.sbatch_args)
    return [f"#SBATCH {shlex.quote(line)}" for line in lines]


def _command(started: JobStarted, o: ScriptOptions) -> list[str]:
    argv = list(started.argv)
    if o.nodes > 1 or o.gpus_per_node > 1:
        launcher = [
            "-m",
            "torch.distributed.run",
            f"--nnodes={o.nodes}",
            f"--nproc_per_node={max(1, o.gpus_per_node)}",
            "--master_addr=$MASTER_ADDR",
            "--master_port=$MASTER_PORT",
        ]
        argv = [argv[0], *launcher, *argv[1:]]
        if not o.gpus_per_node and "--ddp_backend" not in argv:
            # transformers sets up data parallelism on CPUs only with a backend named: without
            # one every node trains alone (measured: each rank logged its own loss for every step)
            argv += ["--ddp_backend", "gloo"]
    return [f'"{a}"' if a.endswith(("=$MASTER_ADDR", "=$MASTER_PORT")) else _word(a) for a in argv]


def batch_script(started: JobStarted, o: ScriptOptions) -> str:
    env = {k: v for k, v in sorted(started.env.items()) if k not in _LOCAL_ONLY}
    unset = sorted({*started.unset_env, *_LOCAL_ONLY} - set(env))
    lines = [
        "#!/bin/bash",
        f"# llmtraind: job {started.job_id} attempt {started.attempt}",
        *_directives(started, o),
        "",
        *(f"unset {name}" for name in unset),
        *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
        f"export NNODES={o.nodes} NPROC_PER_NODE={max(1, o.gpus_per_node)} MASTER_PORT={o.master_port}",
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'MASTER_ADDR=$(scontrol show node "$first" | sed -n "s/.*NodeAddr=\\([^ ]*\\).*/\\1/p" | head -n 1)',
        'export MASTER_ADDR="${MASTER_ADDR:-$first}"',
        "started=$(date +%s.%N)",
        f'printf \'{{"slurm_job_id": %s, "started": %s}}\\n\' "$SLURM_JOB_ID" "$started" > {STARTED_FILE}',
        "srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c "
        "'export NODE_RANK=$SLURM_NODEID PET_NODE_RANK=$SLURM_NODEID; exec \"$@\"' llmtraind \\",
        "    " + " \\\n    ".join(_command(started, o)),
        "rc=$?",
        "if [ $rc -gt 128 ]; then status=$((128 - rc)); else status=$rc; fi",
        'printf \'{"returncode": %s, "started": %s, "ended": %s, "stopped": null, "error": null}\\n\' '
        '"$status" "$started" "$(date +%s.%N)" > exit.json.part && mv exit.json.part exit.json',
        "exit $rc",
        "",
    ]
    return "\n".join(lines)
