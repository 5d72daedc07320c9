"""The "httpx" transport: `SSEStream` over ``httpx.AsyncClient`` + httpx-sse.

For setups where a full HTTP client matters (proxies from the environment, etc.).
httpx-sse does not surface comments, so there the stream counts as established when the
200 response headers arrive, and keep-alive comments are never seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import httpx_sse

from sse_tui.engine.sse import SSEEvent
from sse_tui.engine.transport.base import (
    ERROR_BODY_BYTES,
    ERROR_BODY_WAIT_S,
    StreamConnectError,
    StreamError,
    StreamHTTPError,
    is_event_stream,
)

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
        headers: list[tuple[bytes, bytes]] = [
            (b"Accept", b"text/event-stream"),
            (b"Cache-Control", b"no-cache"),
        ]
        if last_event_id:  # as bytes: httpx would insist on ASCII for a str
            headers.append((b"Last-Event-ID", last_event_id.encode()))
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
        if response.status_code != 200 or not is_event_stream(content_type):
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
        async with asyncio.timeout(ERROR_BODY_WAIT_S):
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) >= ERROR_BODY_BYTES:
                    break
    return body[:ERROR_BODY_BYTES]
