"""The last evaluation as `show` and /metrics report it, and the packages predict_with_generate needs
(swift's ROUGE and BLEU import jieba, nltk and rouge; none is installed here, so such a job is refused
at intake with the install command rather than failing at its first evaluation)."""

from __future__ import annotations

from daemon.cli.client import eval_text
from daemon.core.events import JobProgress, Recorded
from daemon.core.fold import apply
from daemon.core.jobs import JobSpec
from daemon.core.runnable import needed_packages
from daemon.core.state import State
from daemon.http.metrics import Scrape, render
from daemon.http.views import job_view
from tests.fold_world import job, run

EVAL = JobProgress(
    job_id=1,
    attempt=1,
    kind="eval",
    step=10,
    max_steps=20,
    percent=50.0,
    loss=1.25,
    raw={"eval_loss": 1.25, "eval_rouge-l": 41.5, "eval_bleu-4": 12.0, "eval_runtime": 3.0, "epoch": 1.0},
)


def test_show_lists_every_eval_metric_but_the_timings() -> None:
    assert eval_text(EVAL.model_dump()) == "step 10: loss 1.25, rouge-l 41.5, bleu-4 12"
    assert eval_text(None) is None


def test_metrics_expose_the_last_evaluation_of_each_job() -> None:
    state = State(jobs={1: job(state="succeeded", runs=[run(last_eval=EVAL)])})
    text = render(Scrape(state=state, now=0.0, version="v", uptime_s=1.0, healthy=True, last_seq=1)).decode()
    labels = 'job="1",metric="rouge-l",name="train",project="demo"'
    assert f"llmtraind_job_eval{{{labels}}} 41.5" in text
    assert 'metric="runtime"' not in text
    assert 'llmtraind_job_eval_step{job="1",name="train",project="demo"} 10.0' in text


def test_predict_with_generate_needs_swifts_text_metric_packages() -> None:
    spec = JobSpec.model_validate(
        {"name": "g", "task": "sft", "dialect": "management", "swift_args": {"predict_with_generate": True}}
    )
    assert [(p.module, p.key) for p in needed_packages(spec)] == [
        ("jieba", "swift.predict_with_generate"),
        ("nltk", "swift.predict_with_generate"),
        ("rouge", "swift.predict_with_generate"),
    ]


def test_each_jobs_best_evaluation_is_kept_over_its_attempts() -> None:
    """Lowest for a loss, highest for the others; timings never count. A later attempt's worse
    value keeps the earlier best (the list on the status page shows this per finished job)."""
    state = State(
        jobs={1: job(state="running", attempts=2, runs=[run(attempt=2)], best_eval={"eval_loss": (1.3, 5)})}
    )

    def evaluated(step: int, loss: float, rouge: float, seq: int) -> None:
        raw = {"eval_loss": loss, "eval_rouge-l": rouge, "eval_runtime": float(step)}
        event = EVAL.model_copy(update={"attempt": 2, "step": step, "loss": loss, "raw": raw})
        apply(state, Recorded(seq=seq, stream="job:1", version=seq, ts=0.0, event=event))

    evaluated(10, 1.5, 30.0, 1)
    evaluated(20, 1.2, 28.0, 2)
    evaluated(30, 1.4, 35.0, 3)
    assert state.jobs[1].best_eval == {"eval_loss": (1.2, 20), "eval_rouge-l": (35.0, 30)}
    assert job_view(state, state.jobs[1])["best_eval"] == {
        "eval_loss": {"value": 1.2, "step": 20},
        "eval_rouge-l": {"value": 35.0, "step": 30},
    }
