"""The "raw" transport: a minimal HTTP/1.1 client on ``asyncio.Protocol``.

Each socket read goes straight into `SSEParser` with one ``time.time_ns()``, so the
per-token cost is a fraction of a general-purpose client's. It speaks only what a GET of
an event stream needs: http/https, chunked / Content-Length / close-delimited bodies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import unquote, urlsplit

from sse_tui.credentials import redact_url
from sse_tui.engine.sse import DEFAULT_MAX_EVENT_BYTES, EventTooLarge, SSEEvent, SSEParser
from sse_tui.engine.transport.base import (
    ERROR_BODY_BYTES,
    ERROR_BODY_WAIT_S,
    StreamConnectError,
    StreamError,
    StreamHTTPError,
    is_event_stream,
)
from sse_tui.engine.transport.config import StreamConfig
from sse_tui.engine.transport.tls import TLSSetupError, client_context, describe_tls_error

_CLOSE_WAIT_S = 1.0
_MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_LINE = 4096
# Backpressure: stop reading the socket when this many parsed events wait for the
# consumer, resume when it has caught up. Pausing lets TCP push back on the server.
_PAUSE_AT_EVENTS = 1024
_RESUME_AT_EVENTS = 256
# Every stream reads into this one buffer (asyncio.BufferedProtocol). With a plain Protocol,
# asyncio's transport calls recv(256 KiB) and CPython allocates a 256 KiB bytes object for
# each read and shrinks it: ~17 µs a read against ~2.5 µs for recv_into(), measured on this
# machine with token-sized messages, and one read per token per stream. Sharing it is safe:
# the transport fills it and calls buffer_updated() at once, in one callback of one thread.
_READ_BUFFER_BYTES = 64 * 1024
_read_buffer = memoryview(bytearray(_READ_BUFFER_BYTES))


class _Request:
    """Where to connect and the exact request bytes to send."""

    __slots__ = ("host", "port", "raw", "use_tls")

    def __init__(self, url: str, last_event_id: str | None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise StreamError(
                f"cannot open {url!r}: expected http://host[:port]/path or https://…",
                retryable=False,
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise StreamError(f"bad port in {url!r}: {exc}", retryable=False) from exc
        self.use_tls = scheme == "https"
        self.host = parts.hostname  # IPv6 literal without brackets, as sockets want it
        self.port = port or (443 if self.use_tls else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.netloc.rpartition('@')[2]}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
            # Compression would defeat per-event reads and is pointless for tokens.
            "Accept-Encoding: identity",
            "User-Agent: sse-tui",
        ]
        if parts.username is not None:
            creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            lines.append("Authorization: Basic " + base64.b64encode(creds.encode()).decode())
        if last_event_id:
            lines.append(f"Last-Event-ID: {last_event_id}")
        # --header: checked when read (a token name, no CR/LF/NUL in the value).
        lines += [f"{name}: {value}" for name, value in headers]
        self.raw = ("\r\n".join(lines) + "\r\n\r\n").encode()


class _BodyError(Exception):
    """The response body broke HTTP framing."""


class _ChunkedBody:
    """Incremental ``Transfer-Encoding: chunked`` decoder.

    Any byte may be the last of a read: size lines, extensions, CRLFs and trailers
    can all arrive in pieces, so everything not yet complete is kept in ``_buf``.
    """

    __slots__ = ("_buf", "_remaining", "_state", "done")
    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._buf = b""
        self._remaining = 0
        self._state = self._SIZE
        self.done = False

    def decode(self, data: bytes) -> bytes:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        elif self._state == self._SIZE:
            whole = _one_whole_chunk(data)
            if whole is not None:
                return whole
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state == self._DATA:
                take = min(self._remaining, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = self._DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                if end - pos > _MAX_CHUNK_LINE:
                    raise _BodyError("chunk size line too long")
                self._buf = data[pos:]
                break
            self._on_line(data[pos:newline].rstrip(b"\r"))
            pos = newline + 1
        return out[0] if len(out) == 1 else b"".join(out)

    def _on_line(self, line: bytes) -> None:
        if self._state == self._SIZE:
            size = line.partition(b";")[0].strip()  # drop chunk extensions
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                raise _BodyError(f"bad chunk size line {line[:40]!r}")
            self._remaining = int(size, 16)
            self._state = self._DATA if self._remaining else self._TRAILER
        elif self._state == self._DATA_END:
            if line:
                raise _BodyError("chunk data longer than its declared size")
            self._state = self._SIZE
        elif not line:  # the blank line that ends the trailer section
            self.done = True


_HEX_DIGITS = b"0123456789abcdefABCDEF"


def _one_whole_chunk(data: bytes) -> bytes | None:
    """The data of `data` when it is exactly one complete non-empty chunk, `<hex>\r\n<data>\r\n`
    with no extension: what a streaming server writes per flush, so nearly every read of a
    token stream. None for anything else, which the general path then takes."""
    nl = data.find(b"\r\n", 0, 18)
    if nl <= 0:
        return None
    size_hex = data[:nl]
    if size_hex.strip(_HEX_DIGITS):  # not hex digits alone (an extension, a sign, spaces)
        return None
    end = nl + 2 + int(size_hex, 16)
    if end == nl + 2 or len(data) != end + 2 or data[end:] != b"\r\n":
        return None
    return data[nl + 2:end]


class _LengthBody:
    """A body delimited by ``Content-Length``."""

    __slots__ = ("_remaining", "done")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self.done = length == 0

    def decode(self, data: bytes) -> bytes:
        if len(data) >= self._remaining:
            data = data[: self._remaining]
            self.done = True
        self._remaining -= len(data)
        return data


class _UntilCloseBody:
    """A body that ends when the server closes the connection."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def decode(self, data: bytes) -> bytes:
        return data


_Body = _ChunkedBody | _LengthBody | _UntilCloseBody


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers (repeats joined with ", ")."""
    status_line, *header_lines = head.decode("latin-1").splitlines()
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not code.isdigit():
        raise _BodyError(f"not an HTTP response: {status_line[:60]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if colon:
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(code), headers


def _body_for(status: int, headers: dict[str, str]) -> _Body:
    if status in (204, 304):
        return _LengthBody(0)
    codings = headers.get("transfer-encoding", "")
    if codings and codings.rsplit(",", 1)[-1].strip().lower() == "chunked":
        return _ChunkedBody()
    length = headers.get("content-length", "")
    if length.isdigit():
        return _LengthBody(int(length))
    return _UntilCloseBody()


def _find_head_end(buf: bytearray) -> tuple[int, int]:
    """(end of head, start of body), or (-1, -1) while the head is incomplete."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")  # tolerated: some test servers end lines with bare LF
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, lf + 2
    if crlf >= 0:
        return crlf, crlf + 4
    return -1, -1


class _RawSSEStream(asyncio.BufferedProtocol):
    """HTTP/1.1 client protocol that parses SSE directly from ``data_received``.

    Two ways to read it. Iterating: events go into a deque; a waiter future exists only
    while the consumer is actually suspended in ``__anext__``, so a busy stream creates no
    futures. `dispatch_to(handler)`: each event is handed to the handler inside
    ``data_received``, so a token costs no queueing, no future and no task switch at all
    (the engine's reader uses it; ~3 µs a token less than iterating).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.url = url
        self.comments_visible = True
        self.status = 0
        self.headers: dict[str, str] = {}
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._head_buf: bytearray | None = bytearray()  # None once the head is parsed
        self._head_done: asyncio.Future[None] = loop.create_future()
        self._body: _Body = _UntilCloseBody()
        self._parser = SSEParser(max_event_bytes)
        # Events parsed and not yet read; made when first needed and dropped once a
        # dispatch_to() handler has drained it (an empty deque is ~760 B, 10 000 streams).
        self._events: deque[SSEEvent] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._eof = False  # no more events will be added
        # Raised to the reader once the events before it are read: a StreamError, or
        # EventTooLarge (an event past the cap; nothing beyond the cap was buffered).
        self._error: StreamError | EventTooLarge | None = None
        self._closed_by_us = False
        self._connection_lost: asyncio.Future[None] = loop.create_future()
        # For non-200 responses: the start of the body, for the error message.
        self._error_body: bytearray | None = None
        self._error_body_done: asyncio.Future[None] = loop.create_future()
        # dispatch_to(): the handler, and what its caller awaits (True: the handler asked to
        # stop; False: the stream ended; an exception: the stream's error or the handler's).
        self._handler: Callable[[SSEEvent], bool] | None = None
        self._dispatched: asyncio.Future[bool] | None = None

    @classmethod
    async def open(
        cls, url: str, last_event_id: str | None, connect_timeout: float,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, config: StreamConfig | None = None,
    ) -> _RawSSEStream:
        config = config or StreamConfig()
        request = _Request(url, last_event_id, config.headers)
        try:
            tls = client_context(config.tls) if request.use_tls else None
        except TLSSetupError as exc:
            raise StreamError(str(exc), retryable=False) from None
        url = redact_url(url)  # from here on the URL is only shown: no password in it
        loop = asyncio.get_running_loop()
        stream = cls(loop, url, max_event_bytes)
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(
                    lambda: stream,
                    request.host,
                    request.port,
                    ssl=tls,
                    server_hostname=request.host if request.use_tls else None,
                )
                stream._send(request.raw)
                await stream._head_done
        except TimeoutError as exc:
            stream._abort()
            raise StreamConnectError(
                f"GET {url}: no response headers within {connect_timeout:g}s; "
                "check the address, port-forward and that the adapter is up"
            ) from exc
        except OSError as exc:
            stream._abort()
            raise StreamConnectError(
                _connect_error_message(url, exc), retryable=_retryable(exc)
            ) from exc
        except BaseException:
            stream._abort()
            raise
        if stream.status != 200 or not is_event_stream(stream.headers.get("content-type", "")):
            body = await stream._read_error_body()
            await stream.aclose()
            raise StreamHTTPError(url, stream.status, body, stream.headers.get("content-type", ""))
        stream.headers = {}  # checked; not kept for the stream's life (~1 KB each)
        return stream

    # ---- consumer side

    @property
    def retry_ms(self) -> int | None:
        return self._parser.retry_ms

    def __aiter__(self) -> _RawSSEStream:
        return self

    async def __anext__(self) -> SSEEvent:
        while not self._events:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._eof:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        events = self._events
        if self._paused and len(events) <= _RESUME_AT_EVENTS:
            self._resume()
        return events.popleft()

    async def dispatch_to(self, handler: Callable[[SSEEvent], bool]) -> bool:
        """Hand every event to `handler` as it is parsed (inside ``data_received``) until it
        returns True (-> True; the events after it stay queued for iteration) or the stream
        ends (-> False). Raises what iterating would raise, and whatever `handler` raised."""
        while self._events:  # parsed before the handler was given: theirs first, in order
            if handler(self._events.popleft()):
                return True
        self._events = None  # from here on the handler takes every event
        self._handler = handler
        self._dispatched = self._loop.create_future()
        self._resume()
        self._settle_dispatch()
        try:
            return await self._dispatched
        finally:
            self._handler = None
            self._dispatched = None

    async def aclose(self) -> None:
        """Close the socket and wait (briefly) until it is really closed."""
        self._closed_by_us = True
        self._eof = True
        self._wake()
        if self._transport is None:
            return
        self._abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connection_lost), _CLOSE_WAIT_S)

    # ---- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports have asyncio.Transport's methods
        # without being its subclasses.
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_read_buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        now_ns = time.time_ns()  # one clock read per socket read, shared by its events
        try:
            if self._head_buf is not None:
                self._on_head_bytes(data, now_ns)
            else:
                self._on_body_bytes(data, now_ns)
        except _BodyError as exc:
            self._fail(StreamError(f"GET {self.url}: malformed HTTP response: {exc}"))
        except EventTooLarge as exc:
            self._fail(exc)  # and stop reading: the rest of that event is never buffered

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self._connection_lost.done():
            self._connection_lost.set_result(None)
        if not self._head_done.done():
            self._fail_head(
                StreamConnectError(
                    f"GET {self.url}: connection closed before response headers"
                    + (f" ({exc})" if exc else "")
                    + "; retry, and check the adapter logs if it persists"
                )
            )
        self._resolve_error_body()
        if not self._eof:
            self._eof = True
            clean_end = exc is None and isinstance(self._body, _UntilCloseBody)
            if not clean_end and not self._closed_by_us and self._error is None:
                self._error = StreamError(self._lost_message(exc), retryable=True)
        self._wake()

    # ---- internals

    def _on_head_bytes(self, data: bytes, now_ns: int) -> None:
        buf = self._head_buf
        assert buf is not None
        buf += data
        while True:
            head_end, body_start = _find_head_end(buf)
            if head_end < 0:
                if len(buf) > _MAX_HEAD_BYTES:
                    raise _BodyError("response headers larger than 64 KiB")
                return
            status, headers = _parse_head(bytes(buf[:head_end]))
            del buf[:body_start]
            if status >= 200:
                break
            # 1xx interim responses (100 Continue, 103 Early Hints) precede the real one.
        self._head_buf = None
        self.status, self.headers = status, headers
        self._body = _body_for(status, headers)
        if status != 200 or not is_event_stream(headers.get("content-type", "")):
            self._error_body = bytearray()
        if not self._head_done.done():  # else open() gave up (timed out, cancelled)
            self._head_done.set_result(None)
        if buf or self._body.done:
            self._on_body_bytes(bytes(buf), now_ns)

    def _on_body_bytes(self, data: bytes, now_ns: int) -> None:
        body = self._body.decode(data)
        if self._error_body is not None:
            self._error_body += body
            if len(self._error_body) >= ERROR_BODY_BYTES or self._body.done:
                self._resolve_error_body()
        elif body:
            events = self._parser.feed(body, now_ns)
            if events:
                if self._handler is not None:
                    self._dispatch(events)
                else:
                    queued = self._queue()
                    queued.extend(events)
                    self._wake()
                    if len(queued) >= _PAUSE_AT_EVENTS and not self._paused:
                        self._pause()
        if self._body.done:
            # A complete response is a normal end of stream.
            self._eof = True
            self._wake()
            if self._transport is not None:
                self._transport.close()

    def _pause(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._paused = True
            self._transport.pause_reading()

    def _queue(self) -> deque[SSEEvent]:
        if self._events is None:
            self._events = deque()
        return self._events

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    def _dispatch(self, events: list[SSEEvent]) -> None:
        handler = self._handler
        assert handler is not None and self._dispatched is not None
        for i, ev in enumerate(events):
            try:
                stop = handler(ev)
            except Exception as exc:  # the reader's own bug: raised where it awaits
                self._handler = None
                if not self._dispatched.done():
                    self._dispatched.set_exception(exc)
                return
            if stop:
                self._handler = None
                self._queue().extend(events[i + 1:])
                if not self._dispatched.done():
                    self._dispatched.set_result(True)
                return

    def _settle_dispatch(self) -> None:
        """The stream ended (or broke) under a handler: tell the caller, as iterating would."""
        done = self._dispatched
        if done is None or done.done() or self._handler is None:
            return
        if self._error is not None:
            error, self._error = self._error, None
            self._handler = None
            done.set_exception(error)
        elif self._eof:
            self._handler = None
            done.set_result(False)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._dispatched is not None:
            self._settle_dispatch()

    def _send(self, data: bytes) -> None:
        if self._transport is None:
            raise StreamConnectError(f"GET {self.url}: connection closed before the request")
        self._transport.write(data)

    def _fail(self, error: StreamError | EventTooLarge) -> None:
        if not self._head_done.done():
            self._fail_head(error)
        elif not self._eof:
            self._error = error
        self._eof = True
        self._wake()
        self._abort()

    def _fail_head(self, error: Exception) -> None:
        self._head_done.set_exception(error)
        # Marked as seen: open() raises it if it still waits, and when it no longer does (a
        # connect cancelled at the end of a run) asyncio must not log it as never retrieved.
        self._head_done.exception()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def _read_error_body(self) -> bytes:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._error_body_done), ERROR_BODY_WAIT_S)
        return bytes(self._error_body or b"")

    def _resolve_error_body(self) -> None:
        if not self._error_body_done.done():
            self._error_body_done.set_result(None)

    def _lost_message(self, exc: Exception | None) -> str:
        why = f"connection lost ({exc})" if exc else "server closed before the end of the response"
        resume = self._parser.last_event_id
        hint = f"reconnect with Last-Event-ID: {resume}" if resume else "reconnect"
        return f"GET {self.url}: {why}; {hint}"


def _connect_error_message(url: str, exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        hint = "connection refused; is the adapter running / the port-forward up?"
    elif isinstance(exc, ssl.SSLError):
        hint = describe_tls_error(exc) or f"TLS handshake failed ({exc})"
    else:
        hint = f"{exc.strerror or exc}; check the host name and port"
    return f"GET {url}: {hint}"


def _retryable(exc: OSError) -> bool:
    # A certificate that fails verification will fail the same way next time.
    return not isinstance(exc, ssl.SSLCertVerificationError)
