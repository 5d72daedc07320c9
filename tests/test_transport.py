"""open_stream against a scripted loopback server that writes crafted bytes.

The server replays a script: bytes are written (and drained) one item at a time
with a short pause between items, so the client sees them as separate reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from sse_tui.engine.sse import SSEEvent
from sse_tui.engine.transport import (
    SSEStream,
    StreamConnectError,
    StreamError,
    StreamHTTPError,
    aclose_transports,
    open_stream,
)
from sse_tui.engine.transport import httpx_client as httpx_mod
from sse_tui.engine.transport import raw as raw_mod
from tests.conftest import until
from tests.servers import LoopbackServer

pytestmark = pytest.mark.timeout(20)

TRANSPORTS = ["raw", "httpx"]
WAIT = 5.0  # upper bound for any single wait in these tests


class Pause(float):
    """A script item: sleep this many seconds before the next write."""


RESET = object()  # script item: abort the connection with a TCP RST
HOLD = object()  # script item: keep the connection open until the client leaves
SPLIT_PAUSE = 0.01


class ScriptedServer(LoopbackServer):
    """Serves `script` to every connection (the request heads land in `heads`)."""

    def __init__(self, script: Sequence[object], path: str) -> None:
        super().__init__()
        self.script = script
        self.path = path

    @property
    def url(self) -> str:
        return super().url + self.path

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.read_request(reader)
            await play(self.script, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()


def serve(script: Sequence[object], path: str = "/stream/c1") -> ScriptedServer:
    return ScriptedServer(script, path)


async def play(
    script: Sequence[object], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    for item in script:
        if isinstance(item, Pause):
            await asyncio.sleep(item)
        elif item is RESET:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        elif item is HOLD:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(), WAIT)
            return
        else:
            assert isinstance(item, bytes)
            writer.write(item)
            await writer.drain()
            await asyncio.sleep(SPLIT_PAUSE)


def head(status: str = "200 OK", *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


SSE_CT = "Content-Type: text/event-stream"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def token(seq: int, text: str = "t") -> bytes:
    payload = b'{"token": "%s", "sequence": %d}' % (text.encode(), seq)
    return b"event: token\nid: %d\ndata: %s\n\n" % (seq, payload)


EXPECTED_TOKENS = [
    ("token", '{"token": "t", "sequence": 1}', "1"),
    ("token", '{"token": "t", "sequence": 2}', "2"),
    ("token", '{"token": "t", "sequence": 3}', "3"),
]


async def collect(stream: SSEStream, timeout: float = WAIT) -> list[SSEEvent]:
    async def drain() -> list[SSEEvent]:
        return [event async for event in stream]

    try:
        return await asyncio.wait_for(drain(), timeout)
    finally:
        await asyncio.wait_for(stream.aclose(), WAIT)


def tokens(events: list[SSEEvent]) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.data, e.id) for e in events if not e.is_comment]


async def open_(url: str, transport: str, **kwargs: object) -> SSEStream:
    return await asyncio.wait_for(open_stream(url, transport=transport, **kwargs), WAIT)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
async def close_shared_clients() -> AsyncIterator[None]:
    yield
    await aclose_transports()


# ----------------------------------------------------------------- body framing


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chunked_with_splits_inside_size_lines_and_crlfs(transport: str) -> None:
    body = b": connected to c1\n\n" + token(1) + token(2) + token(3)
    first, second = chunk(body[:60]), chunk(body[60:])
    # Every boundary a decoder can trip on: inside the size line, between the size
    # line's \r and \n, inside the data, between the data's CRLF, inside the trailer.
    size_line, data = first.split(b"\r\n", 1)
    script = [
        head("200 OK", SSE_CT, "Transfer-Encoding: chunked"),
        size_line[:1],
        size_line[1:] + b";name=value",
        b"\r",
        b"\n" + data[:25],
        data[25:-2] + b"\r",
        b"\n",
        second[:2],
        second[2:],
        b"0\r",
        b"\nX-Trailer: yes\r\n",
        b"\r\n",
        HOLD,  # keep-alive: the end must come from the framing, not a close
    ]
    async with serve(script) as server:
        stream = await open_(server.url, transport)
        assert stream.status == 200
        events = await collect(stream)
    assert tokens(events) == EXPECTED_TOKENS
    if transport == "raw":
        assert [e.data for e in events if e.is_comment] == ["connected to c1"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_content_length_body(transport: str) -> None:
    body = token(1) + token(2) + token(3)
    script = [
        head("200 OK", SSE_CT, f"Content-Length: {len(body)}"),
        body[:10],
        body[10:70],
        body[70:],
        HOLD,
    ]
    async with serve(script) as server:
        events = await collect(await open_(server.url, transport))
    assert tokens(events) == EXPECTED_TOKENS


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_close_delimited_body(transport: str) -> None:
    body = token(1) + token(2) + token(3)
    script = [head("200 OK", SSE_CT, "Connection: close"), body[:33], body[33:]]
    async with serve(script) as server:
        events = await collect(await open_(server.url, transport))
    assert tokens(events) == EXPECTED_TOKENS


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_events_arrive_before_the_response_ends(transport: str) -> None:
    script = [head("200 OK", SSE_CT, "Transfer-Encoding: chunked"), chunk(token(1)), HOLD]
    async with serve(script) as server:
        stream = await open_(server.url, transport)
        try:
            it = aiter(stream)
            event = await asyncio.wait_for(anext(it), WAIT)
            assert (event.event, event.id) == ("token", "1")
            assert event.received_ns > 0
        finally:
            await asyncio.wait_for(stream.aclose(), WAIT)


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        ("404 Not Found", False),
        ("400 Bad Request", False),
        ("503 Unavailable", True),
        ("429 Slow Down", True),
    ],
)
async def test_http_error_status(transport: str, status: str, retryable: bool) -> None:
    body = b"no such stream " * 30
    script = [head(status, "Content-Type: text/plain", f"Content-Length: {len(body)}"), body, HOLD]
    async with serve(script) as server:
        with pytest.raises(StreamHTTPError) as caught:
            await open_(server.url, transport)
    error = caught.value
    assert error.status == int(status[:3])
    assert error.retryable is retryable
    assert error.body.startswith(b"no such stream")
    assert 0 < len(error.body) <= 200
    assert str(status[:3]) in str(error)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_200_that_is_not_an_event_stream(transport: str) -> None:
    script = [head("200 OK", "Content-Type: text/html", "Content-Length: 6"), b"<html>", HOLD]
    async with serve(script) as server:
        with pytest.raises(StreamHTTPError) as caught:
            await open_(server.url, transport)
    assert caught.value.status == 200
    assert caught.value.retryable is False
    assert "text/event-stream" in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connection_refused(transport: str) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StreamConnectError) as caught:
        await open_(f"http://127.0.0.1:{port}/stream/c1", transport)
    assert caught.value.retryable is True


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_response_headers_times_out(transport: str) -> None:
    async with serve([HOLD]) as server:
        with pytest.raises(StreamConnectError) as caught:
            await open_(server.url, transport, connect_timeout=0.3)
    assert caught.value.retryable is True
    assert "0.3s" in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reset_mid_body_raises_stream_error(transport: str) -> None:
    script = [
        head("200 OK", SSE_CT, "Transfer-Encoding: chunked"),
        chunk(token(1)),
        chunk(b"event: token\nid: 2\nda"),
        Pause(0.05),
        RESET,
    ]
    async with serve(script) as server:
        stream = await open_(server.url, transport)
        received: list[SSEEvent] = []
        with pytest.raises(StreamError) as caught:
            await collect_into(stream, received)
    assert tokens(received) == EXPECTED_TOKENS[:1]
    assert not isinstance(caught.value, StreamHTTPError)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_truncated_chunked_body_raises_stream_error(transport: str) -> None:
    # A clean FIN before the terminating 0-size chunk is still a broken response.
    script = [head("200 OK", SSE_CT, "Transfer-Encoding: chunked"), chunk(token(1))]
    async with serve(script) as server:
        stream = await open_(server.url, transport)
        received: list[SSEEvent] = []
        with pytest.raises(StreamError):
            await collect_into(stream, received)
    assert tokens(received) == EXPECTED_TOKENS[:1]


async def collect_into(stream: SSEStream, out: list[SSEEvent]) -> None:
    async def drain() -> None:
        async for event in stream:
            out.append(event)

    try:
        await asyncio.wait_for(drain(), WAIT)
    finally:
        await asyncio.wait_for(stream.aclose(), WAIT)


# ---------------------------------------------------------------------- request


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_request_headers_and_last_event_id(transport: str) -> None:
    script = [head("200 OK", SSE_CT, "Content-Length: 0"), HOLD]
    async with serve(script, path="/prefix/api/stream/c1?x=1") as server:
        await collect(await open_(server.url, transport, last_event_id="41"))
    (request,) = server.heads
    request_line, *header_lines = request.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
    assert request_line == "GET /prefix/api/stream/c1?x=1 HTTP/1.1"
    assert headers["last-event-id"] == "41"
    assert headers["accept"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["host"] == server.url.split("/")[2]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_last_event_id_header_by_default(transport: str) -> None:
    script = [head("200 OK", SSE_CT, "Content-Length: 0"), HOLD]
    async with serve(script) as server:
        await collect(await open_(server.url, transport))
    assert b"last-event-id" not in server.heads[0].lower()


def test_last_event_id_with_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="Last-Event-ID"):
        asyncio.run(open_stream("http://127.0.0.1:1/stream/c", last_event_id="1\r\nX: y"))


# ----------------------------------------------------------------------- parity


async def test_both_transports_yield_the_same_events() -> None:
    body = (
        b": connected to c1\r\n\r\n"
        b"event: connected\r\ndata: {}\r\n\r\n"
        + token(1, "h\u00e9")
        + b"retry: 2500\rdata: multi\rdata: line\r\r"
        + b"data:nospace\nfoo: ignored\n\n"
        + b": keep-alive\n\n"
        + token(2, "\u4e16")
        + b"event: error\ndata: boom\n\n"
        + token(3)
    )
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    script = [
        head("200 OK", SSE_CT, "Transfer-Encoding: chunked"),
        *(chunk(p) for p in pieces),
        b"0\r\n\r\n",
        HOLD,
    ]
    results = {}
    async with serve(script) as server:
        for transport in TRANSPORTS:
            events = await collect(await open_(server.url, transport))
            results[transport] = [
                (e.event, e.data, e.id, e.retry) for e in events if not e.is_comment
            ]
    assert results["raw"] == results["httpx"]
    assert [e[0] for e in results["raw"]] == [
        "connected", "token", "message", "message", "token", "error", "token",
    ]  # fmt: skip
    assert results["raw"][2] == ("message", "multi\nline", "1", 2500)


# ------------------------------------------------------------------ raw details


async def test_raw_delivers_comments_first() -> None:
    script = [
        head("200 OK", SSE_CT, "Transfer-Encoding: chunked"),
        chunk(b": connected to c1\n\n"),
        chunk(token(1)),
        b"0\r\n\r\n",
    ]
    async with serve(script) as server:
        events = await collect(await open_(server.url, "raw"))
    assert [(e.is_comment, e.data) for e in events][:1] == [(True, "connected to c1")]


async def test_raw_skips_interim_1xx_responses() -> None:
    script = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        + head("200 OK", SSE_CT, "Connection: close"),
        token(1),
    ]
    async with serve(script) as server:
        stream = await open_(server.url, "raw")
        assert stream.status == 200
        assert tokens(await collect(stream)) == EXPECTED_TOKENS[:1]


async def test_raw_head_and_body_in_one_read() -> None:
    body = token(1) + token(2)
    script = [head("200 OK", SSE_CT, f"Content-Length: {len(body)}") + body, HOLD]
    async with serve(script) as server:
        assert tokens(await collect(await open_(server.url, "raw"))) == EXPECTED_TOKENS[:2]


async def test_raw_ipv6_literal() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = await asyncio.start_server(lambda r, w: None, "::1", 0)
    except OSError:
        pytest.skip("::1 not available")
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert f"Host: [::1]:{port}".encode() in request
        await play([head("200 OK", SSE_CT, "Connection: close"), token(1)], reader, writer)
        writer.close()

    server = await asyncio.start_server(handle, "::1", port)
    async with server:
        events = await collect(await open_(f"http://[::1]:{port}/stream/c1", "raw"))
    assert tokens(events) == EXPECTED_TOKENS[:1]


async def test_raw_aclose_twice_and_while_a_consumer_waits() -> None:
    script = [head("200 OK", SSE_CT, "Transfer-Encoding: chunked"), HOLD]
    async with serve(script) as server:
        stream = await open_(server.url, "raw")
        consumer = asyncio.create_task(collect_list(stream))
        await asyncio.sleep(0.05)  # deliberate: the consumer gets to block in its read first
        await asyncio.wait_for(stream.aclose(), WAIT)
        await asyncio.wait_for(stream.aclose(), WAIT)
        assert await asyncio.wait_for(consumer, WAIT) == []


async def collect_list(stream: SSEStream) -> list[SSEEvent]:
    return [event async for event in stream]


async def test_raw_backpressure_pauses_then_delivers_everything() -> None:
    count = 3000
    body = b"".join(token(i) for i in range(1, count + 1))
    script = [head("200 OK", SSE_CT, f"Content-Length: {len(body)}"), body, HOLD]
    async with serve(script) as server:
        stream = await open_(server.url, "raw")
        assert isinstance(stream, raw_mod._RawSSEStream)
        # The backlog builds while nobody consumes, until the reader pauses.
        await until(lambda: stream._paused, timeout=WAIT, what="the reader to pause")
        queued = len(stream._events or ())
        assert raw_mod._PAUSE_AT_EVENTS <= queued < count
        events = await collect(stream)
    assert [e.id for e in events] == [str(i) for i in range(1, count + 1)]


async def test_raw_malformed_chunk_size_raises_stream_error() -> None:
    script = [
        head("200 OK", SSE_CT, "Transfer-Encoding: chunked"),
        chunk(token(1)),
        b"zz\r\n",
        HOLD,
    ]
    async with serve(script) as server:
        stream = await open_(server.url, "raw")
        received: list[SSEEvent] = []
        with pytest.raises(StreamError, match="chunk size"):
            await collect_into(stream, received)
    assert tokens(received) == EXPECTED_TOKENS[:1]


async def test_raw_closed_before_headers_is_a_connect_error() -> None:
    async with serve([b"HTTP/1.1 200"]) as server:
        with pytest.raises(StreamConnectError, match="before response headers"):
            await open_(server.url, "raw")


@pytest.mark.parametrize("url", ["ftp://host/stream/c", "not a url", "http://:80/x"])
async def test_raw_bad_url(url: str) -> None:
    with pytest.raises(StreamError) as caught:
        await open_(url, "raw")
    assert caught.value.retryable is False


def test_unknown_transport() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        asyncio.run(open_stream("http://127.0.0.1:1/", transport="carrier-pigeon"))


# -------------------------------------------------------------- chunked decoder


def test_chunked_decoder_byte_by_byte() -> None:
    wire = b"5;a=b\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n"
    decoder = raw_mod._ChunkedBody()
    out = b"".join(decoder.decode(wire[i : i + 1]) for i in range(len(wire)))
    assert out == b"hello 0123456789"
    assert decoder.done


@pytest.mark.parametrize(("read", "fast"), [
    (b"5\r\nhello\r\n", b"hello"),
    (b"1A\r\n" + b"x" * 26 + b"\r\n", b"x" * 26),
    (b"5;a=b\r\nhello\r\n", None),  # an extension: the general path
    (b"+5\r\nhello\r\n", None),
    (b"0x5\r\nhello\r\n", None),
    (b" 5\r\nhello\r\n", None),
    (b"5\r\nhello\r\n3\r\nabc\r\n", None),  # more than one chunk
    (b"5\r\nhell", None),  # not all of it yet
    (b"5\r\nhelloXX", None),  # no CRLF after the data
    (b"0\r\n\r\n", None),  # the last chunk
])
def test_one_whole_chunk_fast_path_takes_only_what_it_should(read: bytes,
                                                             fast: bytes | None) -> None:
    assert raw_mod._one_whole_chunk(read) == fast


def test_chunked_decoder_gives_the_same_bytes_however_the_reads_fall() -> None:
    """Whole-chunk reads (the fast path) and reads split anywhere (the general path) mix."""
    import random

    rng = random.Random(7)
    pieces = [bytes([rng.randrange(256)]) * rng.randrange(1, 300) for _ in range(200)]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    for _ in range(20):
        decoder = raw_mod._ChunkedBody()
        out, pos = [], 0
        while pos < len(wire):
            # Reads split anywhere: now and then one holds exactly one chunk (fast path).
            step = rng.randrange(1, 600)
            out.append(decoder.decode(wire[pos:pos + step]))
            pos += step
        assert b"".join(out) == b"".join(pieces)
        assert decoder.done
    decoder = raw_mod._ChunkedBody()  # every read one whole chunk: the fast path throughout
    chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces]
    assert b"".join(decoder.decode(c) for c in chunks) == b"".join(pieces)


def test_chunked_decoder_all_at_once_ignores_bytes_after_the_end() -> None:
    decoder = raw_mod._ChunkedBody()
    assert decoder.decode(b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK") == b"abc"
    assert decoder.done


# ----------------------------------------------------------------------- httpx


async def test_httpx_shares_one_client_per_loop_and_closes_it() -> None:
    # "Connection: close": the scripted server answers one request per connection.
    script = [head("200 OK", SSE_CT, "Content-Length: 0", "Connection: close")]
    async with serve(script) as server:
        await collect(await open_(server.url, "httpx"))
        client = httpx_mod._shared_httpx_client()
        await collect(await open_(server.url, "httpx"))
        assert httpx_mod._shared_httpx_client() is client
    await aclose_transports()
    assert client.is_closed
    await aclose_transports()  # a second call is a no-op


# ----------------------------------------------------------------- dispatch_to (the engine's path)


def keep_in(seen: list[SSEEvent]) -> Callable[[SSEEvent], bool]:
    """A dispatch handler that keeps every event and never asks to stop."""
    def handler(e: SSEEvent) -> bool:
        seen.append(e)
        return False
    return handler


async def test_raw_dispatch_hands_over_queued_events_first_then_live_ones() -> None:
    """Events parsed before the handler was given go first, in order; the rest as they
    arrive; the end of the response ends the dispatch with False."""
    script = [
        head("200 OK", SSE_CT, "Transfer-Encoding: chunked") + chunk(token(1)),
        Pause(0.2),
        chunk(token(2) + token(3)),
        b"0\r\n\r\n",
    ]
    async with serve(script) as server:
        stream = await open_(server.url, "raw")
        assert isinstance(stream, raw_mod._RawSSEStream)
        await until(lambda: len(stream._events or ()) == 1, timeout=WAIT, what="token 1 queued")
        seen: list[SSEEvent] = []
        ended = await asyncio.wait_for(stream.dispatch_to(keep_in(seen)),
                                       WAIT)
        await stream.aclose()
    assert ended is False
    assert tokens(seen) == EXPECTED_TOKENS


async def test_raw_dispatch_stops_when_the_handler_says_and_leaves_the_rest_queued() -> None:
    body = token(1) + token(2) + token(3)
    script = [head("200 OK", SSE_CT, f"Content-Length: {len(body)}"), body, HOLD]
    async with serve(script) as server:
        stream = await open_(server.url, "raw")
        seen: list[SSEEvent] = []

        def until_two(e: SSEEvent) -> bool:
            seen.append(e)
            return e.id == "2"

        assert isinstance(stream, raw_mod._RawSSEStream)
        assert await asyncio.wait_for(stream.dispatch_to(until_two), WAIT) is True
        rest = await collect(stream)  # iterating afterwards gets what followed
    assert tokens(seen) == EXPECTED_TOKENS[:2]
    assert tokens(rest) == EXPECTED_TOKENS[2:]


async def test_raw_dispatch_raises_the_stream_error_and_the_handlers_own() -> None:
    broken = [head("200 OK", SSE_CT, "Transfer-Encoding: chunked"), chunk(token(1)), Pause(0.05),
              RESET]
    async with serve(broken) as server:
        stream = await open_(server.url, "raw")
        seen: list[SSEEvent] = []
        assert isinstance(stream, raw_mod._RawSSEStream)
        with pytest.raises(StreamError):
            await asyncio.wait_for(stream.dispatch_to(keep_in(seen)),
                                   WAIT)
        await stream.aclose()
    assert tokens(seen) == EXPECTED_TOKENS[:1]

    def bug(e: SSEEvent) -> bool:
        raise ZeroDivisionError("a bug in the reader")

    script = [head("200 OK", SSE_CT, "Transfer-Encoding: chunked"), Pause(0.1), chunk(token(1)),
              HOLD]
    async with serve(script) as server:
        stream = await open_(server.url, "raw")
        assert isinstance(stream, raw_mod._RawSSEStream)
        with pytest.raises(ZeroDivisionError):
            await asyncio.wait_for(stream.dispatch_to(bug), WAIT)
        await stream.aclose()


async def test_raw_reads_share_one_buffer_and_each_event_keeps_its_bytes() -> None:
    """Every stream reads into the one shared buffer: what one read parsed must not change
    when the next read (of another stream) overwrites the buffer."""
    script = [head("200 OK", SSE_CT, "Transfer-Encoding: chunked"), chunk(b"data: a"),
              Pause(0.05), chunk(b"bc\n\n"), b"0\r\n\r\n"]
    async with serve(script) as one, serve(script) as two:
        a, b = await open_(one.url, "raw"), await open_(two.url, "raw")
        assert isinstance(a, raw_mod._RawSSEStream)
        assert a.get_buffer(-1) is b.get_buffer(-1)  # type: ignore[attr-defined]
        got = await asyncio.gather(collect(a), collect(b))
    assert [[e.data for e in events] for events in got] == [["abc"], ["abc"]]
