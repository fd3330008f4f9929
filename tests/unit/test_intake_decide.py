"""The intake decision's exact output (`decide.decide`): which stream each drop is recorded on, under
which key, and every field of the event a person later reads back; test_intake follows the same
decisions through the fold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from daemon.core.drops import FileVerdict
from daemon.core.events import (
    CancelRequested,
    DatasetAccepted,
    DuplicateDropped,
    FileRejected,
    NewEvent,
    RetryRequested,
)
from daemon.core.state import State
from daemon.core.streams import Append
from daemon.intake.decide import MAX_PROBLEMS_IN_EVENT, Examined, decide
from tests.unit.test_intake import DPO, SFT, Intake, Names, job_yaml, types

SFT_SHA = hashlib.sha256(SFT).hexdigest()
DPO_SHA = hashlib.sha256(DPO).hexdigest()


def one(intake: Intake, name: str, data: bytes) -> Append:
    (part,) = decide(intake.state, [intake.examine(name, data)], intake.names)
    return part


def rejected(
    drop: str, filename: str, summary: str, problems: str, sha: str | None, kind: str = "job"
) -> Append:
    event = FileRejected(
        drop=drop,
        filename=filename,
        kind=kind,
        summary=summary,
        problems=problems,
        sha256=sha,
        kept_as=filename,
    )
    return Append("intake", [NewEvent(event, f"drop:{drop}")])


@pytest.mark.parametrize(
    ("yaml", "feeds", "tuner"),
    [
        (job_yaml("j"), "sft", "full"),
        (job_yaml("j", task="lora"), "lora", "lora"),
        (b"name: j\ntask_type: lora\nmodel: /m\ndataset: d\ntuner: qlora\n", "lora", "qlora"),
        (job_yaml("j", task="pretrain"), "pretrain", "full"),
        (job_yaml("j", task="rl", model_key="policy_model"), "rl", "full"),
        (b'name: j\ntask_type: export\nadapters: "@prep"\n', None, None),
    ],
)
def test_each_task_reads_its_kind_of_data(
    tmp_path: Path, yaml: bytes, feeds: str | None, tuner: str | None
) -> None:
    (event,) = one(Intake(tmp_path), "j.yaml", yaml).events[0:1]
    assert event.event.type == "JobSubmitted"
    assert (event.event.feeds, event.event.tuner) == (feeds, tuner)


def test_an_accepted_dataset_is_recorded_whole_on_its_own_stream(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    examined = intake.examine("sft_demo.jsonl", SFT)
    assert examined.verdict is not None and examined.verdict.dataset is not None
    report = examined.verdict.dataset
    (part,) = decide(State(), [examined], Names())
    accepted = DatasetAccepted(
        drop="d1",
        name="sft_demo",
        filename="sft_demo.jsonl",
        sha256=SFT_SHA,
        format="sft_messages",
        task_types=["sft", "lora", "rl"],
        rlhf_types=["ppo", "grpo"],
        rows=1,
        bytes=len(SFT),
        stats=report.stats.model_dump(mode="json"),
        lora_hints=None,
    )
    assert part == Append(f"dataset:{SFT_SHA}", [NewEvent(accepted, "drop:d1")])


def test_a_job_is_recorded_whole_on_a_new_stream_that_must_be_empty(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.state.next_job_id = 7
    yaml = b"name: ids\nproject: p\ntask_type: lora\nmodel: /m\ndataset: a\ngpu_ids: [0, GPU-x]\npriority: 3\nafter: [prep]\n"
    part = one(intake, "ids.yaml", yaml)
    assert (part.stream, part.expected_version, [e.idem_key for e in part.events]) == (
        "job:7",
        0,
        ["drop:d1"],
    )
    event = part.events[0].event
    assert event.type == "JobSubmitted"
    assert event.model_dump(exclude={"spec"}) == {
        "type": "JobSubmitted",
        "drop": "d1",
        "id": 7,
        "name": "ids",
        "project": "p",
        "filename": "ids.yaml",
        "sha256": hashlib.sha256(yaml).hexdigest(),
        "task": "sft",
        "tuner": "lora",
        "rlhf_type": None,
        "feeds": "lora",
        "datasets": ["a"],
        "priority": 3,
        "after": ["prep"],
        "gpus": 2,
        "gpu_ids": [0, "GPU-x"],
        "min_free_memory_mib": None,
    }
    assert event.spec["name"] == "ids" and event.spec["project"] == "p"


def test_jobs_in_one_batch_take_the_next_ids_and_their_names(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    j, again, clash, other = (
        intake.examine("j.yaml", job_yaml("j")),
        intake.examine("again.yaml", job_yaml("j")),
        intake.examine("clash.yaml", job_yaml("j", "other")),
        intake.examine("k.yaml", job_yaml("k")),
    )
    parts = decide(intake.state, [j, again, clash, other], intake.names)
    assert [p.stream for p in parts] == ["job:1", "job:1", "intake", "job:2"]
    dup = DuplicateDropped(
        drop="d2",
        filename="again.yaml",
        kind="job",
        sha256=hashlib.sha256(job_yaml("j")).hexdigest(),
        job_id=1,
    )
    assert parts[1] == Append("job:1", [NewEvent(dup, "drop:d2")])
    why = "a live job already has the name j"
    assert parts[2] == rejected(
        "d3",
        "clash.yaml",
        why,
        f"clash.yaml: rejected: {why}: job j (id 1) is queued\n"
        "  hint: set another `name:` in the file, or cancel the live job first (llmtraind cancel j)\n",
        hashlib.sha256(job_yaml("j", "other")).hexdigest(),
    )


def test_a_name_taken_by_a_running_job_says_so(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.drop(("j.yaml", job_yaml("j")))
    intake.state.jobs[1].state = "running"
    part = one(intake, "other.yaml", job_yaml("j", "other"))
    event = part.events[0].event
    assert event.type == "FileRejected" and "job j (id 1) is running\n" in event.problems


def test_data_dropped_earlier_in_the_batch_that_cannot_feed_the_job_rejects_it(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    batch = [
        intake.examine("prefs.jsonl", DPO),
        intake.examine("alias.jsonl", DPO),
        intake.examine("j.yaml", job_yaml("j", "alias")),
    ]
    parts = decide(intake.state, batch, intake.names)
    assert [p.events[0].event.type for p in parts] == ["DatasetAccepted", "DuplicateDropped", "FileRejected"]
    assert parts[1].events[0].event == DuplicateDropped(
        drop="d2", filename="alias.jsonl", kind="dataset", sha256=DPO_SHA, dataset="prefs", alias="alias"
    )
    why = (
        "job j (sft) cannot read its data: dataset alias: a preference dataset cannot feed a sft job; "
        "it feeds rl"
    )
    assert parts[2].events[0].event.summary == why  # type: ignore[union-attr]


def test_several_unfit_datasets_are_named_in_order(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.drop(("b.jsonl", DPO), ("a.jsonl", DPO.replace(b'"p"', b'"p2"')))
    yaml = b"name: j\ntask_type: sft\nmodel_name: /m\ndataset: [b, a, c]\n"
    event = one(intake, "j.yaml", yaml).events[0].event
    assert event.type == "FileRejected"
    assert event.summary == (
        "job j (sft) cannot read its data: dataset a: a preference dataset cannot feed a sft job; it feeds rl; "
        "dataset b: a preference dataset cannot feed a sft job; it feeds rl"
    )


def test_the_same_bytes_twice_in_one_batch_under_one_name_add_no_name(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    parts = decide(
        intake.state, [intake.examine("d.jsonl", SFT), intake.examine("d.jsonl", SFT)], intake.names
    )
    assert parts[1] == Append(
        f"dataset:{SFT_SHA}",
        [
            NewEvent(
                DuplicateDropped(drop="d2", filename="d.jsonl", kind="dataset", sha256=SFT_SHA, dataset="d"),
                "drop:d2",
            )
        ],
    )


def test_controls_for_a_job_of_the_same_batch(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    batch = [
        intake.examine("j.yaml", job_yaml("j")),
        intake.examine("c.yaml", b"cancel: j\n"),
        intake.examine("r.yaml", b"retry: j\n"),
    ]
    parts = decide(intake.state, batch, intake.names)
    cancel = CancelRequested(drop="d2", job_id=1, source="c.yaml")
    assert parts[1] == Append("job:1", [NewEvent(cancel, "drop:d2")])
    why = "job j (id 1) is queued; only a failed or cancelled job can be retried"
    sha = hashlib.sha256(b"retry: j\n").hexdigest()
    assert parts[2] == rejected("d3", "r.yaml", why, f"r.yaml: rejected: {why}\n", sha, kind="control")


def test_control_rejections_say_why_and_what_to_do(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.drop(("j.yaml", job_yaml("j")), ("c.yaml", b"cancel: j\n"))
    nojob = one(intake, "x.yaml", b"retry: nope\n").events[0].event
    assert nojob.type == "FileRejected"
    assert (nojob.summary, nojob.problems) == (
        "there is no job 'nope' to retry",
        "x.yaml: rejected: there is no job 'nope' to retry\n"
        "  hint: name a job by its id or name as `llmtraind jobs` lists it\n",
    )
    ended = one(intake, "c2.yaml", b"cancel: 1\n").events[0].event
    why = "job 1 (id 1) has already ended (cancelled); there is nothing to cancel"
    assert ended.type == "FileRejected" and (ended.summary, ended.problems) == (
        why,
        f"c2.yaml: rejected: {why}\n",
    )
    retry = one(intake, "r.yaml", b"retry: j\n")
    assert retry == Append(
        "job:1", [NewEvent(RetryRequested(drop="d5", job_id=1, source="r.yaml"), "drop:d5")]
    )


def verdict(ok: bool, summary: str, problems: str = "") -> FileVerdict:
    return FileVerdict(Path("/x/f.jsonl"), "dataset", ok, summary, problems, sha256="abc")


@pytest.mark.parametrize(
    ("examined", "summary", "problems", "sha"),
    [
        (
            Examined("d1", "f.jsonl", "dataset"),
            "it could not be read",
            "f.jsonl: rejected: it could not be read\n",
            None,
        ),
        (
            Examined(
                "d1",
                "f.jsonl",
                "dataset",
                verdict=verdict(False, "f.jsonl: rejected: 2 bad rows", "rows 1, 2\n"),
            ),
            "2 bad rows",
            "rows 1, 2\n",
            "abc",
        ),
        (
            Examined("d1", "f.jsonl", "dataset", verdict=verdict(False, "x", "p" * MAX_PROBLEMS_IN_EVENT)),
            "x",
            "p" * MAX_PROBLEMS_IN_EVENT,
            "abc",
        ),
        (
            Examined(
                "d1", "f.jsonl", "dataset", verdict=verdict(False, "x", "p" * (MAX_PROBLEMS_IN_EVENT + 1))
            ),
            "x",
            "p" * MAX_PROBLEMS_IN_EVENT + "\n... (the rest is in the .error.txt file)\n",
            "abc",
        ),
        (
            Examined("d1", "f.jsonl", "dataset", verdict=verdict(True, "neither a dataset nor a job")),
            "neither a dataset nor a job",
            "neither a dataset nor a job\n",
            "abc",
        ),
        (
            Examined("d1", "f.jsonl", "dataset", verdict=verdict(True, "odd", "what is odd\n")),
            "odd",
            "what is odd\n",
            "abc",
        ),
    ],
)
def test_a_rejection_keeps_the_start_of_its_explanation(
    examined: Examined, summary: str, problems: str, sha: str | None
) -> None:
    (part,) = decide(State(), [examined], Names())
    assert part == rejected("d1", "f.jsonl", summary, problems, sha, kind="dataset")


def test_a_name_given_earlier_in_the_batch_is_not_given_again(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    batch = [intake.examine(n, SFT) for n in ("d.jsonl", "e.jsonl", "e.jsonl")]
    parts = decide(intake.state, batch, intake.names)
    assert [p.events[0].event for p in parts[1:]] == [
        DuplicateDropped(
            drop="d2", filename="e.jsonl", kind="dataset", sha256=SFT_SHA, dataset="d", alias="e"
        ),
        DuplicateDropped(drop="d3", filename="e.jsonl", kind="dataset", sha256=SFT_SHA, dataset="d"),
    ]


def test_new_data_earlier_in_the_batch_that_cannot_feed_the_job_rejects_it_with_a_hint(
    tmp_path: Path,
) -> None:
    intake = Intake(tmp_path)
    parts = decide(
        intake.state,
        [intake.examine("prefs.jsonl", DPO), intake.examine("j.yaml", job_yaml("j", "prefs"))],
        intake.names,
    )
    why = "job j (sft) cannot read its data: dataset prefs: a preference dataset cannot feed a sft job; it feeds rl"
    hint = "  hint: name a dataset of a fitting format, or change the job's task type\n"
    assert parts[1] == rejected(
        "d2",
        "j.yaml",
        why,
        f"j.yaml: rejected: {why}\n{hint}",
        hashlib.sha256(job_yaml("j", "prefs")).hexdigest(),
    )


def test_a_missing_dataset_does_not_hide_an_unfit_one(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.drop(("b.jsonl", DPO))
    event = (
        one(intake, "j.yaml", b"name: j\ntask_type: sft\nmodel_name: /m\ndataset: [a, b]\n").events[0].event
    )
    assert event.type == "FileRejected" and "dataset b: a preference dataset" in event.summary


def test_an_rl_job_is_checked_against_its_algorithm_on_data_of_the_same_batch(tmp_path: Path) -> None:
    kto = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": false}\n'
    intake = Intake(tmp_path)
    rl = job_yaml("r", "k", task="rl", model_key="policy_model")
    parts = decide(intake.state, [intake.examine("k.jsonl", kto), intake.examine("r.yaml", rl)], intake.names)
    assert parts[1].events[0].event.type == "FileRejected"
    assert "rlhf_type dpo" in parts[1].events[0].event.summary


def test_a_job_keeps_the_free_memory_it_asks_for(tmp_path: Path) -> None:
    yaml = b"name: m\ntask_type: lora\nmodel: /m\ndataset: a\nmin_free_memory_mib: 100\n"
    event = one(Intake(tmp_path), "m.yaml", yaml).events[0].event
    assert event.type == "JobSubmitted" and event.min_free_memory_mib == 100


def test_a_failed_job_can_be_retried(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.drop(("j.yaml", job_yaml("j")))
    intake.state.jobs[1].state = "failed"
    retry = one(intake, "r.yaml", b"retry: j\n")
    assert retry == Append(
        "job:1", [NewEvent(RetryRequested(drop="d2", job_id=1, source="r.yaml"), "drop:d2")]
    )


def after_yaml(name: str, *after: str) -> bytes:
    return job_yaml(name) + f"after: [{', '.join(after)}]\n".encode()


CYCLE_HINT = "  hint: remove one of these `after:` references; jobs that wait for each other never start\n"


def test_the_second_job_of_an_after_cycle_is_rejected_naming_the_cycle(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    assert types(intake.drop(("a.yaml", after_yaml("a", "b")))) == ["JobSubmitted"]
    body = after_yaml("b", "a")
    why = "after: b -> a -> b is a cycle"
    assert one(intake, "b.yaml", body) == rejected(
        "d2", "b.yaml", why, f"b.yaml: rejected: {why}\n{CYCLE_HINT}", hashlib.sha256(body).hexdigest()
    )


def test_a_cycle_within_one_batch_and_through_ids_and_longer_chains(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    recs = intake.drop(("a.yaml", after_yaml("a", "b")), ("b.yaml", after_yaml("b", "a")))
    assert types(recs) == ["JobSubmitted", "FileRejected"]
    assert recs[1].event.summary == "after: b -> a -> b is a cycle"  # type: ignore[union-attr]
    # By id: c becomes job 2 and waits for job 3, the next one submitted, which waits for c.
    assert types(intake.drop(("c.yaml", after_yaml("c", "x", "3")))) == ["JobSubmitted"]
    (by_id,) = intake.drop(("d.yaml", after_yaml("d", "c")))
    assert by_id.event.summary == "after: d -> c -> d is a cycle"  # type: ignore[union-attr]
    # Three jobs: e after g, f after e, then g after f closes it; the path starts at the new job.
    intake.drop(("e.yaml", after_yaml("e", "g")), ("f.yaml", after_yaml("f", "e")))
    (long,) = intake.drop(("g.yaml", after_yaml("g", "zz", "f")))
    assert long.event.summary == "after: g -> f -> e -> g is a cycle"  # type: ignore[union-attr]


def test_waiting_on_one_job_twice_or_on_an_ended_one_is_no_cycle(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    # A diamond: two paths to one job are not a cycle.
    recs = intake.drop(
        ("a.yaml", job_yaml("a")),
        ("b.yaml", after_yaml("b", "a")),
        ("c.yaml", after_yaml("c", "a", "b")),
    )
    assert types(recs) == ["JobSubmitted"] * 3
    # p waits for q; once p is cancelled it waits for nothing, so q may name p.
    intake.drop(("p.yaml", after_yaml("p", "q")))
    intake.drop(("cancel.yaml", b"cancel: p\n"))
    assert types(intake.drop(("q.yaml", after_yaml("q", "p")))) == ["JobSubmitted"]
