"""A Redis that stops answering, and one that fails: named as Redis' doing, never the
generator's; publish round trips measured; publish_errors counts tokens, not attempts."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.selfwatch import SCHEDULE_LAG
from sse_tui.report import format_summary, summary_dict
from sse_tui.sandbox import Sandbox
from sse_tui.sandbox.redis_server import RedisServer
from sse_tui.settings import Settings
from sse_tui.snapshot import PhaseStats
from tests.conftest import until

STALL_S = 2.0


async def test_a_redis_stall_is_named_and_not_blamed_on_the_generator() -> None:
    # A stack of its own: the stall must not reach the tests sharing the session's sandbox.
    with Sandbox() as sb:
        assert sb.redis_pid is not None
        engine = LoadEngine(Settings(
            mode="both", conversations=5, tokens=100_000, delay_ms=10, duration_s=60,
            redis=sb.redis_address, sse=sb.sse_url, run_id="stall"))
        run = asyncio.get_running_loop().create_task(engine.run())
        await until(lambda: engine.snapshot().total.tokens_received > 100, what="tokens flowing")
        os.kill(sb.redis_pid, signal.SIGSTOP)
        try:
            # Live, while the reply is overdue: Redis is named, the generator is not.
            await until(lambda: (engine.snapshot().redis_warning or "").startswith(
                "Redis has not answered a PUBLISH"), timeout=5, what="the live stall warning")
            t0 = time.monotonic()
            await until(lambda: time.monotonic() - t0 >= STALL_S, timeout=5,
                        what=f"a {STALL_S:g} s stall")
            assert SCHEDULE_LAG not in (engine.snapshot().health.warning or "")
        finally:
            os.kill(sb.redis_pid, signal.SIGCONT)
        await until(lambda: "Redis is slow" in (engine.snapshot().redis_warning or ""),
                    what="the warning after the stall")
        resumed = engine.snapshot().total.tokens_received
        await until(lambda: engine.snapshot().total.tokens_received > resumed + 100,
                    what="tokens flowing again")
        engine.stop()
        final = await asyncio.wait_for(run, 30)

    t = final.total
    rtt = t.publish_rtt.summary
    assert rtt.max >= 0.9 * STALL_S * 1000  # the pipeline in flight waited the whole stall
    assert rtt.p50 < 50  # and the others did not
    # 5 conversations, a token every 12.5 ms on average: ~800 tokens came due in 2 s. The
    # schedule is absolute, so they all went out late once Redis answered, none was dropped.
    assert 400 <= t.tokens_held_back_by_redis <= 1600
    assert t.publish_errors == 0 and t.tokens_missing == 0
    # The verdicts: Redis held publishing back; the generator was not the bottleneck.
    assert final.redis_warning is not None
    assert final.redis_warning.startswith("Redis held publishing back: publish round trip")
    assert "the generator was overloaded too" not in final.redis_warning or (
        final.health.overloaded_windows)
    assert f"; {t.tokens_held_back_by_redis} tokens went out late" in final.redis_warning
    # (Only the publisher's lateness could blame the generator for this stall; loop lag or
    # CPU on a machine busy with other work would be a fair verdict, so they are not judged.
    # The ~800 tokens due during the stall go out in one pipeline when it ends, the schedule
    # being absolute: handling that burst may show as loop lag, never as schedule lag.)
    assert not any(SCHEDULE_LAG in w.reasons for w in engine.selfwatch.windows)
    # The time spent waiting for Redis is never schedule lag: the largest the publisher
    # reported is a small fraction of the stall.
    assert engine.selfwatch.schedule_lag_total.max_us < 0.1 * STALL_S * 1e6
    assert "inter-token gaps" not in final.health.distorted
    text = format_summary(final)
    assert f"WARNING: {final.redis_warning}" in text
    if not final.health.overloaded_windows:
        assert "Generator self-check: not the bottleneck" in text
    data = summary_dict(final)
    assert set(data["publish_rtt_ms"]) == set(data["latency_ms"])
    assert data["publish_rtt_ms"]["max"] >= 0.9 * STALL_S * 1000
    assert data["redis_warning"] == final.redis_warning
    assert data["tokens_held_back_by_redis"] == t.tokens_held_back_by_redis


async def test_publish_errors_count_tokens_not_retries() -> None:
    """Redis goes away: each conversation's stuck token is retried every 0.2 s, and counted
    as one publish error however often it is retried."""
    redis = RedisServer().start()
    try:
        engine = LoadEngine(Settings(
            mode="producer", conversations=3, tokens=100_000, delay_ms=5, duration_s=60,
            redis=redis.address, run_id="puberr"))
        run = asyncio.get_running_loop().create_task(engine.run())
        await until(lambda: engine.snapshot().total.tokens_published > 30,
                    what="tokens published")
    finally:
        redis.stop()
    await until(lambda: engine.snapshot().total.publish_errors == 3, timeout=10,
                what="every conversation's token failing")
    published = engine.snapshot().total.tokens_published  # (a reply may have been on its way)
    t0 = time.monotonic()
    await until(lambda: time.monotonic() - t0 > 1.0, what="five rounds of retries")
    engine.stop()
    final = await asyncio.wait_for(run, 30)
    t = final.total
    assert t.tokens_published == published
    assert t.publish_errors == 3  # one per stuck token, not one per retry (~15 by now)
    assert sum(t.errors.values()) == 3
    assert all(k.startswith("redis publish: ") for k in t.errors)


def test_the_verdict_needs_a_slow_round_trip_that_cost_tokens() -> None:
    from sse_tui.engine.publish_watch import redis_verdict
    from sse_tui.engine.stats import PhaseRecorder

    def total(rtts_us: list[int], held: int) -> PhaseStats:
        p = PhaseRecorder(index=0, label="p", started_s=0.0, conversations=1, delay_ms=10)
        for us in rtts_us:
            p.publish_rtt.record(us)
        p.tokens_held_back_by_redis = held
        return p.freeze(10.0)

    assert redis_verdict(total([300, 400], held=0)) is None  # a healthy Redis
    assert redis_verdict(total([300, 2_000_000], held=0)) is None  # slow, but cost nothing
    assert redis_verdict(total([300, 50_000], held=5)) is None  # 50 ms: not a stall
    verdict = redis_verdict(total([300] * 99 + [2_000_000], held=160))
    assert verdict == ("Redis held publishing back: publish round trip p99 0.3 ms, max 2.0 s; "
                       "160 tokens went out late, behind schedule, while the generator waited "
                       "for Redis (their wait is in the intended latency)")
    both = redis_verdict(total([2_000_000], held=160), generator_overloaded=True)
    assert both is not None and both.endswith("the generator was overloaded too, which "
                                              "lengthens round trips as well")
