"""Connect retries and the engine's self-check, against small real servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from sse_tui.engine.engine import LoadEngine
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings


class FlakySSEServer:
    """Answers the first `failures` requests with 503, then serves a 3-token stream."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        if self.requests <= self.failures:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n"
                         b"Connection: close\r\n\r\nbusy")
        else:
            now = time.time_ns()
            body = b": connected\n\n" + b"".join(
                b'event: token\nid: %d\ndata: {"conversation_id":"x","token":"t","sequence":%d,'
                b'"done":%s,"timestamp":%d}\n\n' % (i, i, b"true" if i == 3 else b"false", now)
                for i in (1, 2, 3))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> FlakySSEServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def flaky() -> AsyncIterator[FlakySSEServer]:
    async with FlakySSEServer(failures=2) as server:
        yield server


async def test_5xx_is_retried_with_backoff_then_succeeds(flaky: FlakySSEServer) -> None:
    s = Settings(mode="consumer", sse=f"http://127.0.0.1:{flaky.port}", conversations=1,
                 tokens=3, duration_s=0, run_id="flaky")
    snap = await asyncio.wait_for(LoadEngine(s).run(), 20)
    t = snap.total
    assert flaky.requests == 3
    assert t.errors == {"HTTP 503": 2}
    assert t.tokens_received == 3 and t.tokens_missing == 0
    assert t.conversations_completed == 1
    assert t.connections_opened == 1


async def test_a_conversation_fails_after_the_retries_run_out() -> None:
    async with FlakySSEServer(failures=100) as server:
        s = Settings(mode="consumer", sse=f"http://127.0.0.1:{server.port}", conversations=1,
                     tokens=3, duration_s=0, run_id="dead")
        snap = await asyncio.wait_for(LoadEngine(s).run(), 20)
    assert server.requests == 4  # CONNECT_ATTEMPTS
    assert snap.total.conversations_incomplete == 1
    (conv,) = snap.conversations
    assert conv.state == "error" and conv.error and "503" in conv.error


async def test_a_blocked_event_loop_raises_the_overload_warning(sandbox: Sandbox) -> None:
    s = Settings(mode="both", redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=2,
                 tokens=1000, delay_ms=5, duration_s=30, run_id="overload")
    engine = LoadEngine(s)
    task = asyncio.ensure_future(engine.run())
    await asyncio.sleep(0.5)
    for _ in range(40):  # something hogging the loop for 15 ms at a time, 40 times
        time.sleep(0.015)
        await asyncio.sleep(0.005)
    health = engine.snapshot().health
    engine.stop()
    final = await asyncio.wait_for(task, 20)
    assert health.loop_lag.p99 > 5
    assert health.warning is not None and "event-loop lag" in health.warning
    # The final verdict covers the whole run, not only its last seconds.
    assert final.health.warning is not None and "event-loop lag" in final.health.warning



class SilentThenStreamingServer:
    """The first request gets ': connected' and then silence on an open connection (a
    half-open stream); the next gets the three tokens."""

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        if self.requests == 1:
            writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n"
                         b"d\r\n: connected\n\n\r\n")
            await writer.drain()
            self._held.append(writer)  # never another byte
            return
        now = time.time_ns()
        body = b"".join(
            b'event: token\nid: %d\ndata: {"conversation_id":"x","token":"t","sequence":%d,'
            b'"done":%s,"timestamp":%d}\n\n' % (i, i, b"true" if i == 3 else b"false", now)
            for i in (1, 2, 3))
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                     + body)
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> SilentThenStreamingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self._held:
            w.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def test_a_silent_stream_is_resumed_after_the_idle_timeout() -> None:
    async with SilentThenStreamingServer() as server:
        s = Settings(mode="consumer", sse=f"http://127.0.0.1:{server.port}", conversations=1,
                     tokens=3, duration_s=0, idle_timeout_s=0.4, run_id="silent")
        snap = await asyncio.wait_for(LoadEngine(s).run(), 20)
    t = snap.total
    assert server.requests == 2
    assert t.errors == {"idle timeout": 1}
    assert (t.reconnects, t.streams_ended_without_done) == (1, 1)
    assert t.tokens_received == 3 and t.tokens_missing == 0
    assert t.conversations_completed == 1
