"""Multimodal bundles dropped into a running daemon: the good one is a dataset with media stats, each
bad one is rejected with its reason, nothing lands outside the state folder, and the daemon stays up."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

from tests.daemon_proc import Daemon
from tests.mediafiles import make_tar, make_zip, png, row, rows_bytes


def bundles(folder: Path) -> dict[str, str]:
    """Bad bundles by file name, with the words each rejection must hold."""
    good_rows = rows_bytes(row("a.png"))
    mismatch = row("a.png")
    mismatch["images"] = ["a.png", "a.png"]
    make_zip(folder / "mismatch.zip", {"d.jsonl": rows_bytes(mismatch), "a.png": png()})
    make_zip(folder / "missing.zip", {"d.jsonl": good_rows})
    make_zip(folder / "broken.zip", {"d.jsonl": good_rows, "a.png": png()[:50]})
    make_zip(folder / "dotdot.zip", {"d.jsonl": good_rows, "a.png": png(), "../escaped.png": png()})
    make_tar(folder / "absolute.tar", {"d.jsonl": good_rows, "a.png": png(), "/tmp/escaped.png": png()})
    link = tarfile.TarInfo("a.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    make_tar(folder / "link.tar.gz", {"d.jsonl": good_rows}, [link])
    with zipfile.ZipFile(folder / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("d.jsonl", good_rows)
        with z.open("a.png", "w") as member:
            for _ in range(8):
                member.write(bytes(1024 * 1024))
    many = {"d.jsonl": good_rows, **{f"p{i}.png": png() for i in range(5)}}
    make_zip(folder / "many.zip", many)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("a.png", png())
    make_zip(folder / "nested.zip", {"d.jsonl": good_rows, "a.png": png(), "more.zip": inner.getvalue()})
    return {
        "mismatch.zip": "the messages hold 1 <image> tag(s) but images lists 2 item(s)",
        "missing.zip": "'a.png' is not in the bundle",
        "broken.zip": "'a.png' does not decode as an image",
        "dotdot.zip": "member '../escaped.png' the path leaves the archive",
        "absolute.tar": "member '/tmp/escaped.png' the path is absolute",
        "link.tar.gz": "member 'a.png' is a link",
        "bomb.zip": "a zip bomb",
        "many.zip": "over [limits] max_members (4)",
        "nested.zip": "member 'more.zip' is an archive inside the archive",
    }


def test_bundles_in_a_live_daemon(daemon_factory: type[Daemon], tmp_path: Path) -> None:
    d = daemon_factory(tmp_path / "d", extra_config="[limits]\nmax_members = 4\n").start()
    made = tmp_path / "made"
    made.mkdir()
    expected = bundles(made)
    good = make_zip(
        made / "shapes.zip",
        {"shapes.jsonl": rows_bytes(row("img/r.png"), row("img/r.png")), "img/r.png": png()},
    )
    for path in [good, *(made / name for name in expected)]:
        d.drop(path.name, path.read_bytes())
    d.wait_for(
        "every bundle decided",
        lambda: (
            len([n for n in os.listdir(d.inbox / "rejected") if n.endswith(".error.txt")]) == len(expected)
            and d.get("/v1/datasets/shapes")[0] == 200
        ),
        timeout=60,
    )
    for name, words in expected.items():
        assert words in (d.inbox / "rejected" / f"{name}.error.txt").read_text(), name
    view = d.get("/v1/datasets/shapes")[1]
    media = view["stats"]["media"]
    assert (media["images"], media["files"]) == (2, 1)
    assert media["pixels_median"] == {"width": 56, "height": 56}
    assert d.get("/v1/status")[0] == 200
    assert d.proc is not None and d.proc.poll() is None
    stray = [
        Path(folder) / f
        for folder, _, files in os.walk(tmp_path)
        for f in files
        if not Path(folder).is_relative_to(made)
        and not Path(folder).is_relative_to(d.state)
        and not Path(folder).is_relative_to(d.inbox)
        and Path(folder) != d.root
    ]
    assert stray == []
    assert not list(tmp_path.rglob("escaped.png"))
    stored = os.listdir(d.state / "blobs" / "media")
    assert len(stored) == 1 and stored[0].endswith(".png")
