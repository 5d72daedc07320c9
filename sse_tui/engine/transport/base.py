"""The transport interface: `SSEStream`, the errors, and what both transports share."""

from __future__ import annotations

import errno
import ssl
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Protocol
from urllib.parse import urlsplit

from sse_tui.engine.sse import SSEEvent

# Imported now: when descriptors run out, importing it then would fail too.
resource: ModuleType | None
try:
    import resource
except ImportError:  # pragma: no cover (Windows)
    resource = None

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
        self.content_type = content_type
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

    @property
    def retry_ms(self) -> int | None:
        """The latest `retry:` field the server sent on this stream, if any."""
        ...

    def __aiter__(self) -> AsyncIterator[SSEEvent]: ...

    async def aclose(self) -> None: ...


def is_event_stream(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


# -- what went wrong, for people: a bounded set of kinds, each with one short detail ------------

_EMFILE = (errno.EMFILE, errno.ENFILE)


def _causes(e: BaseException) -> list[BaseException]:
    """The exception and what it was raised from (or during), a few levels deep."""
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and len(chain) < 8 and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def _where(url: str) -> str:
    """`/stream/<id>` of a stream URL: the part that tells streams apart."""
    parts = urlsplit(url)
    return parts.path or url


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url


def error_kind(e: BaseException, url: str) -> tuple[str, str]:
    """(kind, detail) of a failed attempt or a broken stream.

    The kind is one of a small fixed set (`HTTP <status>` aside, which has at most a few
    hundred values), so `errors_by_kind` stays readable; the detail is one short line that
    says what happened to which stream, e.g. `HTTP 404 from /stream/loadtest-1-1`."""
    if isinstance(e, StreamHTTPError):
        if e.status == 200:
            ctype = e.content_type.partition(";")[0].strip() or "(none)"
            return "bad content type", f"Content-Type {ctype} from {_where(url)}"
        return f"HTTP {e.status}", f"HTTP {e.status} from {_where(url)}"
    chain = _causes(e)
    for c in chain:
        if isinstance(c, OSError) and c.errno in _EMFILE:
            # Our own process ran out of descriptors: neither the server's fault nor load.
            return "too many open files", (
                f"too many open files in sse-tui itself{_fd_limit()}: raise `ulimit -n` or "
                "run fewer conversations per process")
    for c in chain:
        if isinstance(c, ConnectionRefusedError):
            return "connection refused", f"connection refused by {_host(url)}"
        if isinstance(c, ssl.SSLError):
            return "TLS", f"TLS with {_host(url)}: {_first_line(c)}"
        if isinstance(c, TimeoutError):
            return "connect timeout", f"no response headers from {_host(url)} in time"
    text = _first_line(e)
    if "before response headers" in text or "before the request" in text:
        return "closed before headers", f"{_host(url)} closed the connection before " \
            "answering"
    if isinstance(e, StreamConnectError):
        return "connect", text.replace(f"GET {url}: ", f"{_where(url)}: ")
    return "stream broken", text.replace(f"GET {url}: ", f"{_where(url)}: ")


def _fd_limit() -> str:
    if resource is None:  # pragma: no cover (Windows)
        return ""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return "" if soft == resource.RLIM_INFINITY else f" (limit {soft})"


def _first_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:160]
