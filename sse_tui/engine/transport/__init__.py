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

from sse_tui.engine.sse import DEFAULT_MAX_EVENT_BYTES
from sse_tui.engine.transport.base import (
    TRANSPORTS,
    SSEStream,
    StreamConnectError,
    StreamError,
    StreamHTTPError,
)
from sse_tui.engine.transport.config import StreamConfig
from sse_tui.engine.transport.httpx_client import _HttpxSSEStream, aclose_transports
from sse_tui.engine.transport.raw import _RawSSEStream

__all__ = [
    "TRANSPORTS",
    "SSEStream",
    "StreamConfig",
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
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    config: StreamConfig | None = None,
) -> SSEStream:
    """Connect and return once ``200`` response headers have arrived.

    ``connect_timeout`` bounds the connection *and* the wait for response headers.
    Raises `StreamConnectError` (refused, DNS, TLS, timeout, closed before headers)
    or `StreamHTTPError` (any status other than 200, or a 200 that is not an event
    stream). The caller owns the result and must ``aclose()`` it. Iterating it raises
    `EventTooLarge` for an event (or line) over ``max_event_bytes``.

    ``config`` (the engine's, made once per run) gives the transport, the request headers
    and the TLS options; without it, ``transport`` with no extra headers and the system's CAs.
    """
    if last_event_id is not None and any(c in last_event_id for c in "\r\n\0"):
        raise ValueError(f"Last-Event-ID may not contain CR, LF or NUL: {last_event_id!r}")
    if config is None:
        config = StreamConfig(transport=transport)
    if config.transport == "raw":
        return await _RawSSEStream.open(url, last_event_id, connect_timeout, max_event_bytes,
                                        config)
    if config.transport == "httpx":
        return await _HttpxSSEStream.open(url, last_event_id, connect_timeout,
                                          max_event_bytes, config)
    raise ValueError(
        f"unknown transport {config.transport!r}; choose one of {', '.join(TRANSPORTS)}")
