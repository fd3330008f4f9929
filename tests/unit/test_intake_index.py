"""Intake's kept job index (`decide.JobIndex`) answers as an index built afresh for every batch does.

Random runs: batches of job files (the same bytes again, names taken, `after:` chains and cycles by
name and id) decided with one index kept across the run and with a fresh one, then recorded; jobs
cancelled, failed and retried in between, so that which job is live or waiting changes under it.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core.config import LimitsConfig
from daemon.core.events import CancelRequested, Event, JobFailed, Recorded, RetryRequested
from daemon.core.fold import apply
from daemon.core.state import State
from daemon.core.swift_args import bundled
from daemon.intake.decide import Examined, JobIndex, decide
from daemon.intake.validate import check_file

AFTER = ("", "after: a\n", "after: b\n", "after: [a, c]\n", "after: '1'\n", "after: '3'\n")


@cache
def files() -> tuple[Examined, ...]:
    """Every job file the runs drop, read once: names a to c, each with each other `after:`."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in "abc":
            for k, after in enumerate(AFTER):
                path = Path(tmp) / f"{name}{k}.yaml"
                path.write_text(f"name: {name}\ntask_type: lora\nmodel: /models/tiny\ndataset: data\n{after}")
                verdict = check_file(path, LimitsConfig(), bundled(), name=path.name)
                if verdict.ok:  # a job naming itself in `after:` is refused before intake decides
                    out.append(Examined(path.name, path.name, verdict.kind, verdict=verdict))
    return tuple(out)


batches = st.lists(st.integers(0, 99), min_size=1, max_size=3)
changes = st.tuples(st.sampled_from(["cancel", "fail", "retry"]), st.integers(1, 8))
runs = st.lists(st.one_of(batches, changes), max_size=25)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs)
def test_a_kept_index_decides_as_a_fresh_one(steps: list[list[int] | tuple[str, int]]) -> None:
    state, kept, seq = State(), JobIndex(), 0

    def record(event: Event) -> None:
        nonlocal state, seq
        seq += 1
        state = apply(state, Recorded(seq, "test", 1, float(seq), event))

    for n, step in enumerate(steps):
        if isinstance(step, tuple):
            what, job_id = step
            if what == "cancel":
                record(CancelRequested(drop=f"x{n}", job_id=job_id, source="c"))
            elif what == "fail":
                record(JobFailed(job_id=job_id, reason="failed"))
            else:
                record(RetryRequested(drop=f"x{n}", job_id=job_id, source="r"))
            continue
        batch = [files()[i % len(files())] for i in step]
        batch = [
            Examined(f"{ex.drop}-{n}-{k}", ex.filename, ex.kind, verdict=ex.verdict)
            for k, ex in enumerate(batch)
        ]
        ours = decide(state, batch, str, kept)
        assert ours == decide(state, batch, str)
        for part in ours:
            for new in part.events:
                record(new.event)
