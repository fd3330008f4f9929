"""The pure intake decision, folded: what a person sees after dropping files (F4 and the job rules)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from daemon.core.config import LimitsConfig
from daemon.core.events import Recorded
from daemon.core.fold import apply
from daemon.core.state import State
from daemon.core.swift_args import bundled
from daemon.intake.claim import bounded_name
from daemon.intake.decide import Examined, decide
from daemon.intake.filing import RejectNames
from daemon.intake.validate import check_file

SFT = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
DPO = b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n'


class Names:
    def __init__(self) -> None:
        self.given: list[str] = []

    def __call__(self, filename: str) -> str:
        name = filename if filename not in self.given else f"{filename}-{len(self.given)}"
        self.given.append(name)
        return name


class Intake:
    """decide + fold, the way the daemon runs them, over files written to a temporary folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = State()
        self.seq = 0
        self.drops = 0
        self.names = Names()

    def examine(self, name: str, data: bytes) -> Examined:
        self.drops += 1
        path = self.tmp / f"{self.drops}-{name}"
        path.write_bytes(data)
        verdict = check_file(path, LimitsConfig(), bundled(), name=name)
        return Examined(f"d{self.drops}", name, verdict.kind, verdict=verdict)

    def drop(self, *files: tuple[str, bytes]) -> list[Recorded]:
        parts = decide(self.state, [self.examine(n, d) for n, d in files], self.names)
        out = []
        for part in parts:
            assert len(part.events) == 1 and part.events[0].idem_key is not None
            self.seq += 1
            rec = Recorded(self.seq, part.stream, 1, 1000.0 + self.seq, part.events[0].event)
            self.state = apply(self.state, rec)
            out.append(rec)
        return out


def types(recs: list[Recorded]) -> list[str]:
    return [r.event.type for r in recs]


def job_yaml(name: str, dataset: str = "sft_demo", task: str = "sft", model_key: str = "model_name") -> bytes:
    return f"name: {name}\ntask_type: {task}\n{model_key}: /models/tiny\ndataset: {dataset}\n".encode()


def test_same_bytes_under_five_names_is_one_dataset_with_five_names(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    recs = intake.drop(*[(f"n{i}.jsonl", SFT) for i in range(5)])
    assert types(recs) == ["DatasetAccepted"] + ["DuplicateDropped"] * 4
    sha = hashlib.sha256(SFT).hexdigest()
    ds = intake.state.datasets[sha]
    assert ds.names == [f"n{i}" for i in range(5)] and ds.drops == 5
    assert {intake.state.dataset_names[f"n{i}"] for i in range(5)} == {sha}
    again = intake.drop(("n0.jsonl", SFT))
    assert types(again) == ["DuplicateDropped"] and again[0].event.alias is None  # type: ignore[union-attr]


def test_same_name_other_bytes_is_a_new_version_and_the_name_follows_it(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    first = SFT
    second = SFT.replace(b"yo", b"hello")
    assert types(intake.drop(("data.jsonl", first))) == ["DatasetAccepted"]
    assert types(intake.drop(("data.jsonl", second))) == ["DatasetAccepted"]
    assert intake.state.dataset_names["data"] == hashlib.sha256(second).hexdigest()
    # Dropping the first bytes again points the name back at them, without a third dataset.
    assert types(intake.drop(("data.jsonl", first))) == ["DuplicateDropped"]
    assert intake.state.dataset_names["data"] == hashlib.sha256(first).hexdigest()
    assert len(intake.state.datasets) == 2


def test_a_job_waits_for_its_dataset_and_resolves_when_it_arrives(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    (rec,) = intake.drop(("train.yaml", job_yaml("train")))
    assert rec.event.type == "JobSubmitted" and rec.stream == "job:1"
    job = intake.state.jobs[1]
    assert (job.state, job.reason, job.inputs) == (
        "queued",
        "waiting for dataset sft_demo",
        {"sft_demo": None},
    )
    intake.drop(("sft_demo.jsonl", SFT))
    assert job.reason == "" and job.inputs == {"sft_demo": hashlib.sha256(SFT).hexdigest()}


def test_dataset_and_job_in_one_batch_in_either_order(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.drop(("a.yaml", job_yaml("a", "d")), ("d.jsonl", SFT))
    intake.drop(("e.jsonl", SFT.replace(b"hi", b"hey")), ("b.yaml", job_yaml("b", "datasets/e.jsonl")))
    assert intake.state.jobs[1].reason == "" and intake.state.jobs[2].reason == ""


def test_a_known_dataset_that_cannot_feed_the_job_rejects_the_job_naming_both(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.drop(("prefs.jsonl", DPO))
    (rec,) = intake.drop(("j.yaml", job_yaml("j", "prefs")))
    assert rec.event.type == "FileRejected"
    assert "prefs" in rec.event.summary and "preference" in rec.event.summary and "sft" in rec.event.summary
    # The same data feeds an rl job (DPO by default, as the original design says).
    (ok,) = intake.drop(("r.yaml", job_yaml("r", "prefs", task="rl", model_key="policy_model")))
    assert ok.event.type == "JobSubmitted", ok.event


def test_a_dataset_arriving_later_in_the_wrong_format_keeps_the_job_waiting_with_a_reason(
    tmp_path: Path,
) -> None:
    intake = Intake(tmp_path)
    intake.drop(("j.yaml", job_yaml("j", "later")))
    intake.drop(("later.jsonl", DPO))
    job = intake.state.jobs[1]
    assert job.state == "queued" and "later is preference data" in job.reason
    intake.drop(("later.jsonl", SFT))
    assert job.reason == ""


def test_an_rl_job_without_an_algorithm_runs_dpo_and_waits_for_pairwise_data(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    (rec,) = intake.drop(("r.yaml", job_yaml("r", "later", task="rl", model_key="policy_model")))
    assert rec.event.type == "JobSubmitted" and rec.event.rlhf_type == "dpo"
    kto = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": false}\n'
    intake.drop(("later.jsonl", kto))
    job = intake.state.jobs[1]
    assert job.state == "queued" and "not rl (dpo)" in job.reason
    # At intake, the same mismatch with the data already there is refused, naming both.
    (refused,) = intake.drop(("r2.yaml", job_yaml("r2", "later", task="rl", model_key="policy_model")))
    assert refused.event.type == "FileRejected" and "kto" in refused.event.summary


def test_job_files_twice_names_live_and_finished(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    assert types(intake.drop(("j.yaml", job_yaml("j")))) == ["JobSubmitted"]
    assert types(intake.drop(("again.yaml", job_yaml("j")))) == ["DuplicateDropped"]
    (clash,) = intake.drop(("other.yaml", job_yaml("j", "other")))
    assert clash.event.type == "FileRejected" and "already has the name j" in clash.event.summary
    assert types(intake.drop(("c.yaml", b"cancel: j\n"))) == ["CancelRequested"]
    assert intake.state.jobs[1].state == "cancelled"
    # Once the first has ended, the name is free and the same file is a new job.
    (rec,) = intake.drop(("j.yaml", job_yaml("j")))
    assert rec.event.type == "JobSubmitted" and intake.state.find_job("j") is intake.state.jobs[2]


def test_control_files(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    intake.drop(("j.yaml", job_yaml("j")))
    (nojob,) = intake.drop(("x.yaml", b"cancel: nope\n"))
    assert nojob.event.type == "FileRejected" and "no job 'nope'" in nojob.event.summary
    (early,) = intake.drop(("r.yaml", b"retry: j\n"))
    assert early.event.type == "FileRejected" and "only a failed or cancelled job" in early.event.summary
    assert types(intake.drop(("c.yaml", b"cancel: 1\n"))) == ["CancelRequested"]
    (late,) = intake.drop(("c2.yaml", b"cancel: j\n"))
    assert late.event.type == "FileRejected" and "already ended (cancelled)" in late.event.summary
    assert types(intake.drop(("r2.yaml", b"retry: j\n"))) == ["RetryRequested"]
    job = intake.state.jobs[1]
    assert job.state == "queued" and job.ended_ts is None


def test_rejections_keep_their_reason_and_get_free_names(tmp_path: Path) -> None:
    intake = Intake(tmp_path)
    recs = intake.drop(("bad.jsonl", b"not json\n"), ("bad.jsonl", b"nope\n"), ("x.csv", b"a,b\n"))
    assert types(recs) == ["FileRejected"] * 3
    kept = [r.event.kept_as for r in recs]  # type: ignore[union-attr]
    assert len(set(kept)) == 3
    assert "line 1" in recs[0].event.problems and "unknown file type" in recs[2].event.summary  # type: ignore[union-attr]
    assert intake.state.intake.rejected == 3


def test_refused_before_reading(tmp_path: Path) -> None:
    state = State()
    (part,) = decide(
        state, [Examined("d1", "f.jsonl", "dataset", refused="it is a FIFO, not a regular file")], Names()
    )
    event = part.events[0].event
    assert event.type == "FileRejected" and event.summary == "it is a FIFO, not a regular file"
    assert json.loads(event.model_dump_json())["kept_as"] == "f.jsonl"


def test_long_names_are_bounded_with_a_hash_and_keep_their_suffix() -> None:
    assert bounded_name("short.jsonl", 200) == "short.jsonl"
    long = "é" * 120 + ".jsonl"  # 246 bytes
    short = bounded_name(long, 200)
    raw = short.encode()
    assert len(raw) <= 200 and short.endswith(".jsonl") and short.startswith("é" * 90)
    assert short == bounded_name(long, 200) != bounded_name("é" * 119 + "e.jsonl", 200)
    not_utf8 = os.fsdecode(b"\xff" * 250 + b".yaml")
    assert len(os.fsencode(bounded_name(not_utf8, 100))) <= 100


def test_a_rejected_name_leaves_room_for_its_note_and_its_number(tmp_path: Path) -> None:
    names = RejectNames(tmp_path)
    long = "x" * 250 + ".jsonl"
    first, second = names(long), names(long)
    assert first.endswith(".jsonl") and second == first.removesuffix(".jsonl") + "-2.jsonl"
    for name in (first, second):
        assert len(f".{name}.error.txt.tmp".encode()) <= 255
