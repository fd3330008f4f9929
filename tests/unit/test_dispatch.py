"""From the folded log to what the daemon records and runs next (`dispatch.decide`), and back.

Pure: files are dropped through the real intake decision and folded, the way the daemon builds
its state; `decide` then sees a made-up box (GPUs, CPU slots, clock) and returns the events to
record. Folding those events again is how each test moves on, so the tests also pin the fold
steps of the run events (JobStarted, ArtifactsFound, RunExited, JobFailed, JobsWaiting).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.core.config import LimitsConfig
from daemon.core.events import (
    ArtifactRecord,
    ArtifactsFound,
    Event,
    FailureRecord,
    JobStarted,
    Recorded,
    RetryRequested,
    RunExited,
    RunInterrupted,
)
from daemon.core.fold import apply
from daemon.core.layout import StateLayout
from daemon.core.state import State
from daemon.core.swift_args import bundled
from daemon.intake.decide import Examined
from daemon.intake.decide import decide as intake
from daemon.intake.validate import check_file
from daemon.runs.dispatch import Box, Decisions, Environment, decide, run_paths, shared_gpus
from daemon.runs.scheduler import GpuView

SFT = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
SFT_SHA = hashlib.sha256(SFT).hexdigest()
NOW = 1_000_000.0
GRACE_S = 30.0


def lora_job(name: str, extra: str = "") -> bytes:
    return f"name: {name}\ntask_type: lora\nmodel: /models/tiny\ndataset: sft_demo\n{extra}".encode()


def export_job(name: str, parent: str) -> bytes:
    return f'name: {name}\ntask_type: export\nadapters: "@{parent}"\n'.encode()


def gpu(index: int) -> GpuView:
    return GpuView(index=index, uuid=f"GPU-{index}", name="fake", memory_total_mib=81920, memory_used_mib=0)


CPU_BOX = Box(gpus=[], managed=False, cpu_slots=1, now=NOW, stop_grace_s=GRACE_S)
GPU_BOX = Box(gpus=[gpu(0), gpu(1)], managed=True, cpu_slots=1, now=NOW, stop_grace_s=GRACE_S)


class Daemon:
    """The log and its fold, with files dropped through intake as the inbox drops them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.layout = StateLayout(tmp / "state")
        self.env = Environment(self.layout, "/usr/bin/python3", True, lambda: 29500)
        self.state = State()
        self.seq = 0

    def record(self, event: Event) -> None:
        self.seq += 1
        self.state = apply(self.state, Recorded(self.seq, "test", 1, NOW + self.seq, event))

    def drop(self, name: str, data: bytes) -> None:
        path = self.tmp / name
        path.write_bytes(data)
        verdict = check_file(path, LimitsConfig(), bundled(), name=name)
        assert verdict.ok, verdict.problems
        (part,) = intake(self.state, [Examined(f"d{self.seq}", name, verdict.kind, verdict=verdict)], str)
        (new,) = part.events
        assert new.event.type in ("DatasetAccepted", "JobSubmitted"), new.event
        self.record(new.event)

    def decide(self, box: Box = CPU_BOX) -> Decisions:
        return decide(self.state, box, self.env)

    def step(self, box: Box = CPU_BOX) -> Decisions:
        """Decide and record the decisions, as the scheduling loop does before acting."""
        decided = self.decide(box)
        for failed in decided.failed:
            self.record(failed)
        if decided.waiting is not None:
            self.record(decided.waiting)
        for launch in decided.launches:
            self.record(launch.started)
        return decided

    def start(self, job_id: int, box: Box = CPU_BOX) -> JobStarted:
        decided = self.step(box)
        (started,) = [launch.started for launch in decided.launches if launch.job_id == job_id]
        return started

    def exited(self, job_id: int, outcome: str = "succeeded", **fields: object) -> None:
        job = self.state.jobs[job_id]
        self.record(
            RunExited.model_validate(
                {
                    "job_id": job_id,
                    "attempt": job.attempts,
                    "outcome": outcome,
                    "returncode": 0 if outcome == "succeeded" else 1,
                }
                | fields
            )
        )


def value_of(argv: Sequence[str], flag: str) -> str:
    return argv[list(argv).index(flag) + 1]


# ---------------------------------------------------------------------------------------------
# Starting jobs


def test_a_job_with_its_dataset_starts_on_the_cpu_slot_of_a_box_without_gpus(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    decided = d.decide()
    assert decided.failed == [] and decided.waiting is None
    (launch,) = decided.launches
    started = launch.started
    assert (launch.job_id, started.job_id, started.attempt) == (1, 1, 1)
    argv = started.argv
    assert argv[:3] == ["/usr/bin/python3", "-m", "swift.cli.sft"]
    dataset = d.layout.converted_dataset(SFT_SHA)
    assert value_of(argv, "--dataset") == str(dataset) and dataset.is_absolute()
    runs = tmp_path / "state" / "runs" / "1" / "1"
    assert value_of(argv, "--output_dir") == str(runs / "output") == started.output_dir
    assert started.run_dir == str(runs) and started.log == str(tmp_path / "state" / "logs" / "1.log")
    assert (started.gpu_uuids, started.gpu_indices, started.env["CUDA_VISIBLE_DEVICES"]) == ([], [], "")
    assert started.inputs == {"sft_demo": SFT_SHA}
    assert started.timeout_s is None and started.ends_by is None and started.resume_from is None
    assert "swift.cli.sft" in started.command


def test_run_folders_and_logs_are_named_by_the_event_logs_id(tmp_path: Path) -> None:
    """A new log's job 1 never meets an old log's `runs/1`; a retry keeps the job's one log even
    when it was recorded under another name (a job from before log ids)."""
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a", "retries: 2\n"))
    d.env = replace(d.env, layout=StateLayout(tmp_path / "state", "0123456789abcdef"))
    started = d.start(1)
    runs = tmp_path / "state" / "runs" / "01234567-1"
    assert started.run_dir == str(runs / "1") and started.output_dir == str(runs / "1" / "output")
    assert started.log == str(tmp_path / "state" / "logs" / "01234567-1.log")
    d.exited(1, "failed", retry=True)
    d.env = replace(d.env, layout=StateLayout(tmp_path / "state", "fedcba9876543210"))
    second = d.start(1)
    assert second.run_dir == str(tmp_path / "state" / "runs" / "fedcba98-1" / "2")
    assert second.log == started.log


def test_a_job_without_its_dataset_waits_for_it(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("a.yaml", lora_job("a"))
    decided = d.decide()
    assert decided.launches == [] and decided.failed == []
    # The fold already set the reason when the job was submitted; an unchanged one is not repeated.
    assert d.state.jobs[1].reason == "waiting for dataset sft_demo"
    assert decided.waiting is None and decided.plan.waiting[1] == "waiting for dataset sft_demo"


def test_two_jobs_and_one_slot_one_starts_and_the_other_waits(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("b.yaml", lora_job("b"))
    decided = d.step()
    assert [launch.job_id for launch in decided.launches] == [1], "the earlier submission goes first"
    assert decided.waiting is not None and set(decided.waiting.reasons) == {"2"}
    assert "CPU slot" in decided.waiting.reasons["2"]
    assert d.state.jobs[2].reason == decided.waiting.reasons["2"]
    # Recorded once: the next decision has nothing new to say while the slot stays taken.
    again = d.decide()
    assert again.launches == [] and again.waiting is None and again.failed == []
    d.exited(1)
    assert [launch.job_id for launch in d.step().launches] == [2]


def test_a_job_gets_one_gpu_by_default_on_a_box_with_gpus(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("b.yaml", lora_job("b"))
    decided = d.step(GPU_BOX)
    got = {launch.job_id: launch.started for launch in decided.launches}
    assert set(got) == {1, 2}
    assert [(s.gpu_uuids, s.gpu_indices) for s in (got[1], got[2])] == [(["GPU-0"], [0]), (["GPU-1"], [1])]
    for started in got.values():
        assert started.env["CUDA_VISIBLE_DEVICES"] == started.gpu_uuids[0]
        assert started.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert "torch.distributed.run" not in started.argv
    # Both GPUs are now held by our runs: a third job waits.
    d.drop("c.yaml", lora_job("c"))
    third = d.step(GPU_BOX)
    assert third.launches == [] and third.waiting is not None and "3" in third.waiting.reasons
    # A foreign process on GPU 1 makes b's run a shared one (its out-of-memory will be transient),
    # recorded once.
    crowded = [gpu(0), replace(gpu(1), foreign_processes=1)]
    assert shared_gpus(d.state, GPU_BOX.gpus) == []
    (shared,) = shared_gpus(d.state, crowded)
    assert (shared.job_id, shared.attempt, shared.gpus) == (2, 1, [1])
    d.record(shared)
    assert d.state.jobs[2].run is not None and d.state.jobs[2].run.gpu_shared == [1]
    assert shared_gpus(d.state, crowded) == []


def test_a_timeout_gives_the_run_an_end_by_time(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a", "timeout: 1h\n"))
    started = d.start(1)
    assert started.timeout_s == 3600 and started.ends_by == NOW + 3600 + GRACE_S


# ---------------------------------------------------------------------------------------------
# Dependencies


def test_a_job_after_a_failed_job_fails(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("b.yaml", lora_job("b", "after: a\n"))
    first = d.step()
    assert [launch.job_id for launch in first.launches] == [1]
    assert first.waiting is not None and "after job a" in first.waiting.reasons["2"]
    d.exited(1, "failed", failure=FailureRecord(kind="unknown", transient=False, reason="boom"))
    decided = d.step()
    assert decided.launches == []
    (failed,) = decided.failed
    assert (failed.job_id, failed.reason) == (2, "after job a, which failed")
    assert d.state.jobs[2].state == "failed" and d.state.jobs[2].reason == failed.reason


def test_a_job_after_a_job_never_submitted_waits_saying_so(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("b.yaml", lora_job("b", "after: ghost\n"))
    decided = d.step()
    assert decided.launches == [] and decided.failed == []
    assert decided.waiting is not None
    reason = decided.waiting.reasons["1"]
    assert "ghost" in reason and "not submitted" in reason
    # Once a job of that name is submitted, the dependency is on it.
    d.drop("ghost.yaml", lora_job("ghost"))
    after = d.step()
    assert [launch.job_id for launch in after.launches] == [2]
    assert after.waiting is not None and "after job ghost" in after.waiting.reasons["1"]


def test_an_export_of_a_parents_adapters_gets_its_final_checkpoint(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("e.yaml", export_job("e", "a"))
    d.step()
    checkpoint = str(tmp_path / "state" / "runs" / "1" / "1" / "output" / "checkpoint-3")
    d.exited(1, final_checkpoint=checkpoint)
    assert d.state.jobs[1].final_checkpoint == checkpoint
    started = d.start(2)
    assert started.argv[:3] == ["/usr/bin/python3", "-m", "swift.cli.export"]
    assert value_of(started.argv, "--adapters") == checkpoint
    assert value_of(started.argv, "--output_dir") == str(
        tmp_path / "state" / "runs" / "2" / "1" / "output" / "model"
    )


def test_an_export_of_a_parent_that_left_no_checkpoint_fails(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("e.yaml", export_job("e", "a"))
    d.step()
    d.exited(1)  # succeeded, but no checkpoint was found
    decided = d.step()
    assert decided.launches == []
    (failed,) = decided.failed
    assert failed.job_id == 2 and "@a" in failed.reason and "no checkpoint" in failed.reason
    assert d.state.jobs[2].state == "failed"


# ---------------------------------------------------------------------------------------------
# The fold of run events


def test_fold_running_then_retried_then_succeeded(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a", "retries: 2\n"))
    started = d.start(1)
    job = d.state.jobs[1]
    assert (job.state, job.attempts, job.reason) == ("running", 1, "")
    assert job.run is not None and job.run.attempt == 1 and job.run.argv == started.argv
    assert job.started_ts is not None

    failure = FailureRecord(kind="port_in_use", transient=True, reason="a port was taken")
    d.exited(1, "failed", failure=failure, retry=True)
    assert job.state == "queued" and job.auto_retries == 1
    assert "runs again after attempt 1 failed" in job.reason and "a port was taken" in job.reason
    assert job.ended_ts is None

    second = d.start(1)
    assert second.attempt == 2 and second.run_dir == str(run_paths(d.layout, 1, 2).run_dir)
    assert second.log == started.log, "one log per job, appended by every attempt"
    final = str(Path(second.output_dir) / "checkpoint-5")
    d.exited(1, final_checkpoint=final, final_model=None)
    assert (job.state, job.final_checkpoint, job.final_model, job.reason) == ("succeeded", final, None, "")
    assert job.ended_ts is not None and len(job.runs) == 2


def test_a_shutdown_stop_queues_the_job_again_without_spending_a_retry(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.start(1)
    d.exited(1, "failed", returncode=-15, stopped="shutdown", retry=True)
    job = d.state.jobs[1]
    assert job.state == "queued" and job.auto_retries == 0 and "shut down" in job.reason


def test_an_automatic_retry_resumes_from_the_last_complete_checkpoint(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a", "retries: 1\n"))
    first = d.start(1)
    out = Path(first.output_dir)
    d.record(
        ArtifactsFound(
            job_id=1,
            attempt=1,
            artifacts=[
                ArtifactRecord(kind="adapter", path=str(out / "checkpoint-2"), bytes=1, step=2),
                ArtifactRecord(
                    kind="adapter", path=str(out / "checkpoint-4"), bytes=1, step=4, complete=False
                ),
                ArtifactRecord(kind="logging", path=str(out / "logging.jsonl"), bytes=1),
            ],
        )
    )
    failure = FailureRecord(kind="gpu_error", transient=True, reason="NCCL error")
    d.exited(1, "failed", failure=failure, retry=True)
    second = d.start(1)
    resume = str(out / "checkpoint-2")
    assert second.resume_from == resume and value_of(second.argv, "--resume_from_checkpoint") == resume
    assert second.output_dir != first.output_dir, "a fresh directory per attempt"


def test_run_events_of_an_older_attempt_change_nothing(tmp_path: Path) -> None:
    """A late observation of attempt 1 (recorded again after a restart) must not touch attempt 2."""
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a", "retries: 1\n"))
    d.start(1)
    failure = FailureRecord(kind="port_in_use", transient=True, reason="port")
    d.exited(1, "failed", failure=failure, retry=True)
    d.start(1)
    d.record(RunExited(job_id=1, attempt=1, outcome="succeeded", returncode=0, final_checkpoint="/x"))
    job = d.state.jobs[1]
    assert job.state == "running" and job.final_checkpoint is None


# ---------------------------------------------------------------------------------------------
# Where a new attempt resumes

CORPUS = b"A line of text to pretrain on.\n"
PRETRAIN = b"name: p\ntask_type: pretrain\nmodel: /models/tiny\ndataset: corpus\nretries: 1\n"
PPO = b"name: r\ntask_type: rl\nalgorithm: ppo\nreward_model: /models/rm\nmodel: /models/tiny\ndataset: sft_demo\n"


def checkpoints(d: Daemon, started: JobStarted, kind: str) -> str:
    """Complete checkpoints at steps 2, 6 and 4 (listed in that order) and an unfinished one at 8;
    returns the one a new attempt should continue from."""
    out = Path(started.output_dir)
    d.record(
        ArtifactsFound(
            job_id=started.job_id,
            attempt=started.attempt,
            artifacts=[
                ArtifactRecord(kind=kind, path=str(out / "checkpoint-2"), bytes=1, step=2),
                ArtifactRecord(kind=kind, path=str(out / "checkpoint-6"), bytes=1, step=6),
                ArtifactRecord(kind=kind, path=str(out / "checkpoint-4"), bytes=1, step=4),
                ArtifactRecord(kind=kind, path=str(out / "checkpoint-8"), bytes=1, step=8, complete=False),
            ],
        )
    )
    return str(out / "checkpoint-6")


@pytest.mark.parametrize(
    ("dataset", "data", "job_file", "kind"),
    [
        ("corpus.txt", CORPUS, PRETRAIN, "checkpoint"),
        ("sft_demo.jsonl", SFT, PPO + b"retries: 1\n", "checkpoint"),
        ("sft_demo.jsonl", SFT, lora_job("a", "retries: 1\n"), "adapter"),
    ],
    ids=["pretrain", "rlhf", "lora"],
)
def test_an_automatic_retry_of_any_training_resumes_from_its_highest_complete_step(
    tmp_path: Path, dataset: str, data: bytes, job_file: bytes, kind: str
) -> None:
    d = Daemon(tmp_path)
    d.drop(dataset, data)
    d.drop("job.yaml", job_file)
    resume = checkpoints(d, d.start(1), kind)
    d.exited(
        1, "failed", failure=FailureRecord(kind="gpu_error", transient=True, reason="Xid 79"), retry=True
    )
    second = d.start(1)
    assert second.resume_from == resume and value_of(second.argv, "--resume_from_checkpoint") == resume


def test_a_retry_asked_to_start_over_starts_over(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    checkpoints(d, d.start(1), "adapter")
    d.exited(1, "failed", failure=FailureRecord(kind="unknown", transient=False, reason="boom"))
    d.record(RetryRequested(drop="d9", job_id=1, source="cli", from_scratch=True))
    second = d.start(1)
    assert second.attempt == 2 and second.resume_from is None
    assert "--resume_from_checkpoint" not in second.argv


def test_after_a_reboot_a_run_continues_from_the_checkpoint_recorded_then(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("corpus.txt", CORPUS)
    d.drop("p.yaml", PRETRAIN)
    first = d.start(1)
    saved = str(Path(first.output_dir) / "checkpoint-40")
    d.record(RunInterrupted(job_id=1, attempt=1, reason="the machine rebooted", resume_from=saved))
    second = d.start(1)
    assert second.resume_from == saved and value_of(second.argv, "--resume_from_checkpoint") == saved


# ---------------------------------------------------------------------------------------------
# What reaches the command


def test_a_model_at_job_is_that_jobs_merged_or_full_model(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", b"name: a\ntask_type: sft\nmodel: /models/tiny\ndataset: sft_demo\n")
    d.drop("serve.yaml", b'name: serve\ntask_type: deploy\nmodel: "@a"\n')
    d.step()
    model = str(tmp_path / "state" / "runs" / "1" / "1" / "output" / "model")
    d.exited(1, final_checkpoint="/elsewhere/checkpoint-9", final_model=model)
    started = d.start(2)
    assert started.argv[:3] == ["/usr/bin/python3", "-m", "swift.cli.deploy"]
    assert value_of(started.argv, "--model") == model


def test_a_model_at_job_that_left_no_model_fails_saying_so(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    d.drop("serve.yaml", b'name: serve\ntask_type: deploy\nmodel: "@a"\n')
    d.step()
    d.exited(1, final_checkpoint="/elsewhere/checkpoint-9")
    (failed,) = d.step().failed
    assert (failed.job_id, failed.reason) == (2, "model @a: job a succeeded but left no merged or full model")


def test_a_reward_model_at_job_is_that_jobs_model(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("rm.yaml", b"name: rm\ntask_type: sft\nmodel: /models/tiny\ndataset: sft_demo\n")
    d.drop("r.yaml", PPO.replace(b"/models/rm", b'"@rm"'))
    d.step()
    d.exited(1, final_model="/models/reward")
    started = d.start(2)
    assert value_of(started.argv, "--rlhf_type") == "ppo"
    assert value_of(started.argv, "--reward_model") == "/models/reward"


@pytest.mark.parametrize("submitted", [False, True], ids=["never-submitted", "still-queued"])
def test_a_parent_that_has_not_succeeded_is_never_used(tmp_path: Path, submitted: bool) -> None:
    """The scheduler starts a job only after its `@JOB` parent succeeded; in a state where the two
    disagree (the job does not wait for its parent), the job fails instead of running without it."""
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    if submitted:
        d.drop("a.yaml", lora_job("a", "gpus: 3\n"))  # waits for ever on a box without GPUs
    d.drop("e.yaml", export_job("e", "a"))
    e = d.state.find_job("e")
    assert e is not None
    e.after = []
    decided = d.decide()
    assert [(f.job_id, f.reason) for f in decided.failed] == [(e.id, "adapters @a: job a has not succeeded")]


@pytest.mark.parametrize("offline", [True, False])
def test_the_run_gets_the_offline_setting_and_the_daemons_cache(tmp_path: Path, offline: bool) -> None:
    d = Daemon(tmp_path)
    d.env = replace(d.env, offline=offline)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    started = d.start(1)
    hub = {k: started.env.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    assert hub == dict.fromkeys(hub, "1" if offline else None)
    assert ("--use_hf" in started.argv, "--check_model" in started.argv) == (offline, offline)
    cache = tmp_path / "state" / "cache"
    assert started.env["MODELSCOPE_CACHE"] == str(cache / "modelscope")
    assert started.env["MPLCONFIGDIR"] == str(cache / "matplotlib")


def test_validation_data_reaches_the_command(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("held_out.jsonl", SFT.replace(b"yo", b"hey"))
    d.drop("a.yaml", lora_job("a", "val_dataset: held_out\n"))
    started = d.start(1)
    held_out = hashlib.sha256(SFT.replace(b"yo", b"hey")).hexdigest()
    assert value_of(started.argv, "--val_dataset") == str(d.layout.converted_dataset(held_out))
    assert started.inputs == {"sft_demo": SFT_SHA, "held_out": held_out}


def test_a_single_run_drops_what_would_make_it_one_rank_of_a_larger_job(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a"))
    started = d.start(1, GPU_BOX)
    assert {"NPROC_PER_NODE", "WORLD_SIZE", "RANK", "RAY_SWIFT_ARGS"} <= set(started.unset_env)


def test_an_endless_stop_grace_gives_the_run_no_end_by_time(tmp_path: Path) -> None:
    """`[runs] stop_grace_s = inf` is a valid setting: the run keeps its timeout, and no time by
    which it is sure to be over (a reservation behind it waits for it to end)."""
    d = Daemon(tmp_path)
    d.drop("sft_demo.jsonl", SFT)
    d.drop("a.yaml", lora_job("a", "timeout: 1h\n"))
    started = d.start(1, replace(CPU_BOX, stop_grace_s=math.inf))
    assert started.timeout_s == 3600 and started.ends_by is None
