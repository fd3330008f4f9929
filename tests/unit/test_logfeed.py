"""A job's log cut into SSE events: every byte once, in order, whatever the chunking; CR and
non-ASCII round-trip through a spec-conformant parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import daemon.http.logfeed as logfeed
from daemon.http.logfeed import LineCutter, line_floor, log_frame, read_frames
from tests.sse_client import SseParser

pytestmark = pytest.mark.timeout(60)


def rebuild(events: list[tuple[int, bytes]], start: int) -> bytes:
    """The log's bytes from events: each covers [previous end, its end); the LF is implied."""
    out = b""
    pos = start
    for end, text in events:
        assert end - pos in (len(text), len(text) + 1), (pos, end, text)
        out += text + (b"\n" if end - pos == len(text) + 1 else b"")
        pos = end
    return out


def parse(frames: list[bytes]) -> list[tuple[int, str]]:
    p = SseParser()
    for f in frames:
        p.feed(f)
    return [(int(e.last_event_id), e.data) for e in p.events]


def test_lines_end_at_lf_and_their_id_is_the_offset_after_it() -> None:
    cut = LineCutter(100)
    assert cut.feed(b"one\ntw") == [(104, b"one")]
    assert cut.feed(b"o\n\nthree") == [(108, b"two"), (109, b"")]
    assert cut.pending == 5 and cut.offset == 109
    assert cut.flush() == [(114, b"three")]
    assert cut.flush() == []


def test_a_cr_makes_data_lines_of_one_event() -> None:
    frame = log_frame(42, "Train:  10%|#\rTrain:  20%|##  ✓ 日本".encode())
    assert frame == "id: 42\ndata: Train:  10%|#\ndata: Train:  20%|##  ✓ 日本\n\n".encode()
    [(end, data)] = parse([frame])
    assert end == 42 and data.replace("\n", "\r") == "Train:  10%|#\rTrain:  20%|##  ✓ 日本"


def test_an_empty_line_and_a_trailing_cr_are_events_too() -> None:
    assert parse([log_frame(1, b""), log_frame(5, b"ab\r")]) == [(1, ""), (5, "ab\n")]


def test_invalid_utf8_arrives_as_replacement_characters() -> None:
    assert parse([log_frame(3, b"a\xffb")]) == [(3, "a\ufffdb")]


def test_a_long_line_is_cut_after_a_cr_or_on_a_character_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logfeed, "MAX_LINE", 8)
    cut = LineCutter(0)
    assert cut.feed(b"abc\rdefghijk\n") == [(4, b"abc\r"), (13, b"defghijk")]
    cut = LineCutter(0)
    events = cut.feed("aaaaaaé日x\n".encode())  # é is 2 bytes, 日 is 3: no cut may split them
    for _, text in events:
        text.decode("utf-8")
        assert len(text) <= 8
    assert rebuild(events, 0) == "aaaaaaé日x\n".encode()


log_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\n", b"\r", b"\r\n", "✓".encode(), "日本語".encode(), b"x" * 20, b" "]),
        st.binary(max_size=12),
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=log_bytes, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_chunking_gives_the_same_events_and_every_byte_once(data: bytes, cuts: list[int]) -> None:
    logfeed.MAX_LINE, saved = 16, logfeed.MAX_LINE
    try:
        whole = LineCutter(7)
        expected = whole.feed(data)
        chunked = LineCutter(7)
        got: list[tuple[int, bytes]] = []
        edges = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
        for a, b in zip(edges, edges[1:], strict=False):
            got += chunked.feed(data[a:b])
        assert got == expected
        assert all(len(text) <= 16 for _, text in got)
        tail = chunked.flush()
        assert rebuild(got + tail, 7) == data
    finally:
        logfeed.MAX_LINE = saved


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n"), max_size=40))
def test_a_line_round_trips_through_a_conformant_parser(text: str) -> None:
    [(end, data)] = parse([log_frame(9, text.encode())])
    assert end == 9 and data.replace("\n", "\r") == text


def test_read_frames_stops_at_whole_lines_or_at_a_given_stop(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_bytes(b"a\nbb\nccc")
    frames, end = read_frames(log, 0, None, 1 << 20)
    assert parse(frames) == [(2, "a"), (5, "bb")] and end == 5
    frames, end = read_frames(log, 0, 8, 1 << 20)
    assert parse(frames) == [(2, "a"), (5, "bb"), (8, "ccc")] and end == 8
    frames, end = read_frames(log, 3, 5, 1 << 20)  # a resume point inside a line: its rest
    assert parse(frames) == [(5, "b")] and end == 5
    assert read_frames(tmp_path / "missing.log", 0, None, 10) == ([], 0)


def test_read_frames_keeps_to_its_budget(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_bytes(b"".join(b"line %05d\n" % i for i in range(100_000)))
    frames, end = read_frames(log, 0, None, 8192)
    assert 8192 - 11 <= end <= 8192 and len(frames) == end // 11


def test_line_floor_is_the_start_of_the_line_being_written(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    assert line_floor(log) == 0
    log.write_bytes(b"done\nhalf a li")
    assert line_floor(log) == 5
    log.write_bytes(b"no newline yet")
    assert line_floor(log) == 0
    log.write_bytes(b"x" * (logfeed.MAX_LINE + 10))
    assert line_floor(log) == logfeed.MAX_LINE + 10
