"""The demo's multimodal part: a fixed image bundle intake accepts, and a LoRA VLM job with its merge."""

from __future__ import annotations

from pathlib import Path

from daemon.cli.demo_files import BUNDLE, VLM, VLM_MERGE, demo_bundle, demo_vlm_jobs, next_run
from daemon.core.config import LimitsConfig
from daemon.core.datasets import can_feed
from daemon.core.jobs import JobSpec
from daemon.core.layout import StateLayout
from daemon.intake.validate import check_file, local_swift_args


def test_the_bundle_is_fixed_and_accepted(tmp_path: Path) -> None:
    data = demo_bundle()
    assert data == demo_bundle(), "a re-run must drop the same bytes"
    path = tmp_path / BUNDLE
    path.write_bytes(data)
    state = StateLayout(tmp_path / "state")
    state.scratch.mkdir(parents=True)
    verdict = check_file(path, LimitsConfig(), local_swift_args(), blobs=state)
    assert verdict.ok, verdict.problems
    assert verdict.dataset is not None and verdict.dataset.stats.media is not None
    media = verdict.dataset.stats.media
    assert (media.images, media.files) == (8, 8)
    assert media.pixels_min == media.pixels_max and media.pixels_max is not None
    assert (media.pixels_max.width, media.pixels_max.height) == (56, 56)
    assert can_feed(verdict.dataset, "sft") is None


def test_the_vlm_jobs_parse_and_chain(tmp_path: Path) -> None:
    tune, merge = demo_vlm_jobs(Path("/srv/state/demo/tiny-qwen2-vl"), 3, 5)
    assert (tune.name, merge.name) == (f"{VLM}-3", f"{VLM_MERGE}-3")
    assert tune.needs == (BUNDLE,) and merge.after == (tune.name,)
    specs = []
    for job in (tune, merge):
        path = tmp_path / job.filename
        path.write_text(job.text)
        verdict = check_file(path, LimitsConfig(), local_swift_args())
        assert verdict.ok, verdict.problems
        assert isinstance(verdict.job, JobSpec)
        specs.append(verdict.job)
    assert specs[0].model_type == "qwen2_vl" and specs[0].train is not None
    assert specs[0].train.max_pixels == 3136 and specs[0].train.freeze_vit is True
    assert specs[0].train.max_steps == 3 and next_run([tune.name, merge.name]) == 4
