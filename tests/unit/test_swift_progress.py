"""swift's per-step records (logging.jsonl and stdout) -> StepMetrics; which of them to keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.runs.swift.progress import (
    MetricsSampler,
    RunSummary,
    StepMetrics,
    parse_duration,
    parse_metrics,
    parse_summary,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "swift"


def metrics(line: str | bytes) -> StepMetrics:
    found = parse_metrics(line)
    assert found is not None, line
    return found


# ---------------------------------------------------------------------------------------------
# Real records (tests/fixtures/swift/capture.py)


def test_logging_jsonl_of_a_real_run() -> None:
    lines = (FIXTURES / "sft_lora.logging.jsonl").read_text().splitlines()
    records = [parse_metrics(line) for line in lines]
    steps = [m for m in records if m is not None and m.kind == "train"]
    assert [m.step for m in steps] == [1, 2, 3, 4, 5]
    assert {m.max_steps for m in steps} == {5}
    assert [m.percent for m in steps] == [20.0, 40.0, 60.0, 80.0, 100.0]
    first = steps[0]
    assert first.loss == pytest.approx(
        6.1, abs=0.2
    )  # ln(448): an untrained model over a 448-token vocabulary
    assert first.epoch == 0.5 and first.learning_rate is not None and first.grad_norm is not None
    assert first.token_acc is not None and first.train_speed is not None and first.eta_s is not None
    assert first.memory_gib is None  # logged only on a GPU
    assert steps[-1].eta_s == 0.0
    summary = records[-2]
    assert summary is not None and summary.kind == "summary" and summary.step == 5
    assert summary.raw["total_flos"] > 0 and summary.loss == summary.raw["train_loss"]
    assert records[-1] is None  # the run summary is not a step record ...
    final = parse_summary(lines[-1])  # ... it names the checkpoint
    assert final == RunSummary(
        last_model_checkpoint="<workdir>/runs/sft_lora/checkpoint-5",
        best_model_checkpoint=None,
        best_metric=None,
        global_step=5,
    )
    assert all(parse_summary(line) is None for line in lines[:-1])


def test_stdout_of_a_real_run_matches_the_jsonl() -> None:
    """The stdout records (strings, 4 significant digits) give the same numbers as the jsonl file."""
    printed = [
        m for line in (FIXTURES / "sft_lora.log").read_text().splitlines() if (m := parse_metrics(line))
    ]
    logged = [
        m
        for line in (FIXTURES / "sft_lora.logging.jsonl").read_text().splitlines()
        if (m := parse_metrics(line))
    ]
    assert [(m.kind, m.step) for m in printed] == [(m.kind, m.step) for m in logged]
    for a, b in zip(printed, logged, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-3)
        assert set(a.raw) <= set(b.raw)  # stdout drops total_flos


# ---------------------------------------------------------------------------------------------
# Record shapes from reference/swift-cpu.md §5 and swift-cli.md §4


GLUED = (
    "\rTrain:  20%|██        | 1/5 [00:03<00:12,  3.00s/it]\r                    \r"
    "{'loss': '6.038', 'grad_norm': '1.351', 'learning_rate': '9.045e-05', 'token_acc': '0.02182', "
    "'epoch': '0.5', 'global_step/max_steps': '1/5', 'elapsed_time': '3s', 'remaining_time': '12s', "
    "'train_speed(s/it)': '3.004'}"
)


def test_record_after_a_tqdm_redraw_on_the_same_line() -> None:
    m = metrics(GLUED)
    assert (m.step, m.max_steps, m.loss, m.eta_s, m.elapsed_s) == (1, 5, 6.038, 12.0, 3.0)
    assert metrics(GLUED.encode()) == m


def test_dpo_record_keeps_every_number() -> None:
    m = metrics(
        "{'loss': '0.6931', 'grad_norm': '1.44', 'learning_rate': '9.755e-05', 'rewards/chosen': '0', "
        "'rewards/rejected': '0', 'rewards/accuracies': '0', 'rewards/margins': '0', 'logps/chosen': '-103.8', "
        "'logps/rejected': '-180.7', 'logits/chosen': '0.00545', 'logits/rejected': '0.008113', 'epoch': '0.5', "
        "'global_step/max_steps': '1/10', 'elapsed_time': '0s', 'remaining_time': '4s', 'train_speed(s/it)': '0.4951'}"
    )
    assert m.kind == "train" and m.loss == 0.6931
    assert m.raw["logps/chosen"] == -103.8 and m.raw["rewards/margins"] == 0.0
    assert "elapsed_time" not in m.raw and "global_step/max_steps" not in m.raw


def test_eval_record() -> None:
    m = metrics(
        '{"eval_loss": 6.02818823, "eval_runtime": 0.1263, "eval_samples_per_second": 63.341, '
        '"eval_token_acc": 0.02142857, "epoch": 1.0, "global_step/max_steps": "2/6", "elapsed_time": "1s", '
        '"remaining_time": "3s", "train_speed(s/it)": 0.6487}'
    )
    assert (m.kind, m.step, m.loss, m.token_acc) == ("eval", 2, 6.02818823, 0.02142857)
    assert m.percent == pytest.approx(100 / 3)


def test_gpu_record_with_memory_and_long_times() -> None:
    m = metrics(
        "{'loss': '1.461', 'grad_norm': '1.705', 'learning_rate': '1e-05', 'token_acc': '0.6399', "
        "'epoch': '0.016', 'global_step/max_steps': '1/189', 'elapsed_time': '2m 41s', "
        "'remaining_time': '8h 25m 20s', 'memory(GiB)': '67.95', 'train_speed(s/it)': '161.3'}"
    )
    assert (m.memory_gib, m.elapsed_s, m.eta_s, m.train_speed) == (67.95, 161.0, 30320.0, 161.3)


def test_swift_3x_record() -> None:
    """3.x printed raw floats, a percentage string and it/s; progress still comes from the steps."""
    m = metrics(
        "{'loss': 1.47077751, 'grad_norm': 10.5625, 'learning_rate': 2e-06, 'token_acc': 0.65511727, "
        "'epoch': 0.01, 'global_step/max_steps': '1/94', 'percentage': '1.06%', 'elapsed_time': '2s', "
        "'remaining_time': '4m 28s', 'memory(GiB)': 4.87, 'train_speed(iter/s)': 0.345807}"
    )
    assert (m.step, m.max_steps, m.eta_s) == (1, 94, 268.0)
    assert m.train_speed == pytest.approx(1 / 0.345807)
    assert "percentage" not in m.raw


def test_disable_tqdm_record_with_nan_loss() -> None:
    m = metrics(
        "{'loss': nan, 'grad_norm': inf, 'learning_rate': 7.5e-05, 'epoch': 0.5, "
        "'global_step/max_steps': '1/3', 'elapsed_time': '0s', 'remaining_time': '1s', 'train_speed(s/it)': 0.417895}"
    )
    assert (m.loss, m.grad_norm, m.learning_rate) == (None, None, 7.5e-05)


def test_megatron_iteration_key() -> None:
    assert metrics("{'iteration': '10/100', 'lm loss': '2.5'}").percent == 10.0


@pytest.mark.parametrize(
    "line",
    [
        "",
        "[INFO:swift] last_model_checkpoint: /x/checkpoint-5",
        "run sh: `python sft.py`",
        "{'loss': '6.0'}",  # no progress
        "{'global_step/max_steps': '1/x'}",
        "{'global_step/max_steps': 'a/5'}",
        "{not a dict}",
        "[1, 2]",
        '{"global_step/max_steps": "1/5"',  # cut off
        "{'a': " + "[" * 500 + "]" * 500 + "}",
        "{'global_step/max_steps': '1/5', 'x': " + "1" * 70000 + "}",
    ],
)
def test_not_a_record(line: str) -> None:
    assert parse_metrics(line) is None


def test_zero_max_steps_and_overshoot() -> None:
    assert metrics("{'global_step/max_steps': '0/0'}").percent == 0.0
    assert metrics("{'global_step/max_steps': '7/5'}").percent == 100.0


def test_odd_values_are_left_out() -> None:
    m = metrics(
        '{"global_step/max_steps": "1/2", "loss": true, "lr": "fast", "big": 1e999, "huge": '
        + "9" * 400
        + ', "nested": {"a": 1}, "ok": "2.5"}'
    )
    assert m.raw == {"ok": 2.5} and m.loss is None


def test_summary_odd_fields() -> None:
    assert parse_summary('{"last_model_checkpoint": null, "global_step": true}') == RunSummary(
        None, None, None, None
    )
    assert parse_summary("{'loss': 1}") is None
    assert parse_summary("garbage") is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45.0),
        ("3m 12s", 192.0),
        ("8h 25m 20s", 30320.0),
        ("1d 2h 3m 4s", 93784.0),
        ("2h", 7200.0),
        ("0s", 0.0),
        (12, 12.0),
        ("1.5", 1.5),
        ("", None),
        ("soon", None),
        ("-3", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_duration(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


# ---------------------------------------------------------------------------------------------
# Never raises


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_text_is_a_record_or_none(line: str | bytes) -> None:
    found = parse_metrics(line)
    assert found is None or isinstance(found, StepMetrics)
    assert parse_summary(line) is None or isinstance(parse_summary(line), RunSummary)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=30), _JSON, max_size=8),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.sampled_from([json.dumps, repr]),
)
def test_any_record_with_steps_parses(extra: dict[str, object], step: int, total: int, dump: object) -> None:
    record = {**extra, "global_step/max_steps": f"{step}/{total}"}
    assert callable(dump)
    try:
        line = dump(record)
    except ValueError:  # json refuses NaN only with allow_nan=False; keep the test honest anyway
        return
    m = metrics(line)
    assert (m.step, m.max_steps) == (step, total)
    assert 0.0 <= m.percent <= 100.0
    assert all(isinstance(v, float) for v in m.raw.values())


# ---------------------------------------------------------------------------------------------
# MetricsSampler


def step(n: int, total: int, kind: str = "train") -> StepMetrics:
    prefix = "eval_" if kind == "eval" else ""
    return metrics(json.dumps({f"{prefix}loss": 1.0, "global_step/max_steps": f"{n}/{total}"}))


def test_short_runs_keep_every_step() -> None:
    sampler = MetricsSampler()
    assert all(sampler.offer(step(n, 200), now=n * 0.01) for n in range(1, 201))


def test_long_runs_keep_about_one_record_per_percent() -> None:
    sampler = MetricsSampler(min_interval_s=10.0)
    total = 100_000
    kept = [n for n in range(1, total + 1) if sampler.offer(step(n, total), now=n * 0.5)]
    assert kept[0] == 1 and kept[-1] == total
    assert 95 <= len(kept) <= 102
    assert all(b - a >= total // 100 for a, b in zip(kept, kept[1:-1], strict=False))


def test_slow_long_runs_are_limited_by_time_too() -> None:
    sampler = MetricsSampler(min_interval_s=10.0)
    total = 1000
    kept = [n for n in range(1, total + 1) if sampler.offer(step(n, total), now=n * 1.0)]
    assert len(kept) == 101  # every 10 s (= 10 steps = 1 %), plus the first step
    assert kept[:3] == [1, 11, 21]


def test_evaluations_and_summary_are_always_kept() -> None:
    sampler = MetricsSampler()
    assert sampler.offer(step(1, 10_000), now=0.0)
    assert not sampler.offer(step(2, 10_000), now=0.1)
    assert sampler.offer(step(2, 10_000, kind="eval"), now=0.1)
    summary = metrics('{"train_runtime": 1.0, "global_step/max_steps": "3/10000"}')
    assert summary.kind == "summary" and sampler.offer(summary, now=0.2)


def test_a_step_read_twice_is_kept_once() -> None:
    sampler = MetricsSampler()
    assert sampler.offer(step(1, 5), now=0.0)
    assert not sampler.offer(step(1, 5), now=1.0)
    assert sampler.offer(step(2, 5), now=2.0)
    assert not sampler.offer(step(1, 5), now=3.0)
