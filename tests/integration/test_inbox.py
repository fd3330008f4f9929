"""Dropping files into a running daemon's inbox (reliability.md F1-F9): real files, a real process."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from daemon.intake.faults import STEPS
from tests.daemon_proc import Daemon

SFT_ROW = '{"messages": [{"role": "user", "content": "q%d"}, {"role": "assistant", "content": "a%d"}]}\n'


def sft(n: int = 1, start: int = 0) -> str:
    return "".join(SFT_ROW % (i, i) for i in range(start, start + n))


def all_events(d: Daemon) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        code, page = d.get(f"/v1/events?after={after}&limit=1000")
        assert code == 200
        out += page["events"]
        if not page["events"]:
            return out
        after = page["next_after"]


def intake_total(d: Daemon) -> int:
    c = d.get("/v1/status")[1]["intake"]
    return int(c["datasets"] + c["jobs"] + c["controls"] + c["duplicates"] + c["rejected"])


def wait_recorded(d: Daemon, n: int, timeout: float = 60) -> None:
    d.wait_for(f"{n} dropped files recorded", lambda: intake_total(d) >= n, timeout)


def terminal(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(type, filename) of every intake outcome."""
    return Counter(
        (e["type"], e["data"]["filename"]) for e in events if "filename" in e["data"] and "drop" in e["data"]
    )


def inbox_root(d: Daemon) -> list[str]:
    return sorted(n for n in os.listdir(d.inbox) if not n.startswith(".") and n != "rejected")


# -- F1 ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stopped", [False, True], ids=["running", "sigstopped"])
def test_10000_files_renamed_in_at_once_are_each_recorded_once(
    daemon_factory: type[Daemon], tmp_path: Path, stopped: bool
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    stage = tmp_path / "d" / "stage"
    stage.mkdir()
    n = 10_000
    for i in range(n):
        (stage / f"f{i}.jsonl").write_text(sft(1, i))
    assert d.proc is not None
    if stopped:
        os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        for i in range(n):
            os.rename(stage / f"f{i}.jsonl", d.inbox / f"f{i}.jsonl")
    finally:
        if stopped:
            os.kill(d.proc.pid, signal.SIGCONT)
    wait_recorded(d, n, timeout=240)
    outcomes = terminal(all_events(d))
    assert sum(outcomes.values()) == n
    assert set(outcomes) == {("DatasetAccepted", f"f{i}.jsonl") for i in range(n)}
    assert inbox_root(d) == [] and os.listdir(d.inbox / ".processing") == []
    assert len(os.listdir(d.state / "blobs" / "converted")) == n


# -- F2 ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_file_written_in_place_is_not_taken_while_its_writer_has_it_open(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    body = sft(200).encode()
    with open(d.inbox / "slow.jsonl", "wb") as f:
        f.write(body[: len(body) // 2 + 7])  # ends in the middle of a row
        f.flush()
        time.sleep(10)
        assert inbox_root(d) == ["slow.jsonl"] and intake_total(d) == 0
        f.write(body[len(body) // 2 + 7 :])
    wait_recorded(d, 1)
    (ds,) = d.get("/v1/datasets")[1]["datasets"]
    assert (ds["name"], ds["rows"], ds["sha256"]) == ("slow", 200, hashlib.sha256(body).hexdigest())


# -- F3 ---------------------------------------------------------------------------------------------


def _crash_at_every_step(daemon_factory: type[Daemon], root: Path, rounds: int) -> None:
    good: list[str] = []
    bad: list[str] = []
    for i in range(rounds):
        step = STEPS[i % len(STEPS)]
        d = daemon_factory(root, env={"LLMTRAIND_TEST_FAULT": step}).start()
        d.drop(f"bad{i}.jsonl", "not json\n")
        d.drop(f"good{i}.jsonl", sft(2, 10 * i))
        bad.append(f"bad{i}.jsonl")
        good.append(f"good{i}.jsonl")
        assert d.proc is not None
        assert d.proc.wait(timeout=30) == -signal.SIGKILL, f"no crash at {step}:\n{d.log()}"
    d = daemon_factory(root).start()
    wait_recorded(d, 2 * rounds)
    outcomes = terminal(all_events(d))
    assert outcomes == Counter(
        {("DatasetAccepted", g): 1 for g in good} | {("FileRejected", b): 1 for b in bad}
    )
    assert inbox_root(d) == [] and os.listdir(d.inbox / ".processing") == []
    assert os.listdir(d.state / "blobs" / "tmp") == []
    assert sorted(os.listdir(d.inbox / "rejected")) == sorted(bad + [f"{b}.error.txt" for b in bad])
    for ds in d.get("/v1/datasets")[1]["datasets"]:
        original = d.state / "blobs" / "sha256" / ds["sha256"]
        assert hashlib.sha256(original.read_bytes()).hexdigest() == ds["sha256"]
        assert (d.state / "blobs" / "converted" / f"{ds['sha256']}.jsonl").stat().st_size > 0


@pytest.mark.timeout(600)
def test_kill_9_at_each_intake_step_100_times_records_every_file_exactly_once(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    _crash_at_every_step(daemon_factory, tmp_path / "d", 100)


# -- F4 ---------------------------------------------------------------------------------------------


def test_same_bytes_under_five_names_and_one_name_with_other_bytes(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    for i in range(5):
        d.drop(f"copy{i}.jsonl", sft(3))
    wait_recorded(d, 5)
    d.drop("copy0.jsonl", sft(4))
    wait_recorded(d, 6)
    kinds = Counter(t for t, _ in terminal(all_events(d)).elements())
    assert kinds == Counter({"DatasetAccepted": 2, "DuplicateDropped": 4})
    listed = {ds["name"]: ds for ds in d.get("/v1/datasets")[1]["datasets"]}  # each dataset once
    assert sorted(listed) == ["copy0", "copy1"] and listed["copy0"]["rows"] == 4
    assert listed["copy1"]["rows"] == 3 and listed["copy1"]["drops"] == 5
    assert all(d.get(f"/v1/datasets/copy{i}")[1]["rows"] == 3 for i in range(1, 5))


# -- F5 ---------------------------------------------------------------------------------------------


def test_links_fifos_folders_and_devices_are_rejected_and_never_block(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    outside = tmp_path / "outside.jsonl"
    outside.write_text(sft(1))
    os.symlink("/etc/passwd", d.inbox / "passwd.jsonl")
    os.mkfifo(d.inbox / "fifo.jsonl")
    (d.inbox / "folder.jsonl").mkdir()
    os.link(outside, d.inbox / "hard.jsonl")
    expected = {"passwd.jsonl": "symbolic link", "fifo.jsonl": "FIFO", "folder.jsonl": "folder"}
    expected["hard.jsonl"] = "hard link"
    if os.geteuid() == 0:
        os.mknod(d.inbox / "dev.jsonl", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        expected["dev.jsonl"] = "device"
    wait_recorded(d, len(expected))
    rejected = {
        e["data"]["filename"]: e["data"]["summary"] for e in all_events(d) if e["type"] == "FileRejected"
    }
    assert set(rejected) == set(expected)
    for name, words in expected.items():
        assert words in rejected[name]
        assert words in (d.inbox / "rejected" / f"{name}.error.txt").read_text()
        assert os.path.lexists(d.inbox / "rejected" / name)
    assert os.readlink(d.inbox / "rejected" / "passwd.jsonl") == "/etc/passwd"
    assert outside.read_text() == sft(1)
    assert d.get("/healthz")[0] == 200


# -- F6 ---------------------------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_rejected_and_the_watcher_lives_on(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    # Rescans are rare here, so both files are only picked up quickly if the watch sees them.
    # The watch is set up before the daemon says it serves: no wait is needed before the drop.
    d = daemon_factory(tmp_path / "d", extra_config="[intake]\nrescan_s = 120\n").start()
    bad = os.fsencode(d.inbox) + b"/\xff\xfe.yaml"
    with open(bad, "wb") as f:
        f.write(b"cancel: x\n")
    wait_recorded(d, 1, timeout=20)
    (rej,) = [e["data"] for e in all_events(d) if e["type"] == "FileRejected"]
    assert "not valid UTF-8" in rej["summary"] and rej["filename"] == "\\xff\\xfe.yaml"
    kept = d.inbox / "rejected" / "\\xff\\xfe.yaml"
    assert kept.read_bytes() == b"cancel: x\n"
    assert "not valid UTF-8" in kept.with_name(kept.name + ".error.txt").read_text()
    d.drop("after.jsonl", sft(1))
    t0 = time.monotonic()
    wait_recorded(d, 2, timeout=20)
    assert time.monotonic() - t0 < 10
    assert "cannot watch" not in d.log() and "Traceback" not in d.log()


def test_a_rejected_255_byte_name_does_not_hold_up_the_file_behind_it(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    long = "x" * 249 + ".jsonl"
    assert len(long.encode()) == 255
    (tmp_path / "long.part").write_text("not json\n")  # d.drop's own `.NAME.part` would be too long
    os.rename(tmp_path / "long.part", d.inbox / long)
    d.drop("good.jsonl", sft(2))
    wait_recorded(d, 2, timeout=20)
    outcomes = {f: t for t, f in terminal(all_events(d))}
    assert outcomes == {long: "FileRejected", "good.jsonl": "DatasetAccepted"}
    (rej,) = [e["data"] for e in all_events(d) if e["type"] == "FileRejected"]
    kept = rej["kept_as"]
    assert len(kept.encode()) <= 200 and kept.endswith(".jsonl") and kept.startswith("x" * 100)
    d.wait_for("the claims filed away", lambda: os.listdir(d.inbox / ".processing") == [], 10)
    assert sorted(os.listdir(d.inbox / "rejected")) == [kept, f"{kept}.error.txt"]
    assert long in (d.inbox / "rejected" / f"{kept}.error.txt").read_text()
    assert (d.inbox / "rejected" / kept).read_text() == "not json\n"
    assert inbox_root(d) == [] and d.get("/healthz")[0] == 200


def test_the_inbox_folders_deleted_under_a_running_daemon_are_made_again(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    import shutil

    d = daemon_factory(tmp_path / "d").start()
    d.drop("first.jsonl", "not json\n")
    wait_recorded(d, 1)
    d.wait_for("first filed away", lambda: (d.inbox / "rejected" / "first.jsonl").exists())
    shutil.rmtree(d.inbox / "rejected")
    d.drop("second.jsonl", "not json either\n")
    d.drop("good.jsonl", sft(1))
    wait_recorded(d, 3, timeout=20)
    d.wait_for("second filed away", lambda: (d.inbox / "rejected" / "second.jsonl").exists(), 20)
    assert "not json either" in (d.inbox / "rejected" / "second.jsonl").read_text()
    assert (d.inbox / "rejected" / "second.jsonl.error.txt").exists()
    os.rmdir(d.inbox / ".processing")
    d.drop("third.jsonl", "still not json\n")
    wait_recorded(d, 4, timeout=20)
    d.wait_for("third filed away", lambda: (d.inbox / "rejected" / "third.jsonl").exists(), 20)
    assert os.listdir(d.inbox / ".processing") == [] and inbox_root(d) == []
    assert d.get("/healthz")[0] == 200


def test_two_jobs_waiting_for_each_other_are_refused_at_the_second(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    # gpus: 1 on a box without GPUs keeps the first job queued (and out of a real run)
    job = "task_type: sft\nmodel_name: /models/tiny\ndataset: data\ngpus: 1\nafter: {}\n"
    d.drop("a.yaml", job.format("b"))
    wait_recorded(d, 1)  # a is the first: dropped together, either could be recorded first
    d.drop("b.yaml", job.format("a"))
    wait_recorded(d, 2)
    outcomes = {f: t for t, f in terminal(all_events(d))}
    assert outcomes == {"a.yaml": "JobSubmitted", "b.yaml": "FileRejected"}
    (rej,) = [e["data"] for e in all_events(d) if e["type"] == "FileRejected"]
    assert rej["summary"] == "after: b -> a -> b is a cycle"
    d.wait_for("b filed away", lambda: (d.inbox / "rejected" / "b.yaml.error.txt").exists())
    assert "after: b -> a -> b is a cycle" in (d.inbox / "rejected" / "b.yaml.error.txt").read_text()


# -- F7 ---------------------------------------------------------------------------------------------


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(120)
def test_hostile_and_odd_files_follow_the_written_rules_in_bounded_memory(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d", extra_config="[limits]\nmax_dataset_bytes = 104857600\n").start()
    assert d.proc is not None
    d.drop("warm.jsonl", sft(1))
    wait_recorded(d, 1)
    baseline = _peak_rss_kib(d.proc.pid)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    d.drop("bomb.yaml", bomb)
    with open(d.inbox / ".huge.part", "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GiB that costs nothing to write
    os.rename(d.inbox / ".huge.part", d.inbox / "huge.jsonl")
    d.drop("nul.jsonl", '{"text": "a\x00b"}\n')
    d.drop("latin1.txt", "caf\u00e9 au lait\n".encode("latin-1"))
    d.drop("bom.jsonl", b"\xef\xbb\xbf" + sft(2).encode())
    d.drop("crlf.jsonl", sft(2).replace("\n", "\r\n"))
    d.drop("oneline.txt", b"x" * (50 * 1024 * 1024))
    wait_recorded(d, 8, timeout=90)
    outcomes = {f: t for t, f in terminal(all_events(d))}
    assert outcomes == {
        "warm.jsonl": "DatasetAccepted",
        "bomb.yaml": "FileRejected",
        "huge.jsonl": "FileRejected",
        "nul.jsonl": "FileRejected",
        "latin1.txt": "FileRejected",
        "bom.jsonl": "DatasetAccepted",
        "crlf.jsonl": "DatasetAccepted",
        "oneline.txt": "FileRejected",
    }
    reasons = {
        e["data"]["filename"]: e["data"]["problems"] for e in all_events(d) if e["type"] == "FileRejected"
    }
    assert "alias" in reasons["bomb.yaml"].lower()
    assert "over the limit" in reasons["huge.jsonl"]
    assert "UTF-8" in reasons["latin1.txt"] and "NUL" in reasons["nul.jsonl"]
    assert "line 1" in reasons["oneline.txt"]
    grew_mib = (_peak_rss_kib(d.proc.pid) - baseline) / 1024
    assert grew_mib < 64, f"daemon peak RSS grew {grew_mib:.0f} MiB reading hostile files"


# -- F8 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "dataset: ../../etc/shadow",
        "dataset: /etc/shadow",
        "dataset: datasets/../../etc/shadow.jsonl",
        "dataset: some/dir/file.jsonl",
        "model_name: /models/../etc",
    ],
)
def test_paths_out_of_the_inbox_in_a_job_are_rejected(
    daemon_factory: type[Daemon], tmp_path: Path, line: str
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    defaults = {"dataset": "dataset: sft_demo", "model_name": "model_name: /models/tiny"}
    key = line.split(":")[0]
    body = "\n".join(["task_type: sft", line, *(v for k, v in defaults.items() if k != key)]) + "\n"
    d.drop("escape.yaml", body)
    wait_recorded(d, 1)
    (rej,) = [e["data"] for e in all_events(d) if e["type"] == "FileRejected"]
    assert rej["filename"] == "escape.yaml"
    assert (d.inbox / "rejected" / "escape.yaml.error.txt").exists()


# -- F9 ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.path.isdir("/dev/shm"), reason="needs a tmpfs at /dev/shm for a second file system"
)
def test_files_there_at_start_and_an_inbox_on_another_file_system(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    shm = Path("/dev/shm") / f"llmtraind-test-{os.getpid()}-{time.monotonic_ns()}"
    shm.mkdir()
    try:
        d = daemon_factory(tmp_path / "d", env={"LLMTRAIND_PATHS_INBOX": str(shm)})
        assert os.stat(shm).st_dev != os.stat(tmp_path).st_dev
        d.drop("early.jsonl", sft(2))
        # gpus: 1 on a box without GPUs keeps the job queued (and out of a real run) with a reason
        d.drop("early.yaml", "task_type: sft\nmodel_name: /models/tiny\ndataset: early\ngpus: 1\n")
        d.start()
        wait_recorded(d, 2)
        outcomes = {f: t for t, f in terminal(all_events(d))}
        assert outcomes == {"early.jsonl": "DatasetAccepted", "early.yaml": "JobSubmitted"}
        (ds,) = d.get("/v1/datasets")[1]["datasets"]
        blob = d.state / "blobs" / "sha256" / ds["sha256"]
        assert blob.read_text() == sft(2) and os.stat(blob).st_nlink == 1
        assert inbox_root(d) == []
        (job,) = d.get("/v1/jobs")[1]["jobs"]
        assert (job["name"], job["state"]) == ("early", "queued")
        d.wait_for("the reason it waits", lambda: "this box has none" in d.get("/v1/jobs/early")[1]["reason"])
    finally:
        import shutil

        shutil.rmtree(shm, ignore_errors=True)


# -- the CLI side: submit, cancel, retry; and progress of a large dataset -----------------------------


def test_submit_then_cancel_and_retry_through_the_cli(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = daemon_factory(tmp_path / "d").start()
    (tmp_path / "mine.jsonl").write_text(sft(3))
    (tmp_path / "train.yaml").write_text(
        "name: train\ntask_type: lora\nbase_model: /models/tiny\ndataset: mine\ngpus: 1\n"
    )
    out = d.cli("submit", str(tmp_path / "mine.jsonl"), str(tmp_path / "train.yaml"))
    assert out.returncode == 0, out.stderr
    wait_recorded(d, 2)
    code, job = d.get("/v1/jobs/train")
    assert code == 200 and job["state"] == "queued" and job["tuner"] == "lora"
    assert d.get("/v1/jobs/1")[1]["name"] == "train"
    code, project = d.get("/v1/projects/default")
    assert code == 200 and [j["name"] for j in project["jobs"]] == ["train"]
    assert d.get("/v1/projects/nope")[0] == 404
    assert d.cli("cancel", "train").returncode == 0
    d.wait_for("cancelled", lambda: d.get("/v1/jobs/train")[1]["state"] == "cancelled")
    assert d.cli("retry", "1").returncode == 0
    d.wait_for("queued again", lambda: d.get("/v1/jobs/train")[1]["state"] == "queued")
    code, evs = d.get("/v1/jobs/train/events")
    assert [e["type"] for e in evs["events"]] == ["JobSubmitted", "CancelRequested", "RetryRequested"]
    again = d.cli("submit", str(tmp_path / "missing.jsonl"))
    assert again.returncode == 1 and "missing.jsonl" in again.stderr


@pytest.mark.timeout(120)
def test_a_large_dataset_shows_validation_progress_while_it_is_read(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    row = '{"text": "' + "lorem ipsum " * 80 + '"}\n'
    big = tmp_path / "big.jsonl"
    with open(big, "w") as f:
        for _ in range(150_000):
            f.write(row)
    os.rename(big, d.inbox / "big.jsonl")
    seen = d.wait_for(
        "validation progress",
        lambda: (
            (v := d.get("/v1/datasets/big")).__getitem__(0) == 200
            and v[1]["state"] == "validating"
            and v[1]["validation"]["bytes_done"] > 0
            and v[1]
        ),
        timeout=60,
    )
    assert 0 < seen["validation"]["percent"] < 100
    d.wait_for("accepted", lambda: d.get("/v1/datasets/big")[1]["state"] == "ready", timeout=90)
    assert d.get("/v1/datasets/big")[1]["rows"] == 150_000


def _block(folder: Path) -> Path:
    """Put a plain file where a state folder was, so that writing into it fails (as a full or
    broken disk would) even for root; returns where the folder went."""
    away = folder.with_name(folder.name + ".away")
    os.rename(folder, away)
    folder.write_text("")
    return away


def _unblock(folder: Path, away: Path) -> None:
    folder.unlink()
    os.rename(away, folder)


@pytest.mark.timeout(120)
def test_intake_resumes_by_itself_once_the_state_folder_can_be_written_again(
    daemon_factory: type[Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(tmp_path / "d").start()
    processing = d.inbox / ".processing"
    # The swift-ready copy cannot be written: the file stays claimed and nothing is recorded.
    scratch = d.state / "blobs" / "tmp"
    away = _block(scratch)
    d.drop("first.jsonl", sft(3))
    d.wait_for("a failed read, logged", lambda: "first.jsonl failed; it stays claimed" in d.log())
    assert "Traceback" not in d.log(), "a file system refusal is one line, not a traceback"
    assert intake_total(d) == 0 and inbox_root(d) == [] and len(os.listdir(processing)) == 1
    code, health = d.get("/healthz")
    assert code == 503 and health["reason"].startswith("intake: cannot read first.jsonl: [Errno 20]")
    _unblock(scratch, away)
    wait_recorded(d, 1)
    d.wait_for("healthy again", lambda: d.get("/healthz")[0] == 200)
    # The original cannot be kept once the event is recorded: the claim stays until it can be.
    originals = d.state / "blobs" / "sha256"
    away = _block(originals)
    d.drop("second.jsonl", sft(4, 100))
    wait_recorded(d, 2)
    d.wait_for("a failed filing, logged", lambda: "cannot file away 1 dropped file(s)" in d.log())
    assert len(os.listdir(processing)) == 1
    assert d.get("/healthz")[1]["reason"].startswith("intake: cannot file away dropped files: [Errno 20]")
    _unblock(originals, away)
    d.wait_for("the claim filed away", lambda: os.listdir(processing) == [], timeout=30)
    # Intake is still alive for the next drop.
    d.drop("third.jsonl", sft(5, 200))
    wait_recorded(d, 3)
    names = sorted(ds["name"] for ds in d.get("/v1/datasets")[1]["datasets"])
    assert names == ["first", "second", "third"] and len(os.listdir(originals)) == 3
    assert os.listdir(processing) == [] and d.get("/healthz")[0] == 200
