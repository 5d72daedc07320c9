"""The transport interface: `SSEStream`, the errors, and what both transports share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from sse_tui.engine.sse import SSEEvent

TRANSPORTS = ("raw", "httpx")
ERROR_BODY_BYTES = 200
ERROR_BODY_WAIT_S = 1.0  # how long a failed response may take to send its body


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
        self.body = body[:ERROR_BODY_BYTES]
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


def is_event_stream(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"
