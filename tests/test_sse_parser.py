"""SSEParser against the WHATWG event-stream rules listed in docs/protocol.md."""

from __future__ import annotations

import pytest

from sse_tui.engine.sse import SSEEvent, SSEParser


def feed_all(chunks: list[bytes], parser: SSEParser | None = None) -> list[SSEEvent]:
    parser = parser or SSEParser()
    out: list[SSEEvent] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


def fields(events: list[SSEEvent]) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.data, e.id) for e in events]


ADAPTER_STREAM = (
    b": connected to c1\n\n"
    b'event: token\nid: 1\ndata: {"token": "a"}\n\n'
    b'event: token\nid: 2\ndata: {"token": "b"}\n\n'
)
ADAPTER_EXPECTED = [
    ("comment", "connected to c1", None),
    ("token", '{"token": "a"}', "1"),
    ("token", '{"token": "b"}', "2"),
]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_terminators(newline: bytes) -> None:
    stream = ADAPTER_STREAM.replace(b"\n", newline)
    assert fields(feed_all([stream])) == ADAPTER_EXPECTED


def test_mixed_terminators() -> None:
    stream = b": connected to c1\r\n\revent: token\nid: 1\r\ndata: x\r\r\ndata: y\n\r"
    assert fields(feed_all([stream])) == [
        ("comment", "connected to c1", None),
        ("token", "x", "1"),
        ("message", "y", "1"),
    ]


def test_crlf_split_across_feeds_is_one_terminator() -> None:
    # If the \n after a trailing \r were a new blank line, "a" would be
    # dispatched early and "b" would become a second event.
    events = feed_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert fields(events) == [("message", "a\nb", None)]


def test_cr_at_end_of_feed_followed_by_other_text() -> None:
    events = feed_all([b"data: a\r", b"\r", b"data: b\r", b"\r"])
    assert fields(events) == [("message", "a", None), ("message", "b", None)]


def test_lone_cr_at_chunk_end_completes_the_event_without_waiting() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert fields(parser.feed(b"\r")) == [("message", "a", None)]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_byte_by_byte(newline: bytes) -> None:
    stream = ADAPTER_STREAM.replace(b"\n", newline)
    parser = SSEParser()
    events = feed_all([stream[i : i + 1] for i in range(len(stream))], parser)
    assert fields(events) == ADAPTER_EXPECTED
    assert parser.last_event_id == "2"


def test_many_events_in_one_feed() -> None:
    stream = b"".join(b"event: token\nid: %d\ndata: t%d\n\n" % (i, i) for i in range(500))
    events = SSEParser().feed(stream, received_ns=42)
    assert [(e.id, e.data) for e in events] == [(str(i), f"t{i}") for i in range(500)]
    assert {e.received_ns for e in events} == {42}


def test_received_ns_is_that_of_the_completing_read() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a", received_ns=1) == []
    (event,) = parser.feed(b"\n\n", received_ns=2)
    assert event.received_ns == 2


def test_comments_in_stream_order() -> None:
    events = feed_all([b": connected to c1\n\ndata: a\n:keep-alive\n\n:\n"])
    assert [(e.event, e.data, e.is_comment) for e in events] == [
        ("comment", "connected to c1", True),
        ("comment", "keep-alive", True),
        ("message", "a", False),
        ("comment", "", True),
    ]


def test_comment_keeps_only_text_after_one_space() -> None:
    (event,) = feed_all([b":  two spaces\n"])
    assert event.data == " two spaces"


def test_multiline_data_joined_with_newline() -> None:
    (event,) = feed_all([b"data: line1\ndata: line2\ndata:\ndata: line4\n\n"])
    assert event.data == "line1\nline2\n\nline4"


def test_data_with_and_without_space() -> None:
    events = feed_all([b"data:no space\n\ndata: one space\n\ndata:  two spaces\n\n"])
    assert [e.data for e in events] == ["no space", "one space", " two spaces"]


def test_line_without_colon_is_field_with_empty_value() -> None:
    events = feed_all([b"data\n\ndata\ndata\n\n"])
    assert [e.data for e in events] == ["", "\n"]


def test_retry_field() -> None:
    parser = SSEParser()
    events = feed_all([b"retry: 3000\ndata: a\n\ndata: b\n\n"], parser)
    assert [(e.data, e.retry) for e in events] == [("a", 3000), ("b", None)]
    assert parser.retry_ms == 3000


@pytest.mark.parametrize("value", [b"3s", b"-1", b"+5", b"1.5", b"", b"\xd9\xa3", b"  7"])
def test_retry_ignored_unless_all_ascii_digits(value: bytes) -> None:
    parser = SSEParser()
    (event,) = feed_all([b"retry:" + value + b"\ndata: a\n\n"], parser)
    assert event.retry is None
    assert parser.retry_ms is None


def test_other_event_types_are_returned() -> None:
    stream = b"event: connected\ndata: {}\n\nevent: error\ndata: boom\n\ndata: plain\n\n"
    assert [(e.event, e.data) for e in feed_all([stream])] == [
        ("connected", "{}"),
        ("error", "boom"),
        ("message", "plain"),
    ]


def test_unknown_fields_ignored() -> None:
    stream = b"foo: bar\nevent: token\nDATA: shout\nid : spaced\nx\ndata: ok\n\n"
    assert fields(feed_all([stream])) == [("token", "ok", None)]


@pytest.mark.parametrize(
    "chunks",
    [[b"\xef\xbb\xbfdata: a\n\n"], [b"\xef", b"\xbb", b"\xbfdata: a\n\n"]],
    ids=["whole", "split"],
)
def test_bom_stripped_at_stream_start(chunks: list[bytes]) -> None:
    assert fields(feed_all(chunks)) == [("message", "a", None)]


def test_bom_only_stripped_once() -> None:
    events = feed_all([b"\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\n"])
    # The second BOM is part of a field name, so that line is an unknown field.
    assert fields(events) == [("message", "a", None)]


def test_utf8_split_across_feeds() -> None:
    stream = "data: héllo 🚀 世界\n\n".encode()
    rocket = stream.index("🚀".encode())
    chunks = [stream[: rocket + 1], stream[rocket + 1 : rocket + 3], stream[rocket + 3 :]]
    assert fields(feed_all(chunks)) == [("message", "héllo 🚀 世界", None)]


def test_invalid_utf8_replaced_not_raised() -> None:
    (event,) = feed_all([b"data: \xff\xfe\n\n"])
    assert event.data == "\ufffd\ufffd"


def test_id_persists_across_events() -> None:
    parser = SSEParser()
    events = feed_all([b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"], parser)
    assert [(e.data, e.id) for e in events] == [("a", "7"), ("b", "7"), ("c", "")]
    assert parser.last_event_id == ""


def test_id_with_nul_ignored() -> None:
    parser = SSEParser()
    events = feed_all([b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"], parser)
    assert [e.id for e in events] == ["1", "1"]
    assert parser.last_event_id == "1"


def test_id_updates_even_without_dispatch() -> None:
    parser = SSEParser()
    assert feed_all([b"id: 9\n\n"], parser) == []
    assert parser.last_event_id == "9"


def test_empty_data_not_dispatched_but_buffers_reset() -> None:
    # The blank line after "event: x" must reset the event type, so "b" is a message.
    events = feed_all([b"event: x\n\nretry: 10\n\nevent: token\nid: 3\n\ndata: b\n\n"])
    assert [(e.event, e.data, e.id, e.retry) for e in events] == [("message", "b", "3", None)]


def test_partial_event_at_end_is_not_dispatched() -> None:
    assert feed_all([b"data: a\n", b"data: b"]) == []


def test_empty_feed_is_harmless() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert fields(feed_all([b"data: a\r", b"", b"\n\n"], parser)) == [("message", "a", None)]
