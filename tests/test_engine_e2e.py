"""The engine end to end against a real redis-server and the reference adapter on loopback."""

from __future__ import annotations

import asyncio

import pytest

from sse_tui.engine.engine import LoadEngine
from sse_tui.sandbox import FaultConfig, Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot
from tests.conftest import until


def settings_for(sb: Sandbox, **kw: object) -> Settings:
    base: dict[str, object] = dict(mode="both", redis=sb.redis_address, sse=sb.sse_url,
                                   conversations=4, tokens=30, delay_ms=2, duration_s=0,
                                   grace_s=1.0)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def run(settings: Settings, **kw: object) -> StatsSnapshot:
    return await asyncio.wait_for(LoadEngine(settings, **kw).run(), 30)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["raw", "httpx"])
async def test_both_mode_one_round_delivers_everything(sandbox: Sandbox, transport: str) -> None:
    snap = await run(settings_for(sandbox, run_id=f"e2e-both-{transport}", transport=transport))
    t = snap.total
    assert snap.state == "finished" and snap.fatal_error is None
    assert t.conversations_started == 4
    assert t.conversations_completed == 4 and t.conversations_incomplete == 0
    assert t.tokens_published == 4 * 30
    assert t.tokens_received == t.tokens_published
    assert (t.tokens_missing, t.tokens_duplicated, t.tokens_out_of_order) == (0, 0, 0)
    assert t.connections_opened == t.connections_closed == 4
    assert t.latency.summary.count == 120
    assert 0 < t.latency.summary.p50 < 1000
    assert t.first_token.summary.count == 4
    # Established on the ": connected" comment (raw) or the headers (httpx, which hides
    # comments), never by waiting out the fallback timer.
    from sse_tui.engine.consumer import ESTABLISH_FALLBACK_S
    assert t.first_token.summary.max < ESTABLISH_FALLBACK_S * 1000
    assert t.itl.summary.count == 4 * 29
    assert {c.state for c in snap.conversations} == {"done"}


@pytest.mark.parametrize("delay_ms", [0, 1])
async def test_tiny_delays_work(sandbox: Sandbox, delay_ms: float) -> None:
    snap = await run(settings_for(sandbox, run_id=f"e2e-d{delay_ms}", delay_ms=delay_ms,
                                  tokens=50, conversations=3))
    assert snap.total.tokens_received == snap.total.tokens_published == 150
    assert snap.total.tokens_missing == 0


async def test_duration_keeps_conversations_live_then_drains(sandbox: Sandbox) -> None:
    snap = await run(settings_for(sandbox, run_id="e2e-dur", conversations=3, tokens=5,
                                  delay_ms=5, duration_s=1.5))
    t = snap.total
    assert 1.4 < snap.elapsed_s < 5
    assert t.conversations_started > 3  # finished ones were replaced
    assert t.tokens_received == t.tokens_published
    assert t.tokens_missing == 0
    assert t.conversations_incomplete == 0
    assert t.conversations_cut_short > 0  # in flight when the duration ended
    assert t.conversations_started == t.conversations_completed + t.conversations_cut_short


FAULT_CASES = {
    "drop": (FaultConfig(drop_rate=0.1, seed=7), "dropped", "tokens_missing"),
    "dup": (FaultConfig(dup_rate=0.1, seed=7), "duplicated", "tokens_duplicated"),
    "reorder": (FaultConfig(reorder_rate=0.1, seed=7), "reordered", "tokens_out_of_order"),
    "disconnect": (FaultConfig(disconnect_after=7, seed=7), "disconnects", "reconnects"),
    "resume-bug": (FaultConfig(disconnect_after=9, resume_skip_bug=True, seed=7),
                   "resume_skipped", "tokens_missing"),
}


@pytest.mark.parametrize("case", sorted(FAULT_CASES))
async def test_reported_faults_equal_injected_faults(case: str) -> None:
    faults, injected_key, reported_attr = FAULT_CASES[case]
    with Sandbox(faults=faults) as sb:
        snap = await run(settings_for(sb, run_id=f"fault-{case}", conversations=5, tokens=40))
        stats = sb.adapter_stats()
        injected = stats["injected"]
    t = snap.total
    assert injected[injected_key] > 0, "the fault was not exercised"
    assert getattr(t, reported_attr) == injected[injected_key]
    # Everything else is clean: each fault shows up only where it belongs.
    expected_missing = injected["dropped"] + injected["resume_skipped"]
    assert t.tokens_missing == expected_missing
    assert t.tokens_duplicated == injected["duplicated"]
    assert t.tokens_out_of_order == injected["reordered"]
    assert t.reconnects == injected["disconnects"] == t.streams_ended_without_done
    assert t.tokens_published == 5 * 40
    assert t.conversations_completed + t.conversations_incomplete == 5
    per_conv = {cid: c["injected"] for cid, c in stats["per_conversation"].items()}
    lossy = sum(1 for c in per_conv.values() if c["dropped"] + c["resume_skipped"] > 0)
    assert t.conversations_incomplete == lossy
    by_id = {c.conversation_id: c for c in snap.conversations}
    assert set(per_conv) == set(by_id)
    for cid, c in per_conv.items():
        assert by_id[cid].missing == c["dropped"] + c["resume_skipped"]
        assert by_id[cid].duplicated == c["duplicated"]
        assert by_id[cid].out_of_order == c["reordered"]
        assert by_id[cid].reconnects == c["disconnects"]


@pytest.mark.parametrize("follow_redis", [False, True])
async def test_separate_producer_and_consumer_line_up_by_run_id(sandbox: Sandbox,
                                                                 follow_redis: bool) -> None:
    run_id = f"paired-{follow_redis}"
    common = dict(run_id=run_id, conversations=3, tokens=20, delay_ms=5)
    consumer = LoadEngine(settings_for(sandbox, mode="consumer", **common),
                          follow_redis=follow_redis)
    consumer_task = asyncio.ensure_future(consumer.run())
    # The consumer's streams must be open before the producer publishes (pub/sub forgets).
    await until(lambda: bool(consumer.snapshot().conversations) and all(
        c.state == "streaming" for c in consumer.snapshot().conversations),
        what="every consumer stream open")
    produced = await run(settings_for(sandbox, mode="producer", **common))
    consumed = await asyncio.wait_for(consumer_task, 30)
    assert produced.total.tokens_published == 60
    assert consumed.total.tokens_received == 60
    assert consumed.total.tokens_missing == 0
    assert consumed.total.conversations_completed == 3
    assert {c.conversation_id for c in consumed.conversations} == {
        f"loadtest-{run_id}-{n}" for n in (1, 2, 3)}
    assert consumed.total.latency.summary.count == 60
    # With --redis the consumer also sees what was published (and follows nothing foreign).
    assert consumed.total.tokens_published == (60 if follow_redis else 0)
    assert not any(c.discovered for c in consumed.conversations)


async def test_consumer_follows_conversations_appearing_on_redis(sandbox: Sandbox) -> None:
    follower = LoadEngine(settings_for(sandbox, mode="consumer", run_id="follower",
                                       conversations=2, duration_s=3.0, grace_s=0.5),
                          follow_redis=True)
    follow_task = asyncio.ensure_future(follower.run())
    # Not observable from here: the follower's PSUBSCRIBE happens inside the engine (and
    # PUBSUB NUMPAT on the shared sandbox also counts other clients), so give it time.
    await asyncio.sleep(0.5)
    # Someone else's producer (another run id) starts two long conversations.
    await run(settings_for(sandbox, mode="producer", run_id="elsewhere", conversations=2,
                           tokens=60, delay_ms=10))
    follower.stop()
    snap = await asyncio.wait_for(follow_task, 30)
    discovered = [c for c in snap.conversations if c.discovered]
    assert {c.conversation_id for c in discovered} == {
        "loadtest-elsewhere-1", "loadtest-elsewhere-2"}
    for c in discovered:
        assert c.received > 0 and c.missing == 0
        assert c.state == "done"


async def test_live_changes_start_new_phases(sandbox: Sandbox) -> None:
    engine = LoadEngine(settings_for(sandbox, run_id="phases", conversations=2, tokens=10,
                                     delay_ms=5, duration_s=30))
    task = asyncio.ensure_future(engine.run())
    await until(lambda: engine.phase.tokens_received > 0, what="tokens in phase 0")
    engine.set_conversations(5)
    await until(lambda: engine.snapshot().conversations_live == 5, what="5 live conversations")
    await until(lambda: engine.phase.tokens_received > 0, what="tokens in phase 1")
    engine.set_delay(1)
    await until(lambda: engine.phase.tokens_received > 0, what="tokens in phase 2")
    engine.pause()
    paused = engine.snapshot()
    assert paused.state == "paused"
    # Deliberate: time passes while paused, and nothing may be published in it.
    await asyncio.sleep(0.3)
    published_while_paused = engine.snapshot().total.tokens_published
    await asyncio.sleep(0.3)
    assert engine.snapshot().total.tokens_published == published_while_paused
    engine.resume()
    await asyncio.sleep(0.3)  # deliberate: the resumed phase runs a while before the stop
    engine.stop()
    snap = await asyncio.wait_for(task, 30)
    assert [p.index for p in snap.phases] == [0, 1, 2]
    assert [(p.conversations, p.delay_ms) for p in snap.phases] == [(2, 5), (5, 5), (5, 1)]
    assert all(p.tokens_received > 0 for p in snap.phases)
    assert sum(p.tokens_received for p in snap.phases) == snap.total.tokens_received
    assert sum(p.latency.count for p in snap.phases) == snap.total.latency.count
    assert snap.total.tokens_missing == 0
    assert snap.settings.conversations == 5 and snap.settings.delay_ms == 1


async def test_unreachable_redis_is_a_clear_fatal_error() -> None:
    from sse_tui.sandbox.redis_server import free_port

    s = Settings(redis=f"127.0.0.1:{free_port()}", sse="http://127.0.0.1:1", duration_s=1)
    snap = await run(s)
    assert snap.state == "failed"
    assert snap.fatal_error is not None and "cannot reach Redis" in snap.fatal_error


async def test_unreachable_sse_is_a_clear_fatal_error(sandbox: Sandbox) -> None:
    from sse_tui.sandbox.redis_server import free_port

    s = settings_for(sandbox, sse=f"http://127.0.0.1:{free_port()}")
    snap = await run(s)
    assert snap.state == "failed"
    assert snap.fatal_error is not None and "cannot reach the SSE adapter" in snap.fatal_error


async def test_many_live_conversations_snapshot_carries_the_most_interesting(
        sandbox: Sandbox) -> None:
    from sse_tui.engine.engine import MAX_LIVE_VIEWS

    engine = LoadEngine(settings_for(sandbox, mode="consumer", run_id="many", conversations=300,
                                     duration_s=30, grace_s=0.1))
    task = asyncio.ensure_future(engine.run())
    # Every stream open, not only the 250 the views carry (--connect-rate opens them over
    # a few hundred ms): a token published to one still waiting for its slot is lost.
    await until(lambda: engine.snapshot().conversations_live == 300 and all(
        c.state == "streaming" for c in engine.snapshot().conversations)
        and engine.snapshot().connect_waiting == 0
        and engine.snapshot().total.connections_opened >= 300,
        what="300 conversations streaming")
    # One conversation gets a gap: it must be among the views although it is number 300.
    import redis.asyncio as aioredis
    client = aioredis.from_url(sandbox.redis_url)
    for seq in (1, 3):
        await client.publish("llm:tokens:loadtest-many-300",
                             b'{"conversation_id":"loadtest-many-300","token":"x","sequence":%d,'
                             b'"done":false,"timestamp":1}' % seq)
    await client.aclose()
    views: list[StatsSnapshot] = []

    def gap_in_view() -> bool:
        views[:] = [engine.snapshot()]
        return any(c.number == 300 and c.received == 2 for c in views[0].conversations)

    await until(gap_in_view, what="conversation 300's tokens among the views")
    snap = views[0]
    engine.stop()
    await asyncio.wait_for(task, 30)
    assert snap.conversations_live == 300
    assert len(snap.conversations) == MAX_LIVE_VIEWS
    (gappy,) = [c for c in snap.conversations if c.number == 300]
    assert gappy.missing == 1
