"""Small HTTP servers on loopback for tests, and the bytes they write.

`LoopbackServer` binds 127.0.0.1 on a free port and closes within a bound: it closes the
connections it still holds and cancels its helper tasks, so that `wait_closed()` (which on
newer Pythons waits for every connection) cannot hang a test. A subclass writes `handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Mapping
from typing import Any, Self

import orjson

HEAD_END = b"\r\n\r\n"
READ_HEAD_S = 10.0  # a client that sends no request line within this is a broken test
CLOSE_S = 5.0


class LoopbackServer(ABC):
    """An async context manager serving `handle(reader, writer)` on 127.0.0.1:`port`."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.port = 0
        self._tls = tls
        self._server: asyncio.Server | None = None
        self.requests = 0  # request heads read with `read_request`
        self.heads: list[bytes] = []
        # Every connection, kept until close: a handler may return and leave its stream open.
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @abstractmethod
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one connection."""

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` beside the handler (e.g. one direction of a proxy); cancelled on close."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def read_request(self, reader: asyncio.StreamReader,
                           timeout: float = READ_HEAD_S) -> bytes:
        """`read_head`, counted in `requests` and kept in `heads`."""
        head = await read_head(reader, timeout)
        self.requests += 1
        self.heads.append(head)
        return head

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await self.handle(reader, writer)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for w in self._writers:
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), CLOSE_S)
        self._server = None


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction of a proxy: copy until EOF, a broken connection or the server's close
    (which cancels it), then close `writer`."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.CancelledError):  # ssl.SSLError is an OSError
        pass
    finally:
        writer.close()


async def read_head(reader: asyncio.StreamReader, timeout: float = READ_HEAD_S) -> bytes:
    """The request line and headers, through the blank line; TimeoutError past `timeout`."""
    return await asyncio.wait_for(reader.readuntil(HEAD_END), timeout)


def sse_head(*headers: str) -> bytes:
    """A 200 text/event-stream response head with `headers` after the Content-Type."""
    lines = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def token_event(seq: int, *, done: bool = False, timestamp: int | None = None,
                extra: Mapping[str, object] | None = None) -> bytes:
    """One `event: token` with id `seq`; `extra` fields are added to (or replace) the
    payload's."""
    payload: dict[str, object] = {"token": "t", "sequence": seq, "done": done,
                                  "timestamp": time.time_ns() if timestamp is None else timestamp}
    payload.update(extra or {})
    return b"event: token\nid: %d\ndata: %s\n\n" % (seq, orjson.dumps(payload))


def token_events(first: int, last: int, total: int, timestamp: int | None = None) -> bytes:
    """Tokens `first`..`last` of a `total`-token conversation (the last one done), one time."""
    now = time.time_ns() if timestamp is None else timestamp
    return b"".join(token_event(i, done=i == total, timestamp=now)
                    for i in range(first, last + 1))
