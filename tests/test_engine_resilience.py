"""Connect retries and resumes, against small real servers on loopback.

(The engine's self-check is tested in test_selfcheck.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from sse_tui.engine.engine import LoadEngine
from sse_tui.settings import Settings
from tests.servers import LoopbackServer, sse_head, token_events


class FlakySSEServer(LoopbackServer):
    """Answers the first `failures` requests with 503, then serves a 3-token stream."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.read_request(reader)
        if self.requests <= self.failures:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n"
                         b"Connection: close\r\n\r\nbusy")
        else:
            body = b": connected\n\n" + token_events(1, 3, 3)
            writer.write(sse_head(f"Content-Length: {len(body)}", "Connection: close") + body)
        await writer.drain()
        writer.close()


@pytest.fixture
async def flaky() -> AsyncIterator[FlakySSEServer]:
    async with FlakySSEServer(failures=2) as server:
        yield server


async def test_5xx_is_retried_with_backoff_then_succeeds(flaky: FlakySSEServer) -> None:
    s = Settings(mode="consumer", sse=flaky.url, conversations=1,
                 tokens=3, duration_s=0, run_id="flaky")
    snap = await asyncio.wait_for(LoadEngine(s).run(), 20)
    t = snap.total
    assert flaky.requests == 3
    assert t.errors == {"HTTP 503": 2}
    assert t.tokens_received == 3 and t.tokens_missing == 0
    assert t.conversations_completed == 1
    assert t.connections_opened == 1


async def test_a_conversation_fails_once_its_retry_budget_is_spent() -> None:
    async with FlakySSEServer(failures=10_000) as server:
        s = Settings(mode="consumer", sse=server.url, conversations=1,
                     tokens=3, duration_s=0, retry_budget_s=1.0, run_id="dead")
        t0 = time.monotonic()
        snap = await asyncio.wait_for(LoadEngine(s).run(), 20)
        took = time.monotonic() - t0
    # Backoff with jitter inside a 1 s budget: a handful of attempts, not a tight loop, and
    # the last one no earlier than the budget's end.
    assert 3 <= server.requests <= 15
    assert 1.0 <= took < 5
    assert snap.total.connect_attempts == server.requests
    assert snap.total.errors == {"HTTP 503": server.requests}
    assert snap.total.conversations_incomplete == 1
    (conv,) = snap.conversations
    assert conv.state == "error" and conv.error and "no stream for 1 s" in conv.error
    assert "HTTP 503 from /stream/loadtest-dead-1" in conv.error
    # It never had a stream: a failed first connect, not an outage.
    assert snap.total.stream_outages == 0 and snap.total.establish.count == 0


class SilentThenStreamingServer(LoopbackServer):
    """The first request gets ': connected' and then silence on an open connection (a
    half-open stream); the next gets the three tokens."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.read_request(reader)
        if self.requests == 1:
            # Never another byte: the base class closes this connection at the end.
            writer.write(sse_head("Transfer-Encoding: chunked") + b"d\r\n: connected\n\n\r\n")
            await writer.drain()
            return
        body = token_events(1, 3, 3)
        writer.write(sse_head(f"Content-Length: {len(body)}", "Connection: close") + body)
        await writer.drain()
        writer.close()


async def test_a_silent_stream_is_resumed_after_the_idle_timeout() -> None:
    async with SilentThenStreamingServer() as server:
        s = Settings(mode="consumer", sse=server.url, conversations=1,
                     tokens=3, duration_s=0, idle_timeout_s=0.4, run_id="silent")
        snap = await asyncio.wait_for(LoadEngine(s).run(), 20)
    t = snap.total
    assert server.requests == 2
    assert t.errors == {"idle timeout": 1}
    assert (t.reconnects, t.streams_ended_without_done) == (1, 1)
    assert t.tokens_received == 3 and t.tokens_missing == 0
    assert t.conversations_completed == 1
