"""Job YAML for a Slurm cluster: `nodes` (default 1) and a `slurm:` block of sbatch options checked
against a known list, with a did-you-mean for a misspelt one."""

from __future__ import annotations

import pytest

from daemon.core.jobs import JobFileError, JobProblem, JobSpec, parse_job_file
from daemon.core.swift_args import bundled

SWIFT = bundled()
SFT = "task_type: sft\nmodel_name: /models/qwen\ndataset: sft_demo\n"


def parse(text: str) -> JobSpec:
    result = parse_job_file(text.encode(), "job.yaml", max_bytes=1 << 20, swift_args=SWIFT)
    assert isinstance(result, JobSpec)
    return result


def refused(text: str) -> list[JobProblem]:
    with pytest.raises(JobFileError) as info:
        parse_job_file(text.encode(), "job.yaml", max_bytes=1 << 20, swift_args=SWIFT)
    return info.value.errors


def test_defaults_are_one_node_and_no_options() -> None:
    spec = parse(SFT)
    assert spec.nodes == 1 and spec.slurm == {}


def test_nodes_and_options_are_kept_by_their_sbatch_names() -> None:
    spec = parse(SFT + "nodes: 2\ngpus: 4\nslurm: {partition: gpu, time: '2:00:00', cpus-per-task: 8}\n")
    assert spec.nodes == 2 and spec.gpus == 4
    assert spec.slurm == {"partition": "gpu", "time": "2:00:00", "cpus_per_task": "8"}


def test_a_misspelt_option_is_refused_with_a_suggestion() -> None:
    [problem] = refused(SFT + "slurm: {partion: gpu}\n")
    assert problem.field == "slurm.partion"
    assert "unknown Slurm option" in problem.message and "`partition`" in problem.hint


def test_an_option_the_daemon_owns_is_refused() -> None:
    [problem] = refused(SFT + "slurm: {job-name: x}\n")
    assert problem.field == "slurm.job-name" and "unknown Slurm option" in problem.message


def test_nodes_must_be_positive_and_values_one_line() -> None:
    assert refused(SFT + "nodes: 0\n")[0].field == "nodes"
    assert refused(SFT + 'slurm: {comment: "a\\nb"}\n')[0].field == "slurm.comment"
    assert refused(SFT + "slurm: {qos: [a, b]}\n")[0].field == "slurm.qos"
