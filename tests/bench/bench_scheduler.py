"""Placement benchmark: one `place` call over 10,000 queued jobs on 8 GPUs, against sorting them.

Goal: a decision under 10 ms, so that the daemon can place on every event without batching. The
baseline, measured in the same run, is the least any placement must do: sort the queue by
(-priority, order).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from daemon.runs.scheduler import Demand, GpuView, Lease, Phase, place
from tests.bench.measure import Goals

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

N_JOBS = 10_000
NOW = 1_000_000.0
GPUS = [GpuView(i, f"GPU-{i:04d}", "H100", 81_920, 0, 1 if i == 5 else 0) for i in range(8)]
LEASES = {"GPU-0000": Lease(100_001, NOW + 3600), "GPU-0003": Lease(100_002, None)}
PHASES: dict[int, tuple[str, Phase]] = {
    100_001: ("train-a", "running"),
    100_002: ("serve", "running"),
    100_003: ("prep", "succeeded"),
    100_004: ("broken", "failed"),
}


def queue(rng: random.Random, distinct_timeouts: bool) -> list[Demand]:
    """A mixed queue in submission order, as the daemon holds it: mostly 1-2 GPU jobs, some 4 and
    8, CPU jobs, explicit GPUs, memory floors, dependencies (done, failed, queued), missing
    datasets; timeouts from a few values, or a different one for every job."""
    demands = []
    for i in range(N_JOBS):
        gpus = rng.choice([0, 1, 1, 1, 1, 2, 2, 4, 8])
        ids = (str(rng.randrange(8)),) if gpus == 1 and rng.random() < 0.05 else ()
        after = rng.choice([(), (), (), (), (100_003,), (100_004,), (rng.randrange(N_JOBS),)])
        timeout = 60.0 + i if distinct_timeouts else rng.choice([None, 600.0, 3600.0, 86_400.0])
        demands.append(
            Demand(
                id=i,
                name=f"job-{i}",
                priority=rng.randrange(10),
                order=i,
                gpus=gpus,
                gpu_ids=ids,
                min_free_memory_mib=rng.choice([None, None, None, 40_000]),
                after=after,
                blocked="waiting for dataset sft_demo" if rng.random() < 0.05 else None,
                timeout_s=timeout,
            )
        )
    return demands


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@pytest.mark.parametrize(
    ("distinct_timeouts", "shuffled"),
    [(False, False), (True, False), (False, True)],
    ids=["submission-order", "distinct-timeouts", "shuffled"],
)
def test_place_10000_jobs_on_8_gpus(distinct_timeouts: bool, shuffled: bool) -> None:
    rng = random.Random(42)
    demands = queue(rng, distinct_timeouts)
    if shuffled:
        rng.shuffle(demands)
    plan = place(demands, GPUS, LEASES, PHASES, 2, 0, NOW)
    assert len(plan.start) + len(plan.waiting) + len(plan.fail) == N_JOBS

    baseline = best_of(lambda: sorted(demands, key=lambda d: (-d.priority, d.order)), 50)
    ours = best_of(lambda: place(demands, GPUS, LEASES, PHASES, 2, 0, NOW), 50)
    print(
        f"\nplace {N_JOBS:,} jobs on 8 GPUs ({'distinct' if distinct_timeouts else 'a few'} timeouts, "
        f"{'shuffled' if shuffled else 'in submission order'}): "
        f"sort by (-priority, order) {baseline * 1e3:.2f} ms, place {ours * 1e3:.2f} ms, "
        f"ratio {ours / baseline:.2f}; "
        f"{len(plan.start)} start, {len(plan.waiting):,} wait, {len(plan.fail):,} fail"
    )
    goals = Goals()
    goals.check("place 10,000 jobs on 8 GPUs", ours * 1e3, 10.0, higher_is_better=False, unit=" ms")
    goals.assert_met()
