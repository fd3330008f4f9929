"""Multimodal rows: tags against lists, content blocks, and what the converted row points at."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from daemon.core.datasets import DatasetReport, DatasetValidator, SftMessagesLine
from daemon.core.datasets.media import (
    MediaItem,
    MediaKind,
    MediaProblem,
    member_problem,
    parse_data_uri,
    sniff,
)


class Store:
    """A resolver over a fixed set of names, recording what it was asked for."""

    def __init__(self, known: dict[str, tuple[int, int]] | None = None) -> None:
        self.known = known
        self.asked: list[tuple[MediaKind, str]] = []

    def __call__(self, kind: MediaKind, ref: str) -> MediaItem:
        self.asked.append((kind, ref))
        if self.known is not None and ref not in self.known:
            raise MediaProblem("is not in the bundle", "add it, or fix the path")
        w, h = (self.known or {}).get(ref, (10, 10))
        return MediaItem(f"/state/blobs/media/{ref}", ref, w * h, w if kind == "image" else None, h)


def run(rows: list[Any], resolve: Store | None = None) -> tuple[DatasetReport, list[dict[str, Any]]]:
    v = DatasetValidator("d.jsonl", media=resolve if resolve is not None else Store())
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    out = v.feed(data) + v.flush()
    return v.finish(), [json.loads(line) for line in out]


def chat(user: str, answer: str = "ok") -> list[dict[str, Any]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def test_images_point_at_stored_files_and_are_counted() -> None:
    rows = [
        {"messages": chat("<image><image>What differs?"), "images": ["a.png", "b.png"]},
        {"messages": chat("<image>And here?"), "images": ["a.png"]},
    ]
    store = Store({"a.png": (56, 56), "b.png": (100, 20)})
    report, out = run(rows, store)
    assert report.ok, report.errors
    assert report.format == "sft_messages"
    assert out[0]["images"] == ["/state/blobs/media/a.png", "/state/blobs/media/b.png"]
    media = report.stats.media
    assert media is not None
    assert (media.images, media.files, media.bytes) == (3, 2, 56 * 56 + 2000)
    assert media.pixels_min is not None and media.pixels_max is not None
    assert (media.pixels_min.width, media.pixels_max.width) == (100, 56)


def test_text_rows_have_no_media_stats() -> None:
    report, _ = run([{"messages": chat("hi")}])
    assert report.ok and report.stats.media is None


@settings(max_examples=150, deadline=None)
@given(
    tags=st.lists(st.sampled_from(["<image>", "<video>", "<audio>", "text "]), max_size=6),
    lists=st.fixed_dictionaries(
        {},
        optional={
            "images": st.lists(st.just("i.png"), max_size=4),
            "videos": st.lists(st.just("v.mp4"), max_size=3),
            "audios": st.lists(st.just("a.wav"), max_size=3),
        },
    ),
)
def test_a_row_is_accepted_exactly_when_each_kind_has_one_item_per_tag(
    tags: list[str], lists: dict[str, list[str]]
) -> None:
    text = "".join(tags) + "?"
    report, out = run([{"messages": chat(text), **lists}])
    counts_match = all(
        text.count(f"<{kind}>") == len(lists.get(f"{kind}s", [])) for kind in ("image", "video", "audio")
    )
    assert report.ok == counts_match, report.errors
    if not counts_match:
        [error] = report.errors
        assert error.line == 1 and error.field in ("images", "videos", "audios")
        assert "tag(s) but" in error.message and "item(s)" in error.message
    elif lists and any(lists.values()):
        assert {k: len(v) for k, v in out[0].items() if k != "messages"} == {
            k: len(v) for k, v in lists.items() if v
        }


def test_mismatch_names_the_row_and_both_counts() -> None:
    report, _ = run([{"messages": chat("hi")}, {"messages": chat("<image>"), "images": ["a", "b"]}])
    [error] = report.errors
    assert error.line == 2
    assert error.message == "line 2, images: the messages hold 1 <image> tag(s) but images lists 2 item(s)"


def test_tags_without_a_list_are_a_mismatch() -> None:
    report, _ = run([{"messages": chat("<video> what happens?")}])
    assert report.errors[0].field == "videos"


def test_content_blocks_become_tags_and_lists() -> None:
    user = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "cat.png"}},
            {"type": "text", "text": "What is it?"},
            {"type": "image", "image": "dog.png"},
        ],
    }
    row = {"messages": [user, {"role": "assistant", "content": "A cat."}]}
    report, out = run([row])
    assert report.ok, report.errors
    assert out[0]["messages"][0]["content"] == "<image>What is it?<image>"
    assert out[0]["images"] == ["/state/blobs/media/cat.png", "/state/blobs/media/dog.png"]


def test_blocks_and_lists_together_are_refused() -> None:
    user = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "cat.png"}}]}
    row = {"messages": [user, {"role": "assistant", "content": "x"}], "images": ["dog.png"]}
    report, _ = run([row])
    assert "both as content blocks" in report.errors[0].message


def test_unknown_block_type_is_named() -> None:
    user = {"role": "user", "content": [{"type": "pdf", "pdf": "x"}]}
    report, _ = run([{"messages": [user, {"role": "assistant", "content": "x"}]}])
    assert report.errors[0].field == "messages[0].content[0].type"


def test_rejected_images_count_against_rejected_messages() -> None:
    row = {
        "messages": chat("<image>Which?", "left"),
        "rejected_response": "right",
        "images": ["a.png"],
        "rejected_images": ["b.png"],
    }
    report, out = run([row])
    assert report.ok, report.errors
    assert report.format == "swift_preference"
    assert out[0]["rejected_images"] == ["/state/blobs/media/b.png"]
    bad = {**row, "rejected_images": ["b.png", "c.png"]}
    report, _ = run([bad])
    assert report.errors[0].field == "rejected_images"


def test_objects_pass_through_and_must_be_an_object() -> None:
    objects = {"ref": ["cat"], "bbox": [[1, 2, 3, 4]]}
    row = {"messages": chat("<image>Find <ref-object>", "<bbox>"), "images": ["a.png"], "objects": objects}
    report, out = run([row])
    assert report.ok and out[0]["objects"] == objects
    report, _ = run([{**row, "objects": [1]}])
    assert report.errors[0].field == "objects"


def test_media_on_a_pair_row_is_refused() -> None:
    report, _ = run([{"prompt": "<image>p", "chosen": "a", "rejected": "b", "images": ["a.png"]}])
    assert "not read with preference rows" in report.errors[0].message


def test_the_resolvers_refusal_names_row_item_and_fix() -> None:
    report, _ = run([{"messages": chat("<image>x"), "images": ["gone.png"]}], Store({}))
    [error] = report.errors
    assert error.field == "images[0]"
    assert error.message == "line 1, images[0]: 'gone.png' is not in the bundle"
    assert error.hint == "add it, or fix the path"


def test_without_a_resolver_media_rows_are_refused() -> None:
    v = DatasetValidator("d.jsonl")
    v.feed(json.dumps({"messages": chat("<image>"), "images": ["a.png"]}).encode() + b"\n")
    assert "cannot be checked here" in v.finish().errors[0].message


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("../x.png", "leaves the archive"),
        ("a/../../x.png", "leaves the archive"),
        ("C:/x.png", "absolute"),
        ("a\\b.png", "backslash"),
        ("", "empty"),
    ],
)
def test_member_paths_that_escape_are_refused(name: str, why: str) -> None:
    problem = member_problem(name)
    assert problem is not None and why in problem


def test_member_paths_inside_are_fine() -> None:
    assert member_problem("pics/cat.png") is None
    assert member_problem("a..b.png") is None


def test_data_uri() -> None:
    payload = b"\x89PNG\r\n"
    mime, data = parse_data_uri("data:image/png;base64," + base64.b64encode(payload).decode())
    assert (mime, data) == ("image/png", payload)
    with pytest.raises(MediaProblem):
        parse_data_uri("data:image/png;base64,***")
    with pytest.raises(MediaProblem):
        parse_data_uri("data:image/png,raw")


def test_sniff_headers() -> None:
    assert sniff("video", b"\x00\x00\x00\x18ftypmp42") == "mp4"
    assert sniff("audio", b"RIFF\x00\x00\x00\x00WAVEfmt ") == "wav"
    assert sniff("video", b"not a video") is None
    assert sniff("audio", b"\x00\x01") is None


@settings(max_examples=100, deadline=None)
@given(
    tags=st.lists(st.sampled_from(["<image>", "<video>", "x"]), max_size=4),
    images=st.none() | st.lists(st.just("i.png"), max_size=3),
    videos=st.none() | st.lists(st.just("v.mp4"), max_size=2),
)
def test_the_published_line_model_agrees_on_media_rows(
    tags: list[str], images: list[str] | None, videos: list[str] | None
) -> None:
    row: dict[str, Any] = {"messages": chat("".join(tags) + "?")}
    row |= {k: v for k, v in (("images", images), ("videos", videos)) if v is not None}
    report, _ = run([row])
    try:
        SftMessagesLine.model_validate(row)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted == report.ok, report.errors


def test_a_literal_tag_in_a_pretraining_text_or_pair_stays_text() -> None:
    report, out = run(
        [{"messages": [{"role": "assistant", "content": "HTML has an <image> tag? No, <img>."}]}]
    )
    assert report.ok and report.format == "pretrain_messages" and "images" not in out[0]
    report, _ = run([{"prompt": "What is <image>?", "chosen": "A tag.", "rejected": "A cat."}])
    assert report.ok and report.format == "preference"
