"""The fold's transitions for the daemon's and the inbox's events, one table per event type, written
from README's "The inbox" and "Runs" and DESIGN.md's job states: a state before, the event, the state
after, every expected value spelled out."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.core.events import (
    CancelRequested,
    ConfigReloaded,
    DaemonStarted,
    DaemonStopped,
    DatasetValidating,
    DuplicateDropped,
    FileRejected,
    GpuSeen,
    NotifyCursor,
    NotifyDelivered,
    NotifyGivenUp,
    RetryRequested,
)
from daemon.core.state import DaemonInfo, Dataset, IntakeCounts, RejectedDrop, Validation
from tests.fold_world import (
    EARLIER,
    SEQ,
    Row,
    T,
    accepted,
    check,
    dataset,
    job,
    rows,
    run,
    submitted,
    world,
)

GPU = GpuSeen(index=0, uuid="GPU-a", name="H100", memory_total_mib=81920)
START = DaemonStarted(version="0.3.0", config_digest="c1", host="box", pid=2, boot_id="b1", gpus=[GPU])
NOW_RUNNING = DaemonInfo(
    version="0.3.0", pid=2, host="box", boot_id="b1", config_digest="c1", started_ts=T, gpus=[GPU]
)


def info(*, stopped_ts: float | None = None, digest: str = "c1") -> DaemonInfo:
    """The daemon before: pid 1, started EARLIER."""
    return DaemonInfo(
        version="0.2.0",
        pid=1,
        host="box",
        boot_id="b0",
        config_digest=digest,
        started_ts=EARLIER,
        stopped_ts=stopped_ts,
    )


def reading(drop: str = "d1", done: int = 400) -> Validation:
    return Validation(
        drop=drop, name="chat", bytes_total=1000, bytes_done=done, rows_done=done // 10, ts=EARLIER
    )


DAEMON = {
    "first start": Row(world(), START, world(daemon=NOW_RUNNING, daemon_starts=1)),
    "start after a clean stop": Row(
        world(daemon=info(stopped_ts=1500.0), daemon_starts=1),
        START,
        world(daemon=NOW_RUNNING, daemon_starts=2),
    ),
    "start after a crash counts an unclean stop": Row(
        world(daemon=info(), daemon_starts=1),
        START,
        world(daemon=NOW_RUNNING, daemon_starts=2, unclean_stops=1),
    ),
    "each crash counts": Row(
        world(daemon=info(), daemon_starts=3, unclean_stops=1),
        START,
        world(daemon=NOW_RUNNING, daemon_starts=4, unclean_stops=2),
    ),
    "start forgets the old process's validations (their drops are redone)": Row(
        world(daemon=info(stopped_ts=1500.0), daemon_starts=1, validating={"d1": reading()}),
        START,
        world(daemon=NOW_RUNNING, daemon_starts=2),
    ),
    "stop of the daemon that runs": Row(
        world(daemon=info(), daemon_starts=1),
        DaemonStopped(pid=1, reason="SIGTERM"),
        world(daemon=info(stopped_ts=T), daemon_starts=1),
    ),
    "stop of another pid changes nothing": Row(
        world(daemon=info(), daemon_starts=1),
        DaemonStopped(pid=9, reason="SIGTERM"),
        world(daemon=info(), daemon_starts=1),
    ),
    "stop before any start changes nothing": Row(world(), DaemonStopped(pid=1, reason="x"), world()),
    "config reload records the new digest": Row(
        world(daemon=info()),
        ConfigReloaded(config_digest="c2", applied=["intake.settle_s"], refused=[]),
        world(daemon=info(digest="c2")),
    ),
    "config reload before any start changes nothing": Row(
        world(), ConfigReloaded(config_digest="c2", applied=[], refused=[]), world()
    ),
    "a notification delivered changes no state": Row(
        world(daemon=info()),
        NotifyDelivered(target="ops", seq=3, webhook_id="msg_x", attempts=1),
        world(daemon=info()),
    ),
    "a notification given up changes no state": Row(
        world(daemon=info()),
        NotifyGivenUp(target="ops", seq=3, webhook_id="msg_x", attempts=5, reason="HTTP 500"),
        world(daemon=info()),
    ),
    "a notification cursor changes no state": Row(
        world(daemon=info()), NotifyCursor(target="ops", seq=9), world(daemon=info())
    ),
}

VALIDATING = {
    "a large dataset shows its progress": Row(
        world(),
        DatasetValidating(drop="d1", name="chat", bytes_total=1000, bytes_done=400, rows_done=40),
        world(validating={"d1": Validation("d1", "chat", 1000, 400, 40, T)}),
    ),
    "later progress replaces the earlier": Row(
        world(validating={"d1": reading(done=400), "d2": reading("d2")}),
        DatasetValidating(drop="d1", name="chat", bytes_total=1000, bytes_done=800, rows_done=80),
        world(validating={"d1": Validation("d1", "chat", 1000, 800, 80, T), "d2": reading("d2")}),
    ),
}

WAIT_CHAT = "waiting for dataset chat"
SFT_NOT_RL = (
    "dataset chat is sft_messages data, which feeds sft, lora, not rl (dpo); drop a fitting chat.jsonl"
)

ACCEPTED = {
    "new content becomes a dataset under its name": Row(
        world(validating={"d1": reading()}),
        accepted(),
        world(
            datasets=[dataset(accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"chat": "s1"},
            intake=IntakeCounts(datasets=1),
        ),
    ),
    "known content under another name adds the name": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        accepted(name="talk", drop="d2"),
        world(
            datasets=[dataset(names=["chat", "talk"])],
            dataset_names={"chat": "s1", "talk": "s1"},
            intake=IntakeCounts(datasets=1),
        ),
    ),
    "known content under its own name keeps one name": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        accepted(drop="d2"),
        world(datasets=[dataset()], dataset_names={"chat": "s1"}, intake=IntakeCounts(datasets=1)),
    ),
    "new content under a taken name takes the name": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        accepted("s2", drop="d2"),
        world(
            datasets=[dataset(), dataset("s2", accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"chat": "s2"},
            intake=IntakeCounts(datasets=1),
        ),
    ),
    "resolves the queued job waiting for it": Row(
        world(
            job(inputs={"chat": None}, blocked=WAIT_CHAT, reason=WAIT_CHAT),
            job_names={"train": 1},
            waiting_for={"chat": [1]},
        ),
        accepted(),
        world(
            job(inputs={"chat": "s1"}),
            datasets=[dataset(accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"chat": "s1"},
            job_names={"train": 1},
            waiting_for={"chat": [1]},
            intake=IntakeCounts(datasets=1),
        ),
    ),
    "data that cannot feed the waiting job keeps it blocked, saying why": Row(
        world(
            job(feeds="rl", rlhf_type="dpo", inputs={"chat": None}, blocked=WAIT_CHAT, reason=WAIT_CHAT),
            waiting_for={"chat": [1]},
        ),
        accepted(),
        world(
            job(feeds="rl", rlhf_type="dpo", inputs={"chat": None}, blocked=SFT_NOT_RL, reason=SFT_NOT_RL),
            datasets=[dataset(accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
            intake=IntakeCounts(datasets=1),
        ),
    ),
    "a new version is what a queued job reads next": Row(
        world(
            job(inputs={"chat": "s1"}),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
        ),
        accepted("s2", drop="d2"),
        world(
            job(inputs={"chat": "s2"}),
            datasets=[dataset(), dataset("s2", accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"chat": "s2"},
            waiting_for={"chat": [1]},
            intake=IntakeCounts(datasets=1),
        ),
    ),
    "a new version leaves running and interrupted jobs on what they read": Row(
        world(
            job(1, state="running", inputs={"chat": "s1"}),
            job(2, name="b", state="interrupted", inputs={"chat": "s1"}),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1, 2]},
        ),
        accepted("s2", drop="d2"),
        world(
            job(1, state="running", inputs={"chat": "s1"}),
            job(2, name="b", state="interrupted", inputs={"chat": "s1"}),
            datasets=[dataset(), dataset("s2", accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"chat": "s2"},
            waiting_for={"chat": [1, 2]},
            intake=IntakeCounts(datasets=1),
        ),
    ),
}

WAIT_TALK = "waiting for dataset talk"
DUPLICATES = {
    "the same bytes again are the same dataset": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        DuplicateDropped(drop="d2", filename="chat.jsonl", kind="dataset", sha256="s1", dataset="chat"),
        world(datasets=[dataset(drops=2)], dataset_names={"chat": "s1"}, intake=IntakeCounts(duplicates=1)),
    ),
    "the same bytes under a new name make it another name": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        DuplicateDropped(
            drop="d2", filename="talk.jsonl", kind="dataset", sha256="s1", dataset="chat", alias="talk"
        ),
        world(
            datasets=[dataset(names=["chat", "talk"], drops=2)],
            dataset_names={"chat": "s1", "talk": "s1"},
            intake=IntakeCounts(duplicates=1),
        ),
    ),
    "the new name resolves a job waiting for it": Row(
        world(
            job(datasets=["talk"], inputs={"talk": None}, blocked=WAIT_TALK, reason=WAIT_TALK),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            waiting_for={"talk": [1]},
        ),
        DuplicateDropped(
            drop="d2", filename="talk.jsonl", kind="dataset", sha256="s1", dataset="chat", alias="talk"
        ),
        world(
            job(datasets=["talk"], inputs={"talk": "s1"}),
            datasets=[dataset(names=["chat", "talk"], drops=2)],
            dataset_names={"chat": "s1", "talk": "s1"},
            waiting_for={"talk": [1]},
            intake=IntakeCounts(duplicates=1),
        ),
    ),
    "an alias it already had points the name back at it": Row(
        world(
            datasets=[dataset(names=["chat", "talk"]), dataset("s2", name="talk")],
            dataset_names={"chat": "s1", "talk": "s2"},
        ),
        DuplicateDropped(
            drop="d3", filename="talk.jsonl", kind="dataset", sha256="s1", dataset="chat", alias="talk"
        ),
        world(
            datasets=[dataset(names=["chat", "talk"], drops=2), dataset("s2", name="talk")],
            dataset_names={"chat": "s1", "talk": "s1"},
            intake=IntakeCounts(duplicates=1),
        ),
    ),
    "the same job file as a queued job is not a second job": Row(
        world(job(), job_names={"train": 1}),
        DuplicateDropped(drop="d2", filename="train.yaml", kind="job", sha256="job1", job_id=1),
        world(job(), job_names={"train": 1}, intake=IntakeCounts(duplicates=1)),
    ),
}

PREF_NOT_DPO = "dataset pref is preference data, which feeds rl, not rl (dpo); drop a fitting pref.jsonl"
SFT_NOT_PT = (
    "dataset chat is sft_messages data, which feeds sft, lora, not pretrain; drop a fitting chat.jsonl"
)


def kto() -> Dataset:
    return dataset("p1", name="pref", fmt="preference", task_types=["rl"], rlhf_types=["kto"])


SUBMITTED = {
    "with its dataset here it is queued reading it": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        submitted(),
        world(
            job(inputs={"chat": "s1"}, submitted_ts=T, submitted_seq=SEQ),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            job_names={"train": 1},
            waiting_for={"chat": [1]},
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "before its dataset it waits for it": Row(
        world(),
        submitted(),
        world(
            job(
                inputs={"chat": None}, blocked=WAIT_CHAT, reason=WAIT_CHAT, submitted_ts=T, submitted_seq=SEQ
            ),
            job_names={"train": 1},
            waiting_for={"chat": [1]},
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "waiting for two datasets names both": Row(
        world(),
        submitted(datasets=["a", "b"]),
        world(
            job(
                datasets=["a", "b"],
                inputs={"a": None, "b": None},
                blocked="waiting for dataset a; waiting for dataset b",
                reason="waiting for dataset a; waiting for dataset b",
                submitted_ts=T,
                submitted_seq=SEQ,
            ),
            job_names={"train": 1},
            waiting_for={"a": [1], "b": [1]},
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "preference data of another algorithm cannot feed it": Row(
        world(datasets=[kto()], dataset_names={"pref": "p1"}),
        submitted(datasets=["pref"], feeds="rl", rlhf_type="dpo"),
        world(
            job(
                datasets=["pref"],
                feeds="rl",
                rlhf_type="dpo",
                inputs={"pref": None},
                blocked=PREF_NOT_DPO,
                reason=PREF_NOT_DPO,
                submitted_ts=T,
                submitted_seq=SEQ,
            ),
            datasets=[kto()],
            dataset_names={"pref": "p1"},
            job_names={"train": 1},
            waiting_for={"pref": [1]},
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "an rl job naming no algorithm reads any preference data": Row(
        world(datasets=[kto()], dataset_names={"pref": "p1"}),
        submitted(datasets=["pref"], feeds="rl"),
        world(
            job(datasets=["pref"], feeds="rl", inputs={"pref": "p1"}, submitted_ts=T, submitted_seq=SEQ),
            datasets=[kto()],
            dataset_names={"pref": "p1"},
            job_names={"train": 1},
            waiting_for={"pref": [1]},
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "a task its data does not feed waits, saying why": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        submitted(feeds="pretrain"),
        world(
            job(
                feeds="pretrain",
                inputs={"chat": None},
                blocked=SFT_NOT_PT,
                reason=SFT_NOT_PT,
                submitted_ts=T,
                submitted_seq=SEQ,
            ),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            job_names={"train": 1},
            waiting_for={"chat": [1]},
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "an algorithm only matters to rl": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        submitted(rlhf_type="dpo"),
        world(
            job(rlhf_type="dpo", inputs={"chat": "s1"}, submitted_ts=T, submitted_seq=SEQ),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            job_names={"train": 1},
            waiting_for={"chat": [1]},
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "a job that feeds on nothing reads any format": Row(
        world(datasets=[dataset()], dataset_names={"chat": "s1"}),
        submitted(feeds=None),
        world(
            job(feeds=None, inputs={"chat": "s1"}, submitted_ts=T, submitted_seq=SEQ),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            job_names={"train": 1},
            waiting_for={"chat": [1]},
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "ids only grow": Row(
        world(next_job_id=7),
        submitted(3, datasets=[]),
        world(
            job(3, datasets=[], submitted_ts=T, submitted_seq=SEQ),
            job_names={"train": 3},
            next_job_id=7,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "the next id follows the highest": Row(
        world(),
        submitted(5, datasets=[]),
        world(
            job(5, datasets=[], submitted_ts=T, submitted_seq=SEQ),
            job_names={"train": 5},
            next_job_id=6,
            intake=IntakeCounts(jobs=1),
        ),
    ),
    "a name used before names the newest job": Row(
        world(job(1, state="succeeded", datasets=[]), job_names={"train": 1}, next_job_id=2),
        submitted(2, datasets=[]),
        world(
            job(1, state="succeeded", datasets=[]),
            job(2, datasets=[], submitted_ts=T, submitted_seq=SEQ),
            job_names={"train": 2},
            next_job_id=3,
            intake=IntakeCounts(jobs=1),
        ),
    ),
}

CANCEL = CancelRequested(drop="c1", job_id=1, source="cancel-train.yaml")
CANCELLED_WAITING = "cancelled by cancel-train.yaml while it waited to run"
CKPT = "/s/runs/1/1/output/checkpoint-20"
CONTROL = IntakeCounts(controls=1)

CANCELS = {
    "a queued job ends cancelled": Row(
        world(job(reason="needs 1 GPU, 0 free")),
        CANCEL,
        world(job(state="cancelled", ended_ts=T, reason=CANCELLED_WAITING), intake=CONTROL),
    ),
    "an interrupted job ends cancelled": Row(
        world(job(state="interrupted", resume_from=CKPT, attempts=1, runs=[run(ended_ts=1500.0)])),
        CANCEL,
        world(
            job(
                state="cancelled",
                ended_ts=T,
                reason=CANCELLED_WAITING,
                resume_from=CKPT,
                attempts=1,
                runs=[run(ended_ts=1500.0)],
            ),
            intake=CONTROL,
        ),
    ),
    "a running job is asked to stop and runs until it does": Row(
        world(job(state="running", attempts=1, runs=[run()])),
        CANCEL,
        world(job(state="running", attempts=1, runs=[run()], cancel_requested=True), intake=CONTROL),
    ),
    **{
        f"a {end} job stays {end}": Row(
            world(job(state=end, ended_ts=1500.0, reason="r")),
            CANCEL,
            world(job(state=end, ended_ts=1500.0, reason="r"), intake=CONTROL),
        )
        for end in ("succeeded", "failed", "cancelled")
    },
    "an unknown job is only counted": Row(
        world(job(2)), CancelRequested(drop="c1", job_id=9, source="x"), world(job(2), intake=CONTROL)
    ),
}

RETRY = RetryRequested(drop="r1", job_id=1, source="retry-train.yaml")
HERE: dict[str, Any] = {"datasets": [dataset()], "dataset_names": {"chat": "s1"}}

RETRIES = {
    "a failed job is queued again, its automatic retries reset": Row(
        world(
            job(
                state="failed",
                ended_ts=1500.0,
                reason="out of memory",
                attempts=3,
                auto_retries=2,
                inputs={"chat": "s1"},
            ),
            **HERE,
        ),
        RETRY,
        world(job(attempts=3, inputs={"chat": "s1"}), intake=CONTROL, **HERE),
    ),
    "a cancelled job is queued again, no longer to be cancelled": Row(
        world(
            job(state="cancelled", ended_ts=1500.0, reason="r", cancel_requested=True, inputs={"chat": "s1"}),
            **HERE,
        ),
        RETRY,
        world(job(inputs={"chat": "s1"}), intake=CONTROL, **HERE),
    ),
    "a job retried without its dataset waits for it": Row(
        world(
            job(state="failed", ended_ts=1500.0, reason="after job prep, which failed", inputs={"chat": None})
        ),
        RETRY,
        world(job(inputs={"chat": None}, blocked=WAIT_CHAT, reason=WAIT_CHAT), intake=CONTROL),
    ),
    **{
        f"a {live} job is left as it is": Row(
            world(job(state=live, reason="r", auto_retries=1)),
            RETRY,
            world(job(state=live, reason="r", auto_retries=1), intake=CONTROL),
        )
        for live in ("queued", "running", "interrupted", "succeeded")
    },
    "an unknown job is only counted": Row(
        world(), RetryRequested(drop="r1", job_id=9, source="x"), world(intake=CONTROL)
    ),
}

REJECTED = {
    "a rejected file is counted": Row(
        world(),
        FileRejected(
            drop="d1",
            filename="bad.jsonl",
            kind="dataset",
            summary="s",
            problems="p",
            kept_as="rejected/bad.jsonl",
        ),
        world(
            rejected_datasets={"bad": RejectedDrop("bad.jsonl", "rejected/bad.jsonl", T)},
            intake=IntakeCounts(rejected=1),
        ),
    ),
}


def rejected(
    filename: str = "chat.jsonl", kept_as: str = "chat.jsonl", kind: Any = "dataset"
) -> FileRejected:
    return FileRejected(drop="d9", filename=filename, kind=kind, summary="s", problems="p", kept_as=kept_as)


CHAT_REJECTED = {"chat": RejectedDrop("chat.jsonl", "chat.jsonl", T)}
CHAT_REJECTED_EARLIER = {"chat": RejectedDrop("chat.jsonl", "chat.jsonl", EARLIER)}
NOTE = " \u2014 chat.jsonl was rejected at 00:33 UTC, see inbox/rejected/chat.jsonl.error.txt"
"""T is 2000 s after the epoch: 00:33 UTC."""
NOTE_EARLIER = " \u2014 chat.jsonl was rejected at 00:16 UTC, see inbox/rejected/chat.jsonl.error.txt"
WAIT_REJECTED = WAIT_CHAT + NOTE
WAIT_REJECTED_EARLIER = WAIT_CHAT + NOTE_EARLIER
ONE_REJECTED = IntakeCounts(rejected=1)

REJECTED_DATASET_NAMES = {
    "a job waiting for the name says its drop was rejected, and where the reason is": Row(
        world(job(inputs={"chat": None}, blocked=WAIT_CHAT, reason=WAIT_CHAT), waiting_for={"chat": [1]}),
        rejected(),
        world(
            job(inputs={"chat": None}, blocked=WAIT_REJECTED, reason=WAIT_REJECTED),
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED,
            intake=ONE_REJECTED,
        ),
    ),
    "a newer rejection of the name replaces the older, under the name rejected/ kept it as": Row(
        world(
            job(inputs={"chat": None}, blocked=WAIT_REJECTED_EARLIER, reason=WAIT_REJECTED_EARLIER),
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED_EARLIER,
        ),
        rejected("chat.txt", "chat-2.txt"),
        world(
            job(
                inputs={"chat": None},
                blocked=WAIT_CHAT + " \u2014 chat.txt was rejected at 00:33 UTC, "
                "see inbox/rejected/chat-2.txt.error.txt",
                reason=WAIT_CHAT + " \u2014 chat.txt was rejected at 00:33 UTC, "
                "see inbox/rejected/chat-2.txt.error.txt",
            ),
            waiting_for={"chat": [1]},
            rejected_datasets={"chat": RejectedDrop("chat.txt", "chat-2.txt", T)},
            intake=ONE_REJECTED,
        ),
    ),
    "data here that cannot feed the job: the rejected fix is named too": Row(
        world(
            job(feeds="rl", rlhf_type="dpo", inputs={"chat": None}, blocked=SFT_NOT_RL, reason=SFT_NOT_RL),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
        ),
        rejected(),
        world(
            job(
                feeds="rl",
                rlhf_type="dpo",
                inputs={"chat": None},
                blocked=SFT_NOT_RL + NOTE,
                reason=SFT_NOT_RL + NOTE,
            ),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED,
            intake=ONE_REJECTED,
        ),
    ),
    "a job reading the name's accepted data keeps reading it": Row(
        world(
            job(inputs={"chat": "s1"}),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
        ),
        rejected(),
        world(
            job(inputs={"chat": "s1"}),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED,
            intake=ONE_REJECTED,
        ),
    ),
    "a running job is left as it is": Row(
        world(job(state="running", inputs={"chat": "s1"}), waiting_for={"chat": [1]}),
        rejected(),
        world(
            job(state="running", inputs={"chat": "s1"}),
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED,
            intake=ONE_REJECTED,
        ),
    ),
    "a rejected job file names no dataset": Row(
        world(job(inputs={"chat": None}, blocked=WAIT_CHAT, reason=WAIT_CHAT), waiting_for={"chat": [1]}),
        rejected("chat.yaml", "chat.yaml", kind="job"),
        world(
            job(inputs={"chat": None}, blocked=WAIT_CHAT, reason=WAIT_CHAT),
            waiting_for={"chat": [1]},
            intake=ONE_REJECTED,
        ),
    ),
    "an accepted drop of the name forgets the rejection, and the job reads it": Row(
        world(
            job(inputs={"chat": None}, blocked=WAIT_REJECTED_EARLIER, reason=WAIT_REJECTED_EARLIER),
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED_EARLIER,
        ),
        accepted(),
        world(
            job(inputs={"chat": "s1"}),
            datasets=[dataset(accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
            intake=IntakeCounts(datasets=1),
        ),
    ),
    "an accepted drop of another name keeps the rejection": Row(
        world(
            job(inputs={"chat": None}, blocked=WAIT_REJECTED_EARLIER, reason=WAIT_REJECTED_EARLIER),
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED_EARLIER,
        ),
        accepted(name="talk"),
        world(
            job(inputs={"chat": None}, blocked=WAIT_REJECTED_EARLIER, reason=WAIT_REJECTED_EARLIER),
            datasets=[dataset(name="talk", accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"talk": "s1"},
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED_EARLIER,
            intake=IntakeCounts(datasets=1),
        ),
    ),
    "the name's own data dropped again forgets the rejection": Row(
        world(
            job(
                feeds="rl",
                rlhf_type="dpo",
                inputs={"chat": None},
                blocked=SFT_NOT_RL + NOTE_EARLIER,
                reason=SFT_NOT_RL + NOTE_EARLIER,
            ),
            datasets=[dataset()],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED_EARLIER,
        ),
        DuplicateDropped(drop="d2", filename="chat.jsonl", kind="dataset", sha256="s1", dataset="chat"),
        world(
            job(feeds="rl", rlhf_type="dpo", inputs={"chat": None}, blocked=SFT_NOT_RL, reason=SFT_NOT_RL),
            datasets=[dataset(drops=2)],
            dataset_names={"chat": "s1"},
            waiting_for={"chat": [1]},
            intake=IntakeCounts(duplicates=1),
        ),
    ),
    "known data dropped under the rejected name resolves the job": Row(
        world(
            job(inputs={"chat": None}, blocked=WAIT_REJECTED_EARLIER, reason=WAIT_REJECTED_EARLIER),
            datasets=[dataset(name="talk")],
            dataset_names={"talk": "s1"},
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED_EARLIER,
        ),
        DuplicateDropped(
            drop="d2", filename="chat.jsonl", kind="dataset", sha256="s1", dataset="talk", alias="chat"
        ),
        world(
            job(inputs={"chat": "s1"}),
            datasets=[dataset(name="talk", names=["talk", "chat"], drops=2)],
            dataset_names={"talk": "s1", "chat": "s1"},
            waiting_for={"chat": [1]},
            intake=IntakeCounts(duplicates=1),
        ),
    ),
    "a job submitted after the rejection says so from the start": Row(
        world(rejected_datasets=CHAT_REJECTED_EARLIER),
        submitted(),
        world(
            job(
                inputs={"chat": None},
                blocked=WAIT_REJECTED_EARLIER,
                reason=WAIT_REJECTED_EARLIER,
                submitted_ts=T,
                submitted_seq=SEQ,
            ),
            job_names={"train": 1},
            waiting_for={"chat": [1]},
            rejected_datasets=CHAT_REJECTED_EARLIER,
            next_job_id=2,
            intake=IntakeCounts(jobs=1),
        ),
    ),
}
"""A dataset name's newest rejected drop, until a drop of that name is accepted: a job waiting for the
name says which file was rejected, when, and where the reason is."""


def both() -> dict[str, Validation]:
    return {"d1": reading(), "d2": reading("d2")}


def other() -> dict[str, Validation]:
    return {"d2": reading("d2")}


def seen(**more: int) -> IntakeCounts:
    """The files counted before: three of each kind, and one more of the kinds in `more`."""
    counts = {"datasets": 3, "jobs": 3, "controls": 3, "duplicates": 3, "rejected": 3}
    return IntakeCounts(**(counts | {kind: 3 + n for kind, n in more.items()}))


ENDS_ITS_DROP = {
    "accepted": Row(
        world(validating=both(), intake=seen()),
        accepted(drop="d1"),
        world(
            validating=other(),
            datasets=[dataset(accepted_ts=T, accepted_seq=SEQ)],
            dataset_names={"chat": "s1"},
            intake=seen(datasets=1),
        ),
    ),
    "duplicate": Row(
        world(validating=both(), intake=seen()),
        DuplicateDropped(drop="d1", filename="chat.jsonl", kind="dataset", sha256="s9"),
        world(validating=other(), intake=seen(duplicates=1)),
    ),
    "rejected": Row(
        world(validating=both(), intake=seen()),
        FileRejected(
            drop="d1", filename="chat.jsonl", kind="dataset", summary="s", problems="p", kept_as="k"
        ),
        world(
            validating=other(),
            rejected_datasets={"chat": RejectedDrop("chat.jsonl", "k", T)},
            intake=seen(rejected=1),
        ),
    ),
    "submitted": Row(
        world(validating=both(), intake=seen()),
        submitted(datasets=[], drop="d1"),
        world(
            job(datasets=[], submitted_ts=T, submitted_seq=SEQ),
            validating=other(),
            job_names={"train": 1},
            next_job_id=2,
            intake=seen(jobs=1),
        ),
    ),
    "cancel": Row(
        world(validating=both(), intake=seen()),
        CancelRequested(drop="d1", job_id=9, source="x"),
        world(validating=other(), intake=seen(controls=1)),
    ),
    "retry": Row(
        world(validating=both(), intake=seen()),
        RetryRequested(drop="d1", job_id=9, source="x"),
        world(validating=other(), intake=seen(controls=1)),
    ),
}
"""A drop's last event ends its validation, whatever the file turned out to be, and adds one to the
count of its kind."""

TABLES = [
    DAEMON,
    VALIDATING,
    ACCEPTED,
    DUPLICATES,
    SUBMITTED,
    CANCELS,
    RETRIES,
    REJECTED,
    REJECTED_DATASET_NAMES,
    ENDS_ITS_DROP,
]


@pytest.mark.parametrize("row", rows(DAEMON))
def test_daemon(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(VALIDATING))
def test_dataset_validating(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(ACCEPTED))
def test_dataset_accepted(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(DUPLICATES))
def test_duplicate_dropped(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(SUBMITTED))
def test_job_submitted(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(CANCELS))
def test_cancel_requested(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(RETRIES))
def test_retry_requested(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(REJECTED))
def test_file_rejected(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(REJECTED_DATASET_NAMES))
def test_a_rejected_dataset_drop_is_named_to_the_jobs_waiting_for_it(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("row", rows(ENDS_ITS_DROP))
def test_a_drops_last_event_ends_its_validation_and_is_counted(row: Row) -> None:
    check(row)
