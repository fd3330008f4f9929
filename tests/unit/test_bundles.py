"""Multimodal bundles and data: URIs through `check_file`: accepted ones publish their media once,
content-addressed; refused ones say why, and nothing is written outside the state folder."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from daemon.core.config import LimitsConfig, SwiftConfig
from daemon.core.drops import FileVerdict, dataset_name, file_kind
from daemon.core.layout import StateLayout
from daemon.core.swift_args import bundled
from daemon.intake.validate import check_file
from tests.mediafiles import make_tar, make_zip, png, row, rows_bytes


class Box:
    def __init__(self, tmp: Path) -> None:
        self.drops = tmp / "drops"
        self.drops.mkdir()
        self.state = StateLayout(tmp / "state")
        self.state.scratch.mkdir(parents=True)
        self.tmp = tmp

    def check(self, path: Path, limits: LimitsConfig | None = None, **swift: Any) -> FileVerdict:
        out = io.BytesIO()
        verdict = check_file(
            path, limits or LimitsConfig(), bundled(), out, swift=SwiftConfig(**swift), blobs=self.state
        )
        self.converted = [json.loads(line) for line in out.getvalue().splitlines()]
        return verdict

    def media(self) -> list[str]:
        return sorted(os.listdir(self.state.media)) if self.state.media.exists() else []

    def written(self) -> set[Path]:
        """Every file now under the temporary folder: what a check may have left behind."""
        return {Path(d) / f for d, _, files in os.walk(self.tmp) for f in files}


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_bundle_names_and_kind() -> None:
    assert file_kind("pics.tar.gz") == "dataset" and dataset_name("pics.tar.gz") == "pics"
    assert file_kind("pics.ZIP") == "dataset" and dataset_name("pics.ZIP") == "pics"
    assert dataset_name("pics.tar") == "pics"


@pytest.mark.parametrize("name", ["pics.zip", "pics.tar", "pics.tar.gz"])
def test_bundle_accepted_media_stored_once_by_content(box: Box, name: str) -> None:
    red = png()
    members = {
        "data.jsonl": rows_bytes(row("img/red.png"), row("img/red.png", "img/copy.png"), row("img/blue.png")),
        "img/red.png": red,
        "img/copy.png": red,
        "img/blue.png": png((0, 0, 255), (112, 56)),
        "img/unused.png": png((0, 255, 0)),
    }
    path = box.drops / name
    make_zip(path, members) if name.endswith(".zip") else make_tar(path, members)
    verdict = box.check(path)
    assert verdict.ok, verdict.problems
    assert verdict.summary == (
        "dataset pics: sft_messages, 3 rows, feeds sft, lora, rl; media: 4 images, 0 videos, 0 audios in 2 files"
    )
    assert len(box.media()) == 2 and all(m.endswith(".png") for m in box.media())
    first = box.converted[1]["images"]
    assert first[0] == first[1] and Path(first[0]).parent == box.state.media
    assert all(Path(p).is_file() for r in box.converted for p in r["images"])
    assert verdict.dataset is not None and verdict.dataset.stats.media is not None
    media = verdict.dataset.stats.media
    assert (media.images, media.files, media.bytes) == (4, 2, len(red) + len(members["img/blue.png"]))
    assert media.pixels_max is not None and (media.pixels_max.width, media.pixels_max.height) == (112, 56)
    assert os.listdir(box.state.scratch) == []
    again = make_zip(box.drops / "again.zip", {"d.jsonl": rows_bytes(row("r.png")), "r.png": red})
    assert box.check(again).ok
    assert len(box.media()) == 2


def test_data_uri_in_a_plain_jsonl(box: Box) -> None:
    uri = "data:image/png;base64," + base64.b64encode(png()).decode()
    path = box.drops / "inline.jsonl"
    path.write_bytes(rows_bytes(row(uri)))
    verdict = box.check(path)
    assert verdict.ok, verdict.problems
    assert box.converted[0]["images"][0].startswith(str(box.state.media))


def test_plain_jsonl_path_and_offline_url_are_refused(box: Box) -> None:
    path = box.drops / "paths.jsonl"
    path.write_bytes(rows_bytes(row("/etc/hosts.png"), row("https://example.com/a.png")))
    verdict = box.check(path, offline=True)
    assert not verdict.ok
    assert (
        "line 1, images[0]: '/etc/hosts.png' is a path, and a plain .jsonl carries no files"
        in verdict.problems
    )
    assert (
        "line 2, images[0]: 'https://example.com/a.png' is a URL, and the daemon is offline"
        in verdict.problems
    )


def refused(box: Box, path: Path, limits: LimitsConfig | None = None) -> str:
    before = box.written()
    verdict = box.check(path, limits)
    assert not verdict.ok
    assert verdict.kind == "dataset"
    assert box.media() == []
    assert box.written() == before, "a refused bundle left files behind"
    return verdict.problems


def test_tag_list_mismatch(box: Box) -> None:
    bad = row("a.png")
    bad["images"] = ["a.png", "a.png"]
    text = refused(box, make_zip(box.drops / "b.zip", {"d.jsonl": rows_bytes(bad), "a.png": png()}))
    assert "line 1, images: the messages hold 1 <image> tag(s) but images lists 2 item(s)" in text


def test_missing_member(box: Box) -> None:
    text = refused(box, make_zip(box.drops / "b.zip", {"d.jsonl": rows_bytes(row("pics/gone.png"))}))
    assert "line 1, images[0]: 'pics/gone.png' is not in the bundle" in text
    assert "hint: add it to the archive at that path" in text


def test_undecodable_image(box: Box) -> None:
    broken = png()[:60]
    text = refused(box, make_zip(box.drops / "b.zip", {"d.jsonl": rows_bytes(row("a.png")), "a.png": broken}))
    assert "line 1, images[0]: 'a.png' does not decode as an image" in text


def test_image_over_the_pixel_limit(box: Box) -> None:
    path = make_zip(box.drops / "b.zip", {"d.jsonl": rows_bytes(row("a.png")), "a.png": png(size=(100, 100))})
    text = refused(box, path, LimitsConfig(max_image_pixels=5000))
    assert "'a.png' is 100x100 pixels, over [limits] max_image_pixels (5000)" in text


def test_dotdot_member(box: Box) -> None:
    text = refused(
        box, make_zip(box.drops / "b.zip", {"d.jsonl": rows_bytes(row("a.png")), "../a.png": png()})
    )
    assert "member '../a.png' the path leaves the archive (..)" in text
    assert not (box.tmp / "a.png").exists()


def test_dotdot_reference(box: Box) -> None:
    path = make_zip(box.drops / "b.zip", {"d.jsonl": rows_bytes(row("../a.png")), "a.png": png()})
    assert "'../a.png' cannot be used: the path leaves the archive" in refused(box, path)


def test_absolute_member(box: Box) -> None:
    text = refused(
        box, make_tar(box.drops / "b.tar", {"d.jsonl": rows_bytes(row("a.png")), "/tmp/a.png": png()})
    )
    assert "member '/tmp/a.png' the path is absolute" in text


def test_link_members(box: Box) -> None:
    path = make_zip(
        box.drops / "b.zip", {"d.jsonl": rows_bytes(row("a.png"))}, links={"a.png": "/etc/passwd"}
    )
    assert "member 'a.png' is a link" in refused(box, path)
    link = tarfile.TarInfo("a.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar = make_tar(box.drops / "c.tar.gz", {"d.jsonl": rows_bytes(row("a.png"))}, [link])
    assert "member 'a.png' is a link" in refused(box, tar)


def test_device_member(box: Box) -> None:
    dev = tarfile.TarInfo("null")
    dev.type = tarfile.CHRTYPE
    text = refused(
        box, make_tar(box.drops / "b.tar", {"d.jsonl": rows_bytes(row("a.png")), "a.png": png()}, [dev])
    )
    assert "member 'null' is not a plain file (device)" in text


def test_zip_bomb_refused_before_inflating(box: Box) -> None:
    path = box.drops / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("d.jsonl", rows_bytes(row("a.png")))
        with z.open("a.png", "w", force_zip64=True) as member:
            block = bytes(1024 * 1024)
            for _ in range(20):
                member.write(block)
    assert path.stat().st_size < 1024 * 1024
    text = refused(box, path)
    assert "member 'a.png' declares 20971520 bytes from" in text and "a zip bomb" in text


def test_tar_gz_bomb_stops_while_streaming(box: Box) -> None:
    path = box.drops / "bomb.tar.gz"
    size = 64 * 1024 * 1024
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo("a.png")
        info.size = size

        class Zeros(io.RawIOBase):
            left = size

            def readable(self) -> bool:
                return True

            def readinto(self, b: Any) -> int:
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        t.addfile(info, io.BufferedReader(Zeros()))
    text = refused(box, path, LimitsConfig(max_media_bytes=size + 1))
    assert "inflates to more than 100 times its compressed size" in text


def test_too_many_members(box: Box) -> None:
    members = {"d.jsonl": rows_bytes(row("a.png")), "a.png": png(), "b.png": png(), "c.png": png()}
    text = refused(box, make_zip(box.drops / "b.zip", members), LimitsConfig(max_members=3))
    assert "holds 4 members, over [limits] max_members (3)" in text
    text = refused(box, make_tar(box.drops / "b.tar", members), LimitsConfig(max_members=3))
    assert "holds more than [limits] max_members (3) members" in text


def test_nested_archive(box: Box) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("a.png", png())
    path = make_zip(box.drops / "b.zip", {"d.jsonl": rows_bytes(row("a.png")), "more.zip": inner.getvalue()})
    assert "member 'more.zip' is an archive inside the archive" in refused(box, path)


def test_no_jsonl_or_two(box: Box) -> None:
    assert "holds no .jsonl at its top" in refused(
        box, make_zip(box.drops / "b.zip", {"sub/d.jsonl": b"{}\n"})
    )
    two = {"d.jsonl": rows_bytes(row()), "e.jsonl": rows_bytes(row())}
    assert "is a second .jsonl at the top" in refused(box, make_zip(box.drops / "c.zip", two))


def test_not_an_archive(box: Box) -> None:
    path = box.drops / "b.zip"
    path.write_bytes(b"not a zip")
    assert "is not a readable zip archive" in refused(box, path)
