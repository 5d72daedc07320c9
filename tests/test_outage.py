"""Riding out an adapter restart (issue 14): conversations wait with backoff inside the retry
budget, resume with Last-Event-ID, publishing goes on meanwhile, and the report shows an
outage, not failed users."""

from __future__ import annotations

import asyncio

from sse_tui.engine.engine import LoadEngine
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import ConversationState, StatsSnapshot
from tests.conftest import until
from tests.servers import LoopbackServer, pipe, read_head

CONVERSATIONS = 4
TOKENS = 150  # at 20-30 ms each: ~4 s per conversation
DOWN_S = 1.5


def outage_settings(sse: str, sb: Sandbox, run_id: str) -> Settings:
    return Settings(mode="both", redis=sb.redis_address, sse=sse, conversations=CONVERSATIONS,
                    tokens=TOKENS, delay_ms=20, duration_s=0, run_id=run_id, grace_s=1.0,
                    retry_budget_s=30)


async def run_with_restart(engine: LoadEngine, sb: Sandbox) -> StatsSnapshot:
    task = asyncio.ensure_future(engine.run())
    # Every conversation is streaming before the adapter goes away.
    await until(lambda: engine.phase.tokens_received >= CONVERSATIONS * 20, timeout=15,
                what="tokens on every stream")
    await asyncio.to_thread(sb.restart_adapter, DOWN_S)
    return await asyncio.wait_for(task, 40)


def assert_rode_it_out(snap: StatsSnapshot) -> None:
    t = snap.total
    # The producer published every token: nobody stopped publishing while readers waited.
    assert t.tokens_published == CONVERSATIONS * TOKENS
    assert t.conversations_started == CONVERSATIONS
    # Not failed users: every conversation resumed and got its done token.
    for conv in snap.conversations:
        assert conv.state in (ConversationState.DONE, ConversationState.INCOMPLETE), conv
        assert conv.reconnects >= 1 and conv.received > 0
        assert conv.received + conv.missing == TOKENS, conv
    assert t.conversations_completed + t.conversations_incomplete == CONVERSATIONS
    assert "no SSE stream" not in (snap.fatal_error or "")
    # The outage as such: one per conversation, each at least the time the adapter was down.
    assert t.stream_outages == CONVERSATIONS
    assert CONVERSATIONS * DOWN_S * 1000 <= t.outage_ms <= CONVERSATIONS * 12_000
    # What the restarted adapter never saw (published while it was down) is missing, exactly.
    assert t.tokens_received - t.tokens_duplicated + t.tokens_missing == t.tokens_published


async def test_conversations_ride_out_an_adapter_restart() -> None:
    with Sandbox() as sb:
        engine = LoadEngine(outage_settings(sb.sse_url, sb, "restart"))
        snap = await run_with_restart(engine, sb)
    assert_rode_it_out(snap)
    kinds = set(snap.total.errors)
    assert "connection refused" in kinds, kinds  # what a client sees while the pod is gone
    assert kinds <= {"connection refused", "stream broken", "closed before headers",
                     "stream ended before any event"}, kinds


class RecordingProxy(LoopbackServer):
    """A TCP forwarder (think `kubectl port-forward`) that keeps every request head it passed
    on: while the adapter is down it closes the client's connection at once."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_head(reader)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1",
                                                                 self.upstream_port)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            writer.close()
            return
        self.heads.append(head)  # only what reached the adapter
        up_writer.write(head)
        self.spawn(pipe(reader, up_writer))
        self.spawn(pipe(up_reader, writer))


async def test_resumes_after_a_restart_carry_last_event_id_to_the_new_adapter() -> None:
    with Sandbox() as sb:
        port = int(sb.sse_url.rsplit(":", 1)[1])
        async with RecordingProxy(port) as proxy:
            engine = LoadEngine(outage_settings(proxy.url, sb, "lei"))
            before = -1

            async def restart() -> None:
                nonlocal before
                before = len(proxy.heads)
                await asyncio.to_thread(sb.restart_adapter, DOWN_S)

            task = asyncio.ensure_future(engine.run())
            await until(lambda: engine.phase.tokens_received >= CONVERSATIONS * 20,
                        timeout=15, what="tokens on every stream")
            await restart()
            snap = await asyncio.wait_for(task, 40)
            stats = sb.adapter_stats()  # the restarted adapter's own view
    assert_rode_it_out(snap)
    # Every request that reached the restarted adapter was a resume with Last-Event-ID.
    after = proxy.heads[before:]
    resumed = {h.split(b" ")[1].decode().rsplit("/", 1)[1] for h in after
               if b"\r\nLast-Event-ID: " in h}
    assert len(resumed) == CONVERSATIONS, after
    assert all(b"\r\nLast-Event-ID: " in h for h in after), after
    assert set(stats["per_conversation"]) == resumed
