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

from sse_tui.engine.transport.base import (
    TRANSPORTS,
    SSEStream,
    StreamConnectError,
    StreamError,
    StreamHTTPError,
)
from sse_tui.engine.transport.httpx_client import _HttpxSSEStream, aclose_transports
from sse_tui.engine.transport.raw import _RawSSEStream

__all__ = [
    "TRANSPORTS",
    "SSEStream",
    "StreamConnectError",
    "StreamError",
    "StreamHTTPError",
    "aclose_transports",
    "open_stream",
]


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
