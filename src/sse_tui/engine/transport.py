"""Opening one SSE stream (``GET <base>/stream/<id>``) behind one small interface.

Two interchangeable transports:

- ``"raw"`` (default): a minimal HTTP/1.1 client on ``asyncio.Protocol``. Each socket
  read goes straight into `SSEParser` with one ``time.time_ns()``, so the per-token
  cost is a fraction of a general-purpose client's. It speaks only what a GET of an
  event stream needs: http/https, chunked / Content-Length / close-delimited bodies.
- ``"httpx"``: the same interface over ``httpx.AsyncClient`` + httpx-sse, for setups
  where a full HTTP client matters (proxies from the environment, etc.). httpx-sse
  does not surface comments, so there the stream counts as established when the
  200 response headers arrive, and keep-alive comments are never seen.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import unquote, urlsplit

import httpx
import httpx_sse

from sse_tui.engine.sse import SSEEvent, SSEParser

__all__ = [
    "SSEStream",
    "StreamConnectError",
    "StreamError",
    "StreamHTTPError",
    "aclose_transports",
    "open_stream",
]

TRANSPORTS = ("raw", "httpx")
_ERROR_BODY_BYTES = 200
_ERROR_BODY_WAIT_S = 1.0  # how long a failed response may take to send its body
_CLOSE_WAIT_S = 1.0
_MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_LINE = 4096
# Backpressure: stop reading the socket when this many parsed events wait for the
# consumer, resume when it has caught up. Pausing lets TCP push back on the server.
_PAUSE_AT_EVENTS = 1024
_RESUME_AT_EVENTS = 256


class StreamError(Exception):
    """Opening or reading an SSE stream failed; the message says what to do next."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class StreamConnectError(StreamError):
    """The TCP/TLS connection or the response headers never arrived."""

    retryable = True


class StreamHTTPError(StreamError):
    """The server answered, but not with ``200 text/event-stream``."""

    def __init__(self, url: str, status: int, body: bytes, content_type: str = "") -> None:
        self.url = url
        self.status = status
        self.body = body[:_ERROR_BODY_BYTES]
        super().__init__(_http_error_message(url, status, self.body, content_type))
        self.retryable = status >= 500 or status == 429


def _http_error_message(url: str, status: int, body: bytes, content_type: str) -> str:
    if status == 200:
        hint = (
            f"got Content-Type {content_type!r} instead of text/event-stream; "
            "check that the URL points at the SSE adapter's /stream/<id>"
        )
    elif status == 400:
        hint = "bad request; is the conversation id empty?"
    elif status == 404:
        hint = "not found; check the SSE base URL and its path prefix"
    elif status == 429:
        hint = "rate limited; retry later with backoff"
    elif status >= 500:
        hint = "server error; retry with backoff"
    else:
        hint = "unexpected status"
    text = body.decode("utf-8", "replace").strip()
    return f"GET {url} -> HTTP {status}: {hint}" + (f" (body: {text!r})" if text else "")


class SSEStream(Protocol):
    """An open event stream: iterate for events, ``aclose()`` when done."""

    status: int
    # False where comments (": connected", keep-alives) never reach the iterator; the
    # engine then counts the stream as established at the 200 headers.
    comments_visible: bool

    def __aiter__(self) -> AsyncIterator[SSEEvent]: ...

    async def aclose(self) -> None: ...


async def open_stream(
    url: str,
    *,
    last_event_id: str | None = None,
    connect_timeout: float = 10.0,
    transport: str = "raw",
) -> SSEStream:
    """Connect and return once ``200`` response headers have arrived.

    ``connect_timeout`` bounds the connection *and* the wait for response headers.
    Raises `StreamConnectError` (refused, DNS, TLS, timeout, closed before headers)
    or `StreamHTTPError` (any status other than 200, or a 200 that is not an event
    stream). The caller owns the result and must ``aclose()`` it.
    """
    if last_event_id is not None and any(c in last_event_id for c in "\r\n\0"):
        raise ValueError(f"Last-Event-ID may not contain CR, LF or NUL: {last_event_id!r}")
    if transport == "raw":
        return await _RawSSEStream.open(url, last_event_id, connect_timeout)
    if transport == "httpx":
        return await _HttpxSSEStream.open(url, last_event_id, connect_timeout)
    raise ValueError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")


def _is_event_stream(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


# --------------------------------------------------------------------------- raw


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA store costs milliseconds; one context serves every stream.
    return ssl.create_default_context()


class _Request:
    """Where to connect and the exact request bytes to send."""

    __slots__ = ("host", "port", "raw", "use_tls")

    def __init__(self, url: str, last_event_id: str | None) -> None:
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


class _RawSSEStream(asyncio.Protocol):
    """HTTP/1.1 client protocol that parses SSE directly from ``data_received``.

    Events go into a deque; a waiter future exists only while the consumer is
    actually suspended in ``__anext__``, so a busy stream creates no futures.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str) -> None:
        self.url = url
        self.comments_visible = True
        self.status = 0
        self.headers: dict[str, str] = {}
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._head_buf: bytearray | None = bytearray()  # None once the head is parsed
        self._head_done: asyncio.Future[None] = loop.create_future()
        self._body: _Body = _UntilCloseBody()
        self._parser = SSEParser()
        self._events: deque[SSEEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._eof = False  # no more events will be added
        self._error: StreamError | None = None
        self._closed_by_us = False
        self._connection_lost: asyncio.Future[None] = loop.create_future()
        # For non-200 responses: the start of the body, for the error message.
        self._error_body: bytearray | None = None
        self._error_body_done: asyncio.Future[None] = loop.create_future()

    @classmethod
    async def open(
        cls, url: str, last_event_id: str | None, connect_timeout: float
    ) -> _RawSSEStream:
        request = _Request(url, last_event_id)
        loop = asyncio.get_running_loop()
        stream = cls(loop, url)
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(
                    lambda: stream,
                    request.host,
                    request.port,
                    ssl=_ssl_context() if request.use_tls else None,
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
        if stream.status != 200 or not _is_event_stream(stream.headers.get("content-type", "")):
            body = await stream._read_error_body()
            await stream.aclose()
            raise StreamHTTPError(url, stream.status, body, stream.headers.get("content-type", ""))
        return stream

    # ---- consumer side

    def __aiter__(self) -> _RawSSEStream:
        return self

    async def __anext__(self) -> SSEEvent:
        events = self._events
        while not events:
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
        if self._paused and len(events) <= _RESUME_AT_EVENTS:
            self._paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()
        return events.popleft()

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
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        now_ns = time.time_ns()  # one clock read per socket read, shared by its events
        try:
            if self._head_buf is not None:
                self._on_head_bytes(data, now_ns)
            else:
                self._on_body_bytes(data, now_ns)
        except _BodyError as exc:
            self._fail(StreamError(f"GET {self.url}: malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self._connection_lost.done():
            self._connection_lost.set_result(None)
        if not self._head_done.done():
            self._head_done.set_exception(
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
        if status != 200 or not _is_event_stream(headers.get("content-type", "")):
            self._error_body = bytearray()
        self._head_done.set_result(None)
        if buf or self._body.done:
            self._on_body_bytes(bytes(buf), now_ns)

    def _on_body_bytes(self, data: bytes, now_ns: int) -> None:
        body = self._body.decode(data)
        if self._error_body is not None:
            self._error_body += body
            if len(self._error_body) >= _ERROR_BODY_BYTES or self._body.done:
                self._resolve_error_body()
        elif body:
            events = self._parser.feed(body, now_ns)
            if events:
                self._events.extend(events)
                self._wake()
                if len(self._events) >= _PAUSE_AT_EVENTS and not self._paused:
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

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _send(self, data: bytes) -> None:
        if self._transport is None:
            raise StreamConnectError(f"GET {self.url}: connection closed before the request")
        self._transport.write(data)

    def _fail(self, error: StreamError) -> None:
        if not self._head_done.done():
            self._head_done.set_exception(error)
        elif not self._eof:
            self._error = error
        self._eof = True
        self._wake()
        self._abort()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def _read_error_body(self) -> bytes:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._error_body_done), _ERROR_BODY_WAIT_S)
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
    elif isinstance(exc, ssl.SSLCertVerificationError):
        hint = f"TLS certificate rejected ({exc.verify_message}); use http:// or a trusted cert"
    elif isinstance(exc, ssl.SSLError):
        hint = f"TLS handshake failed ({exc}); is the port really https?"
    else:
        hint = f"{exc.strerror or exc}; check the host name and port"
    return f"GET {url}: {hint}"


def _retryable(exc: OSError) -> bool:
    # A certificate that fails verification will fail the same way next time.
    return not isinstance(exc, ssl.SSLCertVerificationError)


# ------------------------------------------------------------------------- httpx

_HTTPX_CLIENTS: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def _shared_httpx_client() -> httpx.AsyncClient:
    """One AsyncClient per event loop: its pool is bound to the loop that made it."""
    loop = asyncio.get_running_loop()
    client = _HTTPX_CLIENTS.get(loop)
    if client is None or client.is_closed:
        for stale in [other for other in _HTTPX_CLIENTS if other.is_closed()]:
            del _HTTPX_CLIENTS[stale]
        client = httpx.AsyncClient(
            # Hundreds of long-lived streams must not queue behind a pool limit.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            timeout=httpx.Timeout(10.0, read=None),
        )
        _HTTPX_CLIENTS[loop] = client
    return client


async def aclose_transports() -> None:
    """Close the shared httpx client of the running loop (no-op if there is none)."""
    client = _HTTPX_CLIENTS.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


class _HttpxSSEStream:
    """`SSEStream` over httpx + httpx-sse.

    Differences from the raw transport, all inherited from httpx-sse: comments are
    not returned; an event block whose data is empty is skipped (httpx-sse would
    dispatch ``id: 5\\n\\n`` as an empty event, the spec does not, and we cannot tell
    it from ``data:\\n\\n``); ``retry`` is whatever ``int()`` accepts; ``received_ns``
    is taken per event, not per socket read.
    """

    def __init__(self, url: str, response: httpx.Response) -> None:
        self.url = url
        self.comments_visible = False
        self.status = response.status_code
        self._response = response
        self._events = httpx_sse.EventSource(response).aiter_sse()

    @classmethod
    async def open(
        cls, url: str, last_event_id: str | None, connect_timeout: float
    ) -> _HttpxSSEStream:
        client = _shared_httpx_client()
        # Built by hand rather than with aconnect_sse, which forces
        # "Cache-Control: no-store" over the no-cache the protocol asks for.
        headers: dict[str, str | bytes] = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
        }
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id.encode()  # httpx would insist on ASCII
        timeout = httpx.Timeout(connect_timeout, read=None)
        try:
            request = client.build_request("GET", url, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:  # e.g. an unsupported scheme
            raise StreamError(f"cannot open {url!r}: {exc}", retryable=False) from exc
        try:
            async with asyncio.timeout(connect_timeout):
                response = await client.send(request, stream=True)
        except TimeoutError as exc:
            raise StreamConnectError(
                f"GET {url}: no response headers within {connect_timeout:g}s; "
                "check the address, port-forward and that the adapter is up"
            ) from exc
        except (httpx.TransportError, OSError) as exc:
            raise StreamConnectError(f"GET {url}: {exc!r}; is the adapter reachable?") from exc
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not _is_event_stream(content_type):
            body = await _read_start(response)
            await response.aclose()
            raise StreamHTTPError(url, response.status_code, body, content_type)
        return cls(url, response)

    def __aiter__(self) -> _HttpxSSEStream:
        return self

    async def __anext__(self) -> SSEEvent:
        while True:
            try:
                sse = await self._events.__anext__()
            except httpx.HTTPError as exc:
                raise StreamError(f"GET {self.url}: stream broke ({exc!r}); reconnect") from exc
            if sse.data:
                event = sse.event or "message"
                return SSEEvent(event, sse.data, sse.id or None, sse.retry, False, time.time_ns())

    async def aclose(self) -> None:
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            await self._events.aclose()
        await self._response.aclose()


async def _read_start(response: httpx.Response) -> bytes:
    """Up to ~200 bytes of a failed response's body, waiting at most a second."""
    body = b""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_ERROR_BODY_WAIT_S):
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) >= _ERROR_BODY_BYTES:
                    break
    return body[:_ERROR_BODY_BYTES]
