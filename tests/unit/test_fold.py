"""State is a pure fold: snapshots change nothing, and replays are byte-identical (E1, E2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.events import DaemonStarted, DaemonStopped, Event, GpuSeen, Recorded
from daemon.state import State, apply, fold, state_from_json, state_to_json

pids = st.integers(min_value=1, max_value=5)
gpus = st.lists(
    st.builds(
        GpuSeen,
        index=st.integers(0, 7),
        uuid=st.text(max_size=8),
        name=st.text(max_size=8),
        memory_total_mib=st.integers(0, 10**6),
    ),
    max_size=3,
)
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        DaemonStarted,
        version=st.text(max_size=5),
        config_digest=st.text(max_size=5),
        host=st.text(max_size=5),
        pid=pids,
        boot_id=st.text(max_size=5),
        gpus=gpus,
    ),
    st.builds(DaemonStopped, pid=pids, reason=st.text(max_size=10)),
)


def record(evs: list[Event]) -> list[Recorded]:
    return [Recorded(seq=i, stream="daemon", version=i, ts=1000.0 + i, event=e) for i, e in enumerate(evs, 1)]


@settings(max_examples=150, deadline=None)
@given(st.lists(events, max_size=40))
def test_snapshot_at_any_k_plus_tail_equals_full_fold(evs: list[Event]) -> None:
    log = record(evs)
    full = fold(log)
    for k in range(len(log) + 1):
        snap = state_to_json(fold(log[:k]))
        resumed = fold(log[k:], state_from_json(snap))
        assert resumed == full


@settings(max_examples=100, deadline=None)
@given(st.lists(events, max_size=40))
def test_replaying_twice_gives_byte_identical_state(evs: list[Event]) -> None:
    log = record(evs)
    assert state_to_json(fold(log)) == state_to_json(fold(log))


@settings(max_examples=100, deadline=None)
@given(st.lists(events, max_size=40))
def test_incremental_equals_replayed(evs: list[Event]) -> None:
    log = record(evs)
    state = State()
    for rec in log:
        state = apply(state, rec)
        assert state.last_seq == rec.seq
    assert state == fold(log)


def test_a_start_without_a_stop_counts_as_unclean() -> None:
    started = DaemonStarted(version="v", config_digest="d", host="h", pid=1, boot_id="b")
    state = fold(record([started, started.model_copy(update={"pid": 2}), DaemonStopped(pid=2, reason="x")]))
    assert state.daemon_starts == 2 and state.unclean_stops == 1
    assert state.daemon is not None and state.daemon.stopped_ts == 1003.0
