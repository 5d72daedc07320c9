"""The "httpx" transport: `SSEStream` over ``httpx.AsyncClient`` + httpx-sse.

For setups where a full HTTP client matters (proxies from the environment, etc.).
httpx-sse does not surface comments, so there the stream counts as established when the
200 response headers arrive, and keep-alive comments are never seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import cast

import httpx
import httpx_sse

from sse_tui.credentials import redact_url
from sse_tui.engine.sse import DEFAULT_MAX_EVENT_BYTES, EventTooLarge, SSEEvent
from sse_tui.engine.transport.base import (
    ERROR_BODY_BYTES,
    ERROR_BODY_WAIT_S,
    StreamConnectError,
    StreamError,
    StreamHTTPError,
    is_event_stream,
)
from sse_tui.engine.transport.config import StreamConfig
from sse_tui.engine.transport.tls import (
    TLSOptions,
    TLSSetupError,
    client_context,
    describe_tls_error,
)

_HTTPX_CLIENTS: dict[tuple[asyncio.AbstractEventLoop, TLSOptions], httpx.AsyncClient] = {}


def _shared_httpx_client(tls: TLSOptions | None = None) -> httpx.AsyncClient:
    """One AsyncClient per event loop (its pool is bound to the loop that made it) and TLS
    options. Raises TLSSetupError for a --cacert/--cert/--key that does not load."""
    tls = tls or TLSOptions()
    loop = asyncio.get_running_loop()
    client = _HTTPX_CLIENTS.get((loop, tls))
    if client is None or client.is_closed:
        for stale in [key for key in _HTTPX_CLIENTS if key[0].is_closed()]:
            del _HTTPX_CLIENTS[stale]
        client = httpx.AsyncClient(
            # Hundreds of long-lived streams must not queue behind a pool limit.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            timeout=httpx.Timeout(10.0, read=None),
            # Without TLS options, httpx's own default (its CA bundle, verified).
            verify=True if tls == TLSOptions() else client_context(tls),
        )
        _HTTPX_CLIENTS[(loop, tls)] = client
    return client


async def aclose_transports() -> None:
    """Close the shared httpx clients of the running loop (no-op if there are none)."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _HTTPX_CLIENTS if k[0] is loop]:
        await _HTTPX_CLIENTS.pop(key).aclose()


class _HttpxSSEStream:
    """`SSEStream` over httpx + httpx-sse.

    Differences from the raw transport, all inherited from httpx-sse: comments are
    not returned; an event block whose data is empty is skipped (httpx-sse would
    dispatch ``id: 5\\n\\n`` as an empty event, the spec does not, and we cannot tell
    it from ``data:\\n\\n``); ``retry`` is whatever ``int()`` accepts; ``received_ns``
    is taken per event, not per socket read.
    """

    def __init__(self, url: str, response: httpx.Response,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.url = url
        self.comments_visible = False
        self.status = response.status_code
        self.retry_ms: int | None = None
        self._response = response
        # httpx-sse buffers a line, and an event's lines, without limit: it reads the body
        # through _CappedBody, which raises EventTooLarge once the text since the last blank
        # line passes the cap, so it never holds much more than the cap.
        capped = cast(httpx.Response, _CappedBody(response, max_event_bytes))
        self._events = httpx_sse.EventSource(capped).aiter_sse()

    @classmethod
    async def open(
        cls, url: str, last_event_id: str | None, connect_timeout: float,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, config: StreamConfig | None = None,
    ) -> _HttpxSSEStream:
        config = config or StreamConfig(transport="httpx")
        real_url, url = url, redact_url(url)  # `url` is only shown from here on
        try:
            client = _shared_httpx_client(config.tls)
        except TLSSetupError as exc:
            raise StreamError(str(exc), retryable=False) from None
        # Built by hand rather than with aconnect_sse, which forces
        # "Cache-Control: no-store" over the no-cache the protocol asks for.
        headers: list[tuple[bytes, bytes]] = [
            (b"Accept", b"text/event-stream"),
            (b"Cache-Control", b"no-cache"),
        ]
        if last_event_id:  # as bytes: httpx would insist on ASCII for a str
            headers.append((b"Last-Event-ID", last_event_id.encode()))
        headers += [(name.encode(), value.encode()) for name, value in config.headers]
        timeout = httpx.Timeout(connect_timeout, read=None)
        try:
            request = client.build_request("GET", real_url, headers=headers, timeout=timeout)
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
            tls_problem = describe_tls_error(exc)
            if tls_problem is not None:
                # A certificate that fails verification will fail the same way next time.
                raise StreamConnectError(f"GET {url}: {tls_problem}", retryable=(
                    "verify failed" not in tls_problem)) from exc
            raise StreamConnectError(
                redact_url(f"GET {url}: {exc!r}; is the adapter reachable?")) from exc
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not is_event_stream(content_type):
            body = await _read_start(response)
            await response.aclose()
            raise StreamHTTPError(url, response.status_code, body, content_type)
        return cls(url, response, max_event_bytes)

    def __aiter__(self) -> _HttpxSSEStream:
        return self

    async def __anext__(self) -> SSEEvent:
        while True:
            try:
                sse = await self._events.__anext__()
            except httpx.HTTPError as exc:
                raise StreamError(f"GET {self.url}: stream broke ({exc!r}); reconnect") from exc
            if sse.retry is not None:
                self.retry_ms = sse.retry
            if sse.data:
                event = sse.event or "message"
                return SSEEvent(event, sse.data, sse.id or None, sse.retry, False, time.time_ns())

    async def aclose(self) -> None:
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            await self._events.aclose()
        await self._response.aclose()


class _CappedBody:
    """What httpx-sse reads of a response (its headers and its text), with the event size cap:
    the text since the last blank line (the end of the last event) may not pass the cap.
    Line ends are normalised to count, so the figure is within a few characters of the bytes."""

    def __init__(self, response: httpx.Response, cap: int) -> None:
        self.headers = response.headers
        self._response = response
        self._cap = cap

    async def aiter_text(self) -> AsyncIterator[str]:
        since_blank = 0
        tail = ""  # the end of the previous piece: a blank line may straddle two pieces
        async for text in self._response.aiter_text():
            joined = (tail + text).replace("\r\n", "\n").replace("\r", "\n")
            end = joined.rfind("\n\n")
            since_blank = len(joined) - end - 2 if end >= 0 else since_blank + len(text)
            if since_blank > self._cap:
                raise EventTooLarge(
                    f"an event of more than {self._cap} bytes "
                    f"(the cap is --max-event-bytes {self._cap})")
            tail = joined[-2:]
            yield text


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
