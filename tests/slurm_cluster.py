"""A real Slurm on this machine, in a temporary folder: munged (as the munge user, on its own socket
and key), slurmctld and two slurmd started with `-N n1` / `-N n2` on separate ports and spool folders
(the Debian 12 build accepts -N). CPU only: proctrack/linuxproc, task/none. Needs root and the
packages slurmctld, slurmd, slurm-client and munge."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODES = ("n1", "n2")

CONF = """\
ClusterName=llmtraindtest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool-%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
KillWait=5
MpiDefault=none
NodeName=n1 NodeAddr=127.0.0.2 NodeHostname={host} Port={port1} CPUs={cpus} State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.3 NodeHostname={host} Port={port2} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def available() -> str | None:
    """Why a Slurm cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting Slurm needs root"
    missing = [p for p in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(p) is None]
    if missing:
        return "missing " + ", ".join(missing) + " (apt-get install slurmctld slurmd slurm-client munge)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class SlurmCluster:
    dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, the daemon) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, cpus: int = 1) -> None:
        d = self.dir
        for sub in ("state", "log", "munge", *(f"spool-{n}" for n in NODES)):
            (d / sub).mkdir(parents=True, exist_ok=True)
        munge = pwd.getpwnam("munge")
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        for path in (d / "munge", key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        (d / "munge").chmod(0o700)
        d.chmod(0o755)
        self._spawn(
            [
                "runuser", "-u", "munge", "--", "munged", "-F", "--force",
                f"--socket={d}/munge/munge.socket", f"--key-file={key}",
                f"--pid-file={d}/munge/munged.pid", f"--log-file={d}/munge/munged.log",
                f"--seed-file={d}/munge/munged.seed",
            ],
            "munged",
        )  # fmt: skip
        _wait(lambda: (d / "munge" / "munge.socket").exists(), 10, "munged's socket")
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(
            CONF.format(
                host=host,
                dir=d,
                ctld_port=_free_port(),
                port1=_free_port(),
                port2=_free_port(),
                cpus=cpus,
            )
        )
        self._spawn(["slurmctld", "-D", "-f", str(self.conf)], "slurmctld")
        for node in NODES:
            self._spawn(["slurmd", "-D", "-f", str(self.conf), "-N", node], f"slurmd-{node}")
        _wait(self._idle, 30, "both nodes idle in sinfo")

    def _spawn(self, argv: list[str], name: str) -> None:
        out = open(self.dir / "log" / f"{name}.out", "ab")
        with out:
            self.procs.append(
                subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=os.environ | self.env,
                    start_new_session=True,
                )
            )

    def run(self, *argv: str) -> str:
        done = subprocess.run(argv, env=os.environ | self.env, capture_output=True, text=True, timeout=30)
        return done.stdout

    def _idle(self) -> bool:
        with contextlib.suppress(subprocess.SubprocessError):
            out = self.run("sinfo", "-h", "-N", "-o", "%N %t")
            states = dict(line.split() for line in out.splitlines() if line.strip())
            return all(states.get(n) == "idle" for n in NODES)
        return False

    def stop(self) -> None:
        if self.conf.exists() and self.procs:
            with contextlib.suppress(subprocess.SubprocessError, FileNotFoundError, TimeoutError):
                subprocess.run(["scancel", "-u", "root"], env=os.environ | self.env, timeout=10)
                # slurmd stopped under a running job leaves its slurmstepd behind
                _wait(
                    lambda: not self.run("squeue", "-h", "-t", "running,completing").strip(),
                    15,
                    "no job left",
                )
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()


def _wait(ok: object, timeout_s: float, what: str) -> None:
    assert callable(ok)
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)
