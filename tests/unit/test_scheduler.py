"""Placement rules, one test per rule and per reason a person can read; then a simulated box.

The simulation runs `place` tick by tick over a queue of 50 jobs on a 4-GPU box where one GPU is
always busy with a foreign process, applies each plan as the daemon would, and checks after
every tick what must never happen (two jobs on a GPU, the foreign GPU used, a job without a
reason) and at the end what must eventually happen (every job that can run has run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.runs.scheduler import Demand, GpuView, Lease, Phase, Plan, Reservation, place

NOW = 1_000_000.0


def gpu(index: int, *, total: int = 81_920, used: int = 0, foreign: int = 0) -> GpuView:
    return GpuView(index, f"GPU-{index}", "H100", total, used, foreign)


def job(
    id: int,
    gpus: int = 1,
    *,
    priority: int = 0,
    order: int | None = None,
    gpu_ids: tuple[str, ...] = (),
    memory: int | None = None,
    after: tuple[int, ...] = (),
    blocked: str | None = None,
    timeout: float | None = None,
) -> Demand:
    name = f"j{id}"
    return Demand(
        id, name, priority, id if order is None else order, gpus, gpu_ids, memory, after, blocked, timeout
    )


def box(n: int = 4) -> list[GpuView]:
    return [gpu(i) for i in range(n)]


def plan(
    demands: Sequence[Demand],
    gpus: Sequence[GpuView] | None = None,
    *,
    leases: Mapping[str, Lease] | None = None,
    phases: Mapping[int, tuple[str, Phase]] | None = None,
    cpu: tuple[int, int] = (1, 0),
) -> Plan:
    return place(demands, box() if gpus is None else gpus, leases or {}, phases or {}, *cpu, NOW)


def started(p: Plan) -> dict[int, tuple[str, ...]]:
    return {s.job_id: s.gpu_uuids for s in p.start}


# ---------------------------------------------------------------------------------------------
# Ranking and GPU choice


def test_higher_priority_goes_first_then_submission_order() -> None:
    demands = [job(1, order=3), job(2, priority=1, order=4), job(3, order=1), job(4, order=2)]
    p = plan(demands, [gpu(0), gpu(1)])
    assert started(p) == {2: ("GPU-0",), 3: ("GPU-1",)}
    assert p.waiting == {4: "needs 1 GPU, 0 free", 1: "needs 1 GPU, 0 free"}


def test_a_count_takes_the_lowest_free_indices() -> None:
    p = plan([job(1, 2)], leases={"GPU-0": Lease(9)})
    assert started(p) == {1: ("GPU-1", "GPU-2")}


def test_explicit_gpus_by_index_or_uuid() -> None:
    p = plan([job(1, 1, gpu_ids=("2",)), job(2, 2, gpu_ids=("GPU-3", "0"))])
    assert started(p) == {1: ("GPU-2",), 2: ("GPU-3", "GPU-0")}


def test_explicit_gpu_held_by_a_running_job_names_it() -> None:
    p = plan([job(1, gpu_ids=("3",))], leases={"GPU-3": Lease(7)}, phases={7: ("prep", "running")})
    assert p.waiting == {1: "needs GPU 3, used by job prep"}
    p = plan([job(1, gpu_ids=("3",))], leases={"GPU-3": Lease(7)})
    assert p.waiting == {1: "needs GPU 3, used by job 7"}


def test_explicit_gpu_taken_earlier_in_the_same_plan() -> None:
    p = plan([job(1, 4), job(2, gpu_ids=("1",))])
    assert started(p) == {1: ("GPU-0", "GPU-1", "GPU-2", "GPU-3")}
    assert p.waiting == {2: "needs GPU 1, used by job j1"}


def test_never_two_jobs_on_one_gpu() -> None:
    p = plan([job(i) for i in range(6)], leases={"GPU-1": Lease(99)})
    used = [u for s in p.start for u in s.gpu_uuids]
    assert sorted(used) == ["GPU-0", "GPU-2", "GPU-3"]
    assert set(p.waiting) == {3, 4, 5}


# ---------------------------------------------------------------------------------------------
# Memory


def test_minimum_free_memory_picks_a_gpu_with_room() -> None:
    gpus = [gpu(0, used=70_000), gpu(1, used=10_000)]
    assert started(plan([job(1, memory=20_000)], gpus)) == {1: ("GPU-1",)}


def test_minimum_free_memory_reasons() -> None:
    gpus = [gpu(0, used=74_000), gpu(1, used=73_920)]
    p = plan([job(1, memory=20_000)], gpus)
    assert p.waiting == {1: "needs 20000 MiB free on each GPU, best has 8000"}
    gpus = [gpu(0, used=74_000), gpu(1)]
    p = plan([job(1, 2, memory=20_000)], gpus)
    assert p.waiting == {1: "needs 2 GPUs with 20000 MiB free each; only 1 GPU has that much free"}
    p = plan([job(1, gpu_ids=("0",), memory=20_000)], gpus)
    assert p.waiting == {1: "needs 20000 MiB free on GPU 0, which has 7920"}


def test_memory_no_gpu_could_ever_have() -> None:
    gpus = [gpu(0, total=40_000), gpu(1, total=81_920)]
    assert plan([job(1, memory=90_000)], gpus).waiting == {
        1: "needs 90000 MiB free on each GPU; the largest has 81920 MiB in all"
    }
    assert plan([job(1, 2, memory=50_000)], gpus).waiting == {
        1: "needs 2 GPUs with 50000 MiB free each; only 1 GPU on this box has that much"
    }
    assert plan([job(1, gpu_ids=("0",), memory=50_000)], gpus).waiting == {
        1: "needs 50000 MiB free on GPU 0, which has 40000 MiB in all"
    }


def test_exactly_the_memory_asked_for_is_enough() -> None:
    assert started(plan([job(1, memory=81_920)], [gpu(0)])) == {1: ("GPU-0",)}
    assert started(plan([job(1, gpu_ids=("0",), memory=81_920)], [gpu(0)])) == {1: ("GPU-0",)}
    assert started(plan([job(1, 2, memory=20_000)], [gpu(0, used=61_920), gpu(1)])) == {1: ("GPU-0", "GPU-1")}


def test_a_job_that_asks_for_no_free_memory_takes_a_gpu_whose_memory_is_all_used() -> None:
    assert started(plan([job(1)], [gpu(0, used=81_920)])) == {1: ("GPU-0",)}


def test_memory_reasons_say_has_for_one_gpu_and_have_for_several() -> None:
    gpus = [gpu(0, total=40_000), gpu(1), gpu(2)]
    assert plan([job(1, 3, memory=50_000)], gpus).waiting == {
        1: "needs 3 GPUs with 50000 MiB free each; only 2 GPUs on this box have that much"
    }
    gpus = [gpu(0, used=70_000), gpu(1), gpu(2)]
    assert plan([job(1, 3, memory=20_000)], gpus).waiting == {
        1: "needs 3 GPUs with 20000 MiB free each; only 2 GPUs have that much free"
    }


# ---------------------------------------------------------------------------------------------
# Foreign processes, boxes without enough GPUs, CPU slots


def test_a_gpu_with_a_foreign_process_is_never_used() -> None:
    gpus = [gpu(0), gpu(1, foreign=1)]
    p = plan([job(1), job(2)], gpus)
    assert started(p) == {1: ("GPU-0",)}
    assert p.waiting == {2: "needs 1 GPU, 0 free (GPU 1 has a foreign process)"}


def test_foreign_reasons_count_processes_and_gpus() -> None:
    assert plan([job(1)], [gpu(0, foreign=3)]).waiting == {
        1: "needs 1 GPU, 0 free (GPU 0 has 3 foreign processes)"
    }
    assert plan([job(1, 2)], [gpu(0, foreign=1), gpu(1, foreign=2)]).waiting == {
        1: "needs 2 GPUs, 0 free (GPUs 0,1 have foreign processes)"
    }
    assert plan([job(1, gpu_ids=("1",))], [gpu(0), gpu(1, foreign=1)]).waiting == {
        1: "needs GPU 1; GPU 1 has a foreign process"
    }


def test_gpu_jobs_on_a_box_without_gpus_wait_and_never_take_a_cpu_slot() -> None:
    p = plan([job(1), job(2, 2), job(3, 0)], [], cpu=(2, 0))
    assert started(p) == {3: ()}
    assert p.waiting == {1: "needs 1 GPU; this box has none", 2: "needs 2 GPUs; this box has none"}


def test_more_gpus_than_the_box_has() -> None:
    p = plan([job(1, 16), job(2, gpu_ids=("9",))], box(8))
    assert p.waiting == {1: "needs 16 GPUs; this box has 8", 2: "needs GPU 9; this box has no such GPU"}


def test_impossible_jobs_do_not_hold_back_others() -> None:
    p = plan([job(1, 16, priority=9), job(2)])
    assert started(p) == {2: ("GPU-0",)} and p.reservation is None


def test_cpu_slots_limit_cpu_jobs() -> None:
    p = plan([job(1, 0), job(2, 0), job(3, 0)], cpu=(2, 1))
    assert started(p) == {1: ()}
    assert p.waiting == {2: "needs a CPU slot, 2 of 2 in use", 3: "needs a CPU slot, 2 of 2 in use"}
    p = plan([job(1, 0)], cpu=(0, 0))
    assert p.waiting == {1: "needs a CPU slot; this box has none (cpu_slots = 0)"}


# ---------------------------------------------------------------------------------------------
# Dependencies and outside blocks


def test_dependencies_wait_until_they_succeed() -> None:
    phases: dict[int, tuple[str, Phase]] = {7: ("prep", "running"), 8: ("data", "succeeded")}
    p = plan(
        [job(1, after=(7,)), job(2, after=(8,)), job(3, after=(7, 4)), job(4, priority=-1)], phases=phases
    )
    assert started(p) == {2: ("GPU-0",), 4: ("GPU-1",)}
    assert p.waiting == {1: "after job prep (running)", 3: "after job prep (running), job j4 (queued)"}


@pytest.mark.parametrize(
    ("phase", "reason"),
    [("failed", "after job prep, which failed"), ("cancelled", "after job prep, which was cancelled")],
)
def test_a_failed_or_cancelled_dependency_fails_the_job(phase: Phase, reason: str) -> None:
    p = plan(
        [job(1, after=(8, 7), blocked="waiting for dataset x")],
        phases={7: ("prep", phase), 8: ("a", "running")},
    )
    assert p.fail == {1: reason} and not p.waiting


def test_a_dependency_on_an_unknown_job_fails() -> None:
    assert plan([job(1, after=(42,))]).fail == {1: "after job 42, which does not exist"}


def test_an_outside_block_is_the_reason_and_holds_no_gpus() -> None:
    p = plan([job(1, 4, priority=5, blocked="waiting for dataset sft_demo"), job(2)])
    assert started(p) == {2: ("GPU-0",)}
    assert p.waiting == {1: "waiting for dataset sft_demo"} and p.reservation is None
    p = plan([job(1, blocked="waiting for dataset sft_demo", after=(7,))], phases={7: ("prep", "queued")})
    assert p.waiting == {1: "after job prep (queued); waiting for dataset sft_demo"}


def test_an_impossible_request_is_reported_before_a_dependency() -> None:
    p = plan([job(1, 16, after=(7,))], phases={7: ("prep", "running")})
    assert p.waiting == {1: "needs 16 GPUs; this box has 4"}


# ---------------------------------------------------------------------------------------------
# Reservation and backfill


def test_a_waiting_large_job_reserves_gpus_and_smaller_ones_queue_behind_it() -> None:
    leases = {"GPU-2": Lease(7, NOW + 3600), "GPU-3": Lease(8, NOW + 5400)}
    p = plan([job(1, 4, priority=5), job(2), job(3, gpu_ids=("0",))], leases=leases)
    assert not p.start
    assert p.reservation == Reservation(1, ("GPU-0", "GPU-1", "GPU-2", "GPU-3"), NOW + 5400)
    behind = (
        "queued behind job j1 (priority 5) which is reserving GPUs 0,1,2,3; "
        "a job with a timeout of at most 1h30m may use them meanwhile"
    )
    assert p.waiting == {
        1: "needs 4 GPUs, 2 free; GPUs 0,1,2,3 are held for it, all free within 1h30m",
        2: behind,
        3: behind,
    }


def test_a_short_job_backfills_onto_reserved_gpus_if_it_ends_in_time() -> None:
    leases = {"GPU-2": Lease(7, NOW + 3600), "GPU-3": Lease(8, NOW + 5400)}
    demands = [
        job(1, 4, priority=5),
        job(2, timeout=5400),
        job(3, timeout=5401),
        job(4, gpu_ids=("1",), timeout=60),
    ]
    p = plan(demands, leases=leases)
    assert started(p) == {2: ("GPU-0",), 4: ("GPU-1",)}
    assert p.waiting[3].startswith("queued behind job j1 (priority 5)")


def test_the_reservation_takes_the_gpus_free_soonest() -> None:
    leases = {"GPU-0": Lease(7, NOW + 900), "GPU-1": Lease(8), "GPU-2": Lease(9, NOW + 60)}
    p = plan([job(1, 3, priority=1), job(2, timeout=600)], leases=leases)
    assert p.reservation == Reservation(1, ("GPU-0", "GPU-2", "GPU-3"), NOW + 900)
    assert started(p) == {2: ("GPU-3",)}


def test_a_run_without_timeout_makes_the_shadow_infinite() -> None:
    leases = {"GPU-0": Lease(7), "GPU-1": Lease(8)}
    p = plan([job(1, 4), job(2), job(3, 2, timeout=1e9)], leases=leases)
    assert p.reservation == Reservation(1, ("GPU-0", "GPU-1", "GPU-2", "GPU-3"), math.inf)
    assert p.waiting[1] == "needs 4 GPUs, 2 free; GPUs 0,1,2,3 are held for it"
    assert p.waiting[2] == (
        "queued behind job j1 (priority 0) which is reserving GPUs 0,1,2,3; "
        "a job with a timeout may use them meanwhile"
    )
    assert started(p) == {3: ("GPU-2", "GPU-3")}


def test_jobs_ranked_above_the_holder_are_not_held_back() -> None:
    leases = {"GPU-0": Lease(7, NOW + 60)}
    p = plan([job(1, 4, priority=5), job(2, priority=6)], leases=leases)
    assert started(p) == {2: ("GPU-1",)}
    assert p.reservation is not None and p.reservation.job_id == 1


def test_only_the_first_blocked_job_reserves() -> None:
    leases = {"GPU-0": Lease(7, NOW + 60), "GPU-1": Lease(8, NOW + 60)}
    p = plan([job(1, 3, priority=2), job(2, 3, priority=1)], leases=leases)
    assert p.reservation is not None and p.reservation.job_id == 1
    assert p.waiting[2] == "needs 3 GPUs, 2 free"


def test_a_job_waiting_on_a_foreign_process_passes_the_reservation_down() -> None:
    gpus = [gpu(0), gpu(1), gpu(2, foreign=1), gpu(3)]
    leases = {"GPU-0": Lease(7, NOW + 60), "GPU-1": Lease(8, NOW + 60)}
    p = plan([job(1, 4, priority=2), job(2, 3, priority=1), job(3)], gpus, leases=leases)
    assert p.waiting[1] == "needs 4 GPUs, 1 free (GPU 2 has a foreign process)"
    assert p.reservation == Reservation(2, ("GPU-0", "GPU-1", "GPU-3"), NOW + 60)
    assert p.waiting[3].startswith("queued behind job j2 (priority 1)")


def test_a_job_waiting_on_memory_something_else_uses_reserves_nothing() -> None:
    gpus = [gpu(0, used=75_000), gpu(1)]
    p = plan([job(1, gpu_ids=("0",), memory=20_000, priority=1), job(2, 2)], gpus)
    assert p.reservation is None and started(p) == {2: ("GPU-0", "GPU-1")}


def test_a_job_whose_gpus_are_all_busy_holds_nothing_yet() -> None:
    leases = {"GPU-0": Lease(7, NOW + 60)}
    p = plan([job(1, gpu_ids=("0",), priority=1), job(2, 2)], [gpu(0), gpu(1), gpu(2)], leases=leases)
    assert p.waiting[1] == "needs GPU 0, used by job 7"
    assert started(p) == {2: ("GPU-1", "GPU-2")} and p.reservation is None


def test_an_explicit_holder_reserves_exactly_its_gpus() -> None:
    leases = {"GPU-1": Lease(7, NOW + 120)}
    p = plan([job(1, 2, gpu_ids=("1", "2"), priority=1), job(2), job(3, gpu_ids=("2",))], leases=leases)
    assert p.reservation == Reservation(1, ("GPU-1", "GPU-2"), NOW + 120)
    assert p.waiting[1] == "needs GPU 1, used by job 7; GPUs 1,2 are held for it, all free within 2m"
    assert started(p) == {2: ("GPU-0",)}
    assert p.waiting[3] == (
        "queued behind job j1 (priority 1) which is reserving GPUs 1,2; "
        "a job with a timeout of at most 2m may use them meanwhile"
    )


def test_backfill_prefers_unreserved_gpus() -> None:
    gpus = [gpu(0), gpu(1, total=16_000), gpu(2)]
    leases = {"GPU-2": Lease(7, NOW + 600)}
    p = plan([job(1, 2, memory=40_000, priority=1), job(2, timeout=60)], gpus, leases=leases)
    assert p.reservation == Reservation(1, ("GPU-0", "GPU-2"), NOW + 600)
    assert started(p) == {2: ("GPU-1",)}


def test_a_job_that_ends_exactly_at_the_shadow_time_backfills_behind_one_of_its_size_that_does_not() -> None:
    leases = {"GPU-2": Lease(7, NOW + 3600), "GPU-3": Lease(8, NOW + 5400)}
    p = plan([job(1, 4, priority=5), job(2), job(3, timeout=5400)], leases=leases)
    assert started(p) == {3: ("GPU-0",)}
    assert p.waiting[2] == (
        "queued behind job j1 (priority 5) which is reserving GPUs 0,1,2,3; "
        "a job with a timeout of at most 1h30m may use them meanwhile"
    )


@pytest.mark.parametrize(
    ("ends_in", "within"),
    [(3660.0, "1h01m"), (3659.9, "1h00m"), (3600.0, "1h00m"), (60.0, "1m"), (59.9, "59s"), (-5.0, "0s")],
)
def test_the_wait_for_a_reservation_is_rounded_down(ends_in: float, within: str) -> None:
    """Rounded down, so that a job with a timeout of the length shown does fit; a run past its
    end-by time (still stopping) leaves nothing to wait for."""
    p = plan([job(1, 2), job(2)], [gpu(0), gpu(1)], leases={"GPU-1": Lease(7, NOW + ends_in)})
    assert p.waiting == {
        1: f"needs 2 GPUs, 1 free; GPUs 0,1 are held for it, all free within {within}",
        2: (
            "queued behind job j1 (priority 0) which is reserving GPUs 0,1; "
            f"a job with a timeout of at most {within} may use them meanwhile"
        ),
    }


def test_a_run_started_in_the_same_plan_is_waited_for_until_its_timeout() -> None:
    p = plan([job(1, priority=2, timeout=600), job(2, 4, priority=1)])
    assert started(p) == {1: ("GPU-0",)}
    assert p.reservation == Reservation(2, ("GPU-0", "GPU-1", "GPU-2", "GPU-3"), NOW + 600)
    assert p.waiting[2] == "needs 4 GPUs, 3 free; GPUs 0,1,2,3 are held for it, all free within 10m"


def test_memory_our_own_run_uses_is_waited_for() -> None:
    gpus = [gpu(0), gpu(1, used=80_000)]
    p = plan([job(1, 2, memory=20_000)], gpus, leases={"GPU-1": Lease(7, NOW + 60)})
    assert p.reservation == Reservation(1, ("GPU-0", "GPU-1"), NOW + 60)
    assert p.waiting == {1: "needs 2 GPUs, 1 free; GPUs 0,1 are held for it, all free within 1m"}


def test_a_reservation_counts_gpus_with_exactly_the_memory_asked_for() -> None:
    leases = {"GPU-1": Lease(7, NOW + 60)}
    p = plan(
        [job(1, 2, memory=81_920, priority=1), job(2, gpu_ids=("0",), memory=81_920), job(3, memory=81_920)],
        [gpu(0), gpu(1)],
        leases=leases,
    )
    assert p.reservation == Reservation(1, ("GPU-0", "GPU-1"), NOW + 60)
    behind = (
        "queued behind job j1 (priority 1) which is reserving GPUs 0,1; "
        "a job with a timeout of at most 1m may use them meanwhile"
    )
    assert p.waiting == {
        1: "needs 2 GPUs, 1 free; GPUs 0,1 are held for it, all free within 1m",
        2: behind,
        3: behind,
    }


def test_a_gpu_whose_memory_is_all_used_can_be_reserved_for_a_job_that_asks_for_none() -> None:
    gpus = [gpu(0, used=81_920), gpu(1)]
    p = plan([job(1, 2, priority=1), job(2), job(3, timeout=30)], gpus, leases={"GPU-1": Lease(7, NOW + 60)})
    assert p.reservation == Reservation(1, ("GPU-0", "GPU-1"), NOW + 60)
    assert p.waiting == {
        1: "needs 2 GPUs, 1 free; GPUs 0,1 are held for it, all free within 1m",
        2: (
            "queued behind job j1 (priority 1) which is reserving GPUs 0,1; "
            "a job with a timeout of at most 1m may use them meanwhile"
        ),
    }
    assert started(p) == {3: ("GPU-0",)}


@pytest.mark.parametrize("small_timeout", [None, 2.0, 20.0])
def test_a_large_job_is_not_starved_by_a_stream_of_small_ones(small_timeout: float | None) -> None:
    """A 4-GPU job arrives while small runs end at ticks 1..4 and a one-GPU job of at most 4 ticks
    arrives every tick; without a reservation each GPU would go to the next small job as it frees.
    Small jobs whose timeout ends them in time (2 ticks) backfill, and still the large one starts
    as soon as the runs it found on the box are over."""
    runs = {f"GPU-{i}": (100 + i, float(i + 1), float(i + 1)) for i in range(4)}  # job, ends, ends_by
    queue, big_started, backfilled = [job(1, 4)], None, 0
    for t in range(40):
        queue.append(job(1000 + t, timeout=small_timeout))
        runs = {u: run for u, run in runs.items() if run[1] > t}
        leases = {u: Lease(job_id, ends_by) for u, (job_id, _, ends_by) in runs.items()}
        p = place(queue, box(), leases, {}, 1, 0, float(t))
        if 1 in started(p):
            big_started = t
            break
        for s in p.start:
            ends_by = math.inf if small_timeout is None else t + small_timeout
            runs.update((u, (s.job_id, min(t + 4.0, ends_by), ends_by)) for u in s.gpu_uuids)
        backfilled += len(p.start)
        queue = [d for d in queue if d.id not in started(p)]
    assert big_started == 4, "the 4-GPU job did not start as soon as the runs it found were over"
    assert backfilled == (2 if small_timeout == 2.0 else 0)  # at ticks 1 and 2, ending by tick 4


def test_place_is_deterministic_and_does_not_depend_on_input_order() -> None:
    demands = [job(i, 1 + i % 3, priority=i % 4, after=(i - 1,) if i % 5 == 0 else ()) for i in range(1, 30)]
    phases: dict[int, tuple[str, Phase]] = {i: (f"j{i}", "queued") for i in range(1, 30)}
    leases = {"GPU-1": Lease(99, NOW + 10)}
    first = plan(demands, leases=leases, phases=phases)
    assert plan(list(reversed(demands)), leases=leases, phases=phases) == first


def test_demand_rejects_inconsistent_requests() -> None:
    with pytest.raises(ValueError, match="gpus must count gpu_ids"):
        job(1, 2, gpu_ids=("0",))
    with pytest.raises(ValueError, match="gpus must count gpu_ids"):
        job(1, 2, gpu_ids=("0", "0"))
    with pytest.raises(ValueError, match="negative"):
        job(1, -1)
    with pytest.raises(ValueError, match="negative"):
        job(1, memory=-1)
    with pytest.raises(ValueError, match="negative"):
        job(1, timeout=-1)
    assert (job(1, memory=0).min_free_memory_mib, job(1, timeout=0).timeout_s) == (0, 0)


# ---------------------------------------------------------------------------------------------
# A simulated box

FOREIGN = 1
SIM_GPUS = [gpu(i, foreign=1 if i == FOREIGN else 0) for i in range(4)]


@dataclass
class SimJob:
    demand: Demand
    duration: int
    """Ticks until it ends by itself; the run is stopped at its timeout if that comes first."""
    succeeds: bool
    dataset_at: int
    """The tick from which its dataset is there (before it, the job is blocked)."""
    phase: Phase = "queued"
    started_at: int = -1
    gpus: tuple[str, ...] = field(default=())


@st.composite
def workloads(draw: st.DrawFn) -> list[SimJob]:
    jobs = []
    for i in range(50):
        explicit = draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans())
        count = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3, 4]))
        ids = tuple(str(x) for x in draw(st.permutations(range(4)))[:count]) if explicit and count else ()
        after = tuple(draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True))) if i % 3 == 2 else ()
        timeout = draw(st.sampled_from([None, None, 3.0, 6.0, 12.0]))
        demand = Demand(
            id=i,
            name=f"j{i}",
            priority=draw(st.integers(0, 3)),
            order=i,
            gpus=count,
            gpu_ids=ids,
            min_free_memory_mib=draw(st.sampled_from([None, None, None, None, None, 40_000, 90_000])),
            after=after,
            timeout_s=timeout,
        )
        jobs.append(
            SimJob(
                demand,
                draw(st.integers(1, 8)),
                draw(st.integers(0, 9)) > 0,
                draw(st.sampled_from([0, 0, 5, 30])),
            )
        )
    return jobs


def never_placeable(jobs: Sequence[SimJob]) -> set[int]:
    """Jobs no state of the simulated box could run, and jobs after them: they wait for ever."""
    usable = [g for g in SIM_GPUS if not g.foreign_processes]
    stuck: set[int] = set()
    for j in jobs:
        d = j.demand
        need = d.min_free_memory_mib or 0
        roomy = [g for g in usable if g.memory_total_mib >= need]
        if d.gpu_ids:
            bad = any(gid not in {str(g.index) for g in roomy} for gid in d.gpu_ids)
        else:
            bad = d.gpus > len(roomy)
        if bad or stuck.intersection(d.after):
            stuck.add(j.demand.id)
    return stuck


def size(d: Demand) -> tuple[object, ...]:
    """What decides where a job fits and whether it may backfill: equal sizes keep their rank order."""
    return d.gpus, d.gpu_ids, d.min_free_memory_mib, d.timeout_s


def rank(d: Demand) -> tuple[int, int]:
    return -d.priority, d.order


def check_plan(
    p: Plan, queue: Sequence[Demand], leases: Mapping[str, Lease], ranked_ready: list[Demand], now: float
) -> None:
    ids = {d.id for d in queue}
    starts = {s.job_id for s in p.start}
    assert starts | set(p.waiting) | set(p.fail) == ids
    assert not (starts & set(p.waiting)) and not (starts & set(p.fail)) and not (set(p.waiting) & set(p.fail))
    assert all(p.waiting.values()) and all(p.fail.values())
    used = [u for s in p.start for u in s.gpu_uuids]
    assert len(used) == len(set(used)) and not set(used) & set(leases)
    assert f"GPU-{FOREIGN}" not in used
    # Among jobs free to run now and of the same size, a lower-ranked one never starts first.
    for pos, high in enumerate(ranked_ready):
        if high.id in starts:
            continue
        for low in ranked_ready[pos + 1 :]:
            assert not (low.id in starts and size(high) == size(low)), (high, low, p.waiting[high.id])
    # A job ranked below the holder that starts on its GPUs is sure to be off them in time.
    if p.reservation is not None:
        assert p.reservation.job_id in p.waiting and f"GPU-{FOREIGN}" not in p.reservation.gpu_uuids
        by_id = {d.id: d for d in queue}
        holder, reserved = by_id[p.reservation.job_id], set(p.reservation.gpu_uuids)
        for s in p.start:
            d = by_id[s.job_id]
            if rank(d) > rank(holder) and reserved & set(s.gpu_uuids):
                assert d.timeout_s is not None and now + d.timeout_s <= p.reservation.shadow_ts


def tick(jobs: list[SimJob], t: int) -> tuple[Plan, bool]:
    """One scheduling round: runs that are over end, then `place` decides and its plan is applied."""
    by_id = {j.demand.id: j for j in jobs}
    for j in jobs:
        timeout = j.demand.timeout_s
        over = t - j.started_at >= min(j.duration, timeout if timeout is not None else math.inf)
        if j.phase == "running" and over:
            j.phase = "succeeded" if j.succeeds and t - j.started_at >= j.duration else "failed"
    running = [j for j in jobs if j.phase == "running"]
    leases = {
        u: Lease(j.demand.id, None if j.demand.timeout_s is None else j.started_at + j.demand.timeout_s)
        for j in running
        for u in j.gpus
    }
    queue = [
        replace(j.demand, blocked=None if t >= j.dataset_at else "waiting for dataset d")
        for j in jobs
        if j.phase == "queued"
    ]
    phases = {j.demand.id: (j.demand.name, j.phase) for j in jobs}
    cpu_used = sum(1 for j in running if j.demand.gpus == 0)
    p = place(queue, SIM_GPUS, leases, phases, 1, cpu_used, float(t))
    ready = [d for d in queue if d.blocked is None and all(by_id[a].phase == "succeeded" for a in d.after)]
    ready.sort(key=rank)
    check_plan(p, queue, leases, ready, float(t))
    for s in p.start:
        j = by_id[s.job_id]
        j.phase, j.started_at, j.gpus = "running", t, s.gpu_uuids
    for job_id in p.fail:
        by_id[job_id].phase = "failed"
    return p, bool(running or p.start or p.fail)


@settings(max_examples=40, deadline=None)
@given(workloads())
def test_simulated_box_keeps_every_invariant_and_runs_every_runnable_job(jobs: list[SimJob]) -> None:
    t = 0
    while True:
        p, busy = tick(jobs, t)
        if not busy and t > 30:
            break
        t += 1
        assert t < 2000, "the simulation does not finish"
    stuck = never_placeable(jobs)
    by_id = {j.demand.id: j for j in jobs}
    for j in jobs:
        d = j.demand
        if any(by_id[a].phase == "failed" for a in d.after):
            assert j.phase == "failed" and j.started_at == -1, "dependents of failed jobs fail unrun"
        elif d.id in stuck:
            assert j.phase == "queued" and d.id in p.waiting
        else:
            assert j.phase in ("succeeded", "failed"), (d, j.phase, p.waiting.get(d.id))
