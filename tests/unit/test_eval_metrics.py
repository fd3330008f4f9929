"""The last evaluation as `show` and /metrics report it, and the packages predict_with_generate needs
(swift's ROUGE and BLEU import jieba, nltk and rouge; none is installed here, so such a job is refused
at intake with the install command rather than failing at its first evaluation)."""

from __future__ import annotations

from daemon.cli.client import eval_text
from daemon.core.events import JobProgress
from daemon.core.jobs import JobSpec
from daemon.core.runnable import needed_packages
from daemon.core.state import State
from daemon.http.metrics import Scrape, render
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
