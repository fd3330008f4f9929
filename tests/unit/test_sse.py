"""The SSE pieces that need no daemon: the shared ring, resume ids, event frames, and the tests'
own spec-conformant parser (which the integration tests trust)."""

from __future__ import annotations

import json

import pytest

from daemon.core.events import DaemonStopped, Recorded
from daemon.http.frames import event_frame, parse_last_event_id
from daemon.http.ring import Ring
from daemon.http.views import recorded_json
from tests.sse_client import SseEvent, SseParser

pytestmark = pytest.mark.timeout(30)


def frames(keys: list[int]) -> list[tuple[int, bytes]]:
    return [(k, b"<%d>" % k) for k in keys]


def test_a_ring_hands_out_what_follows_a_cursor_within_a_budget() -> None:
    ring = Ring(10, max_frames=100, max_bytes=10_000)
    assert ring.head == 10 and ring.after(10, 100) == ([], 10)
    ring.publish(frames([11, 12, 13]))
    assert ring.after(10, 100) == ([b"<11>", b"<12>", b"<13>"], 13)
    assert ring.after(11, 8) == ([b"<12>", b"<13>"], 13)
    assert ring.after(11, 1) == ([b"<12>"], 12)  # at least one frame, however small the budget
    assert ring.after(13, 100) == ([], 13)
    assert ring.behind(9) and not ring.behind(10)


def test_a_full_ring_forgets_its_oldest_frames_and_says_who_is_behind() -> None:
    ring = Ring(0, max_frames=3, max_bytes=10_000)
    ring.publish(frames(list(range(1, 3000))))
    assert ring.floor == 2996 and ring.behind(2995) and not ring.behind(2996)
    assert ring.after(2996, 100) == ([b"<2997>", b"<2998>", b"<2999>"], 2999)
    small = Ring(0, max_frames=100, max_bytes=12)
    small.publish(frames([1, 2, 3, 4, 5]))
    assert small.bytes <= 12 and small.floor == 1
    small.reset(50)
    assert small.after(50, 100) == ([], 50) and small.bytes == 0 and small.behind(49)


def test_a_cursor_inside_a_frame_is_told_where_that_frame_ends() -> None:
    ring = Ring(100, max_frames=10, max_bytes=10_000)
    ring.publish([(110, b"a"), (120, b"b")])
    assert ring.inside(100) is None and ring.inside(110) is None and ring.inside(120) is None
    assert ring.inside(105) == 110 and ring.inside(119) == 120
    assert ring.inside(125) is None  # ahead of the ring: wait for it


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0),
        ("42", 42),
        (" 42 ", 42),
        ("abc", None),
        ("-1", None),
        ("1.5", None),
        ("١٢", None),  # digits, but not ASCII ones
        ("9" * 19, 9_999_999_999_999_999_999),
        ("9" * 20, None),
        ("7" * 10_000, None),
    ],
)
def test_last_event_id_is_digits_or_ignored(raw: str | None, expected: int | None) -> None:
    value, why = parse_last_event_id(raw)
    assert value == expected
    assert (why is None) == (expected is not None or raw in (None, ""))
    if why:
        assert "\n" not in why and "\r" not in why and len(why) < 200


def test_an_event_frame_is_one_data_line_of_json_whatever_the_strings_hold() -> None:
    event = DaemonStopped(pid=7, reason="line one\nline two\r\nthree ✓ 日本 \u2028 end")
    rec = Recorded(5, "daemon", 2, 1.5, event)
    frame = event_frame(rec)
    assert frame.count(b"\n") == 3 and frame.startswith(b"id: 5\ndata: {")
    p = SseParser()
    [got] = p.feed(frame)
    assert got.last_event_id == "5" and json.loads(got.data) == recorded_json(rec)


# -- the tests' parser against the spec's own examples -------------------------------------------


def feed_bytewise(text: bytes) -> SseParser:
    p = SseParser()
    for i in range(len(text)):
        p.feed(text[i : i + 1])
    p.feed(b"", final=True)
    return p


def test_parser_spec_examples() -> None:
    p = feed_bytewise(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert p.events == [SseEvent("message", "YHOO\n+2\n10", "")]
    p = feed_bytewise(
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
    )
    assert [(e.data, e.last_event_id) for e in p.events] == [
        ("first event", "1"),
        ("second event", ""),
        (" third event", ""),
    ]
    assert p.comments == [" test stream"]
    p = feed_bytewise(b"data\n\ndata\ndata\n\ndata:")
    assert [e.data for e in p.events] == ["", "\n"]  # the last, unterminated event is discarded


def test_parser_line_endings_bom_retry_and_named_events() -> None:
    p = feed_bytewise("\ufeffretry: 1500\r\nevent: end\rdata: é\r\n\r\nretry: x\n\n".encode())
    assert p.retry_ms == 1500
    assert p.events == [SseEvent("end", "é", "")]
