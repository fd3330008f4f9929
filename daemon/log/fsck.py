"""The whole check of a log, on demand (`llmtraind fsck`): what start-up leaves to the background
and what nothing else checks.

Start-up with a snapshot trusts it and checks only the events after it; the daemon's background check
reads the whole file but never refolds it. This does both and more: SQLite's integrity_check, seqs
gap-free from 1, stream versions 1..n, known types, the append-only triggers in place, every event
readable as its type, every snapshot equal to the fold of the events up to its seq, and the log's id
the state folder's. It reads inside one read transaction, so a daemon appending meanwhile changes
nothing it sees.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from daemon.core.fold import apply
from daemon.core.layout import StateLayout
from daemon.core.state import STATE_SCHEMA, State, state_from_json, state_to_json
from daemon.log.errors import LogDamaged
from daemon.log.identity import read_state_id
from daemon.log.sqlite import (
    check_log,
    iter_events,
    latest_snapshot,
    missing_triggers,
    open_readonly,
    read_log_id,
)

__all__ = ["Report", "fsck"]


@dataclass(slots=True)
class Report:
    """What was checked (`checked`, one line each) and what is wrong (`problems`)."""

    events: int = 0
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def fsck(db: Path) -> Report:
    conn = open_readonly(db)
    try:
        conn.execute("BEGIN")
        return _check(conn, db)
    except sqlite3.DatabaseError as e:
        report = Report()
        report.problems.append(f"cannot read the event log: {e}")
        return report
    finally:
        conn.close()


def _check(conn: sqlite3.Connection, db: Path) -> Report:
    report = Report()
    try:
        check_log(conn, full=True)
    except LogDamaged as e:
        report.problems.append(str(e))
        return report
    report.events = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    report.checked.append(
        f"SQLite integrity_check, seq 1..{report.events} gap-free, stream versions 1..n, event types known"
    )
    gone = missing_triggers(conn)
    if gone:
        report.problems.append(f"the append-only trigger(s) {', '.join(gone)} are missing")
    else:
        report.checked.append("append-only triggers present")
    _check_identity(conn, db, report)
    _check_fold(conn, report)
    return report


def _check_identity(conn: sqlite3.Connection, db: Path, report: Report) -> None:
    log_id = read_log_id(conn)
    state_id = read_state_id(StateLayout(db.parent))
    if log_id is None:
        report.checked.append("log id: none yet (the daemon gives one on its next start)")
    elif state_id is not None and state_id != log_id:
        report.problems.append(f"the log's id {log_id} is not the state folder's log-id ({state_id})")
    else:
        report.checked.append(f"log id {log_id}{'' if state_id else ' (no state/log-id file)'}")


def _check_fold(conn: sqlite3.Connection, report: Report) -> None:
    """Fold the whole log once, comparing each snapshot of this version's state schema when the fold
    reaches its seq; a snapshot of another schema is one start-up ignores."""
    rows = conn.execute("SELECT seq, schema FROM snapshots ORDER BY seq").fetchall()
    other = [seq for seq, schema in rows if schema != STATE_SCHEMA]
    if other:
        report.checked.append(f"snapshot(s) at seq {other} are of another state schema: ignored")
    due = [seq for seq, schema in rows if schema == STATE_SCHEMA]
    past = [seq for seq in due if seq > report.events]
    if past:
        report.problems.append(f"snapshot(s) at seq {past} are past the log's end (seq {report.events})")
        due = [seq for seq in due if seq <= report.events]
    state = State()
    try:
        for seq in due:
            for rec in iter_events(conn, after=state.last_seq, upto=seq):
                state = apply(state, rec)
            _compare(conn, state, seq, report)
        for rec in iter_events(conn, after=state.last_seq):
            state = apply(state, rec)
    except LogDamaged as e:
        report.problems.append(str(e))
        return
    report.checked.append(f"every event read as its type and folded (state at seq {state.last_seq})")


def _compare(conn: sqlite3.Connection, state: State, seq: int, report: Report) -> None:
    snap = latest_snapshot(conn, STATE_SCHEMA, seq)
    assert snap is not None and snap.seq == seq
    try:
        stored = json.loads(state_to_json(state_from_json(snap.state_json)))
    except ValueError as e:
        report.problems.append(f"the snapshot at seq {seq} cannot be read: {e}")
        return
    if stored != json.loads(state_to_json(state)):
        report.problems.append(f"the snapshot at seq {seq} differs from the fold of events 1..{seq}")
    else:
        report.checked.append(f"the snapshot at seq {seq} equals the fold of events 1..{seq}")
