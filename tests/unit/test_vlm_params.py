"""The VLM keys of a training job become ms-swift's flags, for SFT, LoRA and DPO alike."""

from __future__ import annotations

import pytest

from tests.unit.test_swift_command import assert_known_flags, build, data


@pytest.mark.parametrize("task", ["task_type: sft", "task_type: lora", "task_type: rl\nalgorithm: dpo"])
def test_vlm_keys_become_swift_flags(task: str) -> None:
    text = (
        f"{task}\nmodel: /models/tiny-vlm\nmodel_type: qwen2_vl\ntemplate: qwen2_vl\ndataset: shapes\n"
        "max_pixels: 3136\nfreeze_vit: true\nfreeze_aligner: false\n"
    )
    command = build(text, datasets=data("shapes"))
    argv = command.argv
    assert argv[argv.index("--max_pixels") + 1] == "3136"
    assert argv[argv.index("--freeze_vit") + 1] == "true"
    assert argv[argv.index("--freeze_aligner") + 1] == "false"
    assert argv[argv.index("--model_type") + 1] == "qwen2_vl"
    assert_known_flags(command)


def test_max_pixels_must_be_positive() -> None:
    with pytest.raises(Exception, match="max_pixels"):
        build("task_type: sft\nmodel: /m\ndataset: d\nmax_pixels: 0\n")
