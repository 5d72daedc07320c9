"""Clock skew between producer and consumer (sse_tui.engine.clock), against the sandbox.

The producer plays a host whose clock is 5 s ahead: its engine gets a skewed clock by
dependency injection (LoadEngine(clock_ns=...)), used for its publish timestamps and for its
offset against Redis alike, as a real skewed host would.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from sse_tui.engine import clock
from sse_tui.engine.clock import ClockSample
from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.stats import PhaseRecorder
from sse_tui.headless import Lines, _report
from sse_tui.merge import merge
from sse_tui.report import format_summary, summary_dict
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings, redis_url
from sse_tui.snapshot import StatsSnapshot
from tests.conftest import until

SKEW_NS = 5_000_000_000  # the producer's clock is 5 s ahead


def skewed_clock() -> int:
    return time.time_ns() + SKEW_NS


def settings_for(sb: Sandbox, **kw: object) -> Settings:
    base: dict[str, object] = dict(redis=sb.redis_address, sse=sb.sse_url, conversations=3,
                                   tokens=20, delay_ms=5, duration_s=0, grace_s=1.0)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def produce_and_consume(sb: Sandbox, run_id: str, *, follow_redis: bool,
                              headless: io.StringIO | None = None,
                              ) -> tuple[StatsSnapshot, LoadEngine]:
    common = dict(run_id=run_id)
    consumer = LoadEngine(settings_for(sb, mode="consumer", **common), follow_redis=follow_redis)
    consumer_task = asyncio.ensure_future(consumer.run())
    reporter = None
    if headless is not None:  # the headless progress lines, every 50 ms
        reporter = asyncio.ensure_future(_report(consumer, 0.05, Lines(headless)))
    # Pub/sub forgets: every stream must be open before the producer publishes.
    await until(lambda: bool(consumer.snapshot().conversations) and all(
        c.state == "streaming" for c in consumer.snapshot().conversations),
        what="every consumer stream open")
    producer = LoadEngine(settings_for(sb, mode="producer", **common), clock_ns=skewed_clock)
    produced = await asyncio.wait_for(producer.run(), 30)
    assert produced.total.tokens_published == 60
    consumed = await asyncio.wait_for(consumer_task, 30)
    if reporter is not None and headless is not None:
        text = headless
        await until(lambda: "latencies were negative" in text.getvalue(),
                    what="the headless warning")
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
    return consumed, consumer


async def test_a_producer_ahead_gives_counted_negative_latencies_and_a_warning(
        sandbox: Sandbox) -> None:
    headless = io.StringIO()
    snap, _ = await produce_and_consume(sandbox, "skew-plain", follow_redis=False,
                                        headless=headless)
    # Said once when they start (then by the summary), not on every progress line.
    warnings = [line for line in headless.getvalue().splitlines()
                if "latencies were negative" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: ")
    t = snap.total
    assert t.tokens_received == 60 and t.tokens_missing == 0
    # Every receipt came "before" its publish: counted and kept, not clamped to 0 ms.
    assert t.negative_latencies == 60
    assert t.latency.count == 0
    neg = t.negative_latency.summary
    assert neg.count == 60
    assert 4900 < neg.min <= neg.max < 5000  # ~5 s minus the real (sub-100 ms) delay
    assert snap.clock is None
    assert snap.clock_warning is not None
    assert snap.clock_warning.startswith("60 latencies were negative (down to −")
    assert "producer's clock is ahead" in snap.clock_warning
    assert f"WARNING: {snap.clock_warning}" in format_summary(snap)
    c = summary_dict(snap)["clock"]
    assert c["negative_latencies"] == 60 and c["corrected"] is False
    assert c["offset_ms"] is None and c["negative_ms"]["count"] == 60
    # Two pods' summaries merge exactly: counts add, min and max stay exact.
    d = json.loads(json.dumps(summary_dict(snap)))
    merged = merge([d, d]).total
    assert merged.negative_latencies == 120 and merged.negative_latency.count == 120
    assert (merged.negative_latency.min_us, merged.negative_latency.max_us) == (
        t.negative_latency.min_us, t.negative_latency.max_us)


async def test_with_redis_the_consumer_estimates_the_offset_and_corrects(
        sandbox: Sandbox) -> None:
    run_id = "skew-redis"
    # A first, tiny producer run of the same run id: its offset is in Redis before the
    # consumer starts, as when producer pods start first.
    warmup = LoadEngine(settings_for(sandbox, mode="producer", run_id=run_id, conversations=1,
                                     tokens=1), clock_ns=skewed_clock)
    assert (await asyncio.wait_for(warmup.run(), 30)).fatal_error is None
    snap, consumer = await produce_and_consume(sandbox, run_id, follow_redis=True)
    t = snap.total
    assert t.tokens_received == 60 and t.tokens_missing == 0
    assert snap.clock is not None and snap.clock.corrected
    assert abs(snap.clock.offset_ms - SKEW_NS / 1e6) < 5.0
    assert 0 <= snap.clock.error_ms < 5.0
    assert consumer.ts_shift_ns == pytest.approx(-SKEW_NS, abs=5_000_000)
    # Corrected: small and non-negative, none negative.
    assert t.negative_latencies == 0 and snap.clock_warning is None
    assert t.latency.count == 60
    assert 0 <= t.latency.summary.min <= t.latency.summary.max < 1000
    c = summary_dict(snap)["clock"]
    assert c["corrected"] is True and abs(c["offset_ms"] - 5000) < 5
    assert "Clock offset:         producer +" in format_summary(snap)
    # The producer's key is named by the run id, outside the token channel prefix.
    client = aioredis.from_url(redis_url(sandbox.redis_address))
    try:
        raw = await client.get(f"sse-tui:clock:{run_id}")
        assert raw is not None
        stored = json.loads(raw)
        assert 0 < await client.ttl(f"sse-tui:clock:{run_id}") <= clock.KEY_TTL_S
    finally:
        await client.aclose()
    assert abs(stored["offset_ns"] + SKEW_NS) < 5_000_000


async def test_both_mode_shares_one_clock_and_applies_no_correction(sandbox: Sandbox) -> None:
    engine = LoadEngine(settings_for(sandbox, mode="both", run_id="skew-both"))
    snap = await asyncio.wait_for(engine.run(), 30)
    assert snap.total.tokens_received == 60
    assert engine.ts_shift_ns == 0 and snap.clock is None
    assert snap.total.negative_latencies == 0
    assert summary_dict(snap)["clock"]["corrected"] is False


# -- the NTP-style estimate ------------------------------------------------------------------


def test_one_sample_takes_the_midpoint_of_the_round_trip() -> None:
    # Sent at 1000, received at 1400; Redis read 6200: it is 5000 ahead, ± 200.
    assert clock.sample(1000, 6200, 1400) == ClockSample(offset_ns=5000, error_ns=200)


def test_the_smallest_round_trip_wins() -> None:
    samples = [clock.sample(0, 5300, 600), clock.sample(0, 5050, 100),
               clock.sample(0, 5900, 2000)]
    assert clock.best(samples) == ClockSample(offset_ns=5000, error_ns=50)
    with pytest.raises(ValueError):
        clock.best([])


class FakeClockRedis:
    """Redis' TIME on a clock `ahead_ns` of the local one, with round trips that shrink: a
    real clock and a real delay, just not on the network (the sandbox tests do that)."""

    def __init__(self, ahead_ns: int, delays_s: Iterator[float]) -> None:
        self.ahead_ns = ahead_ns
        self.delays_s = delays_s

    async def time(self) -> tuple[int, int]:
        half = next(self.delays_s) / 2
        await asyncio.sleep(half)
        now = time.time_ns() + self.ahead_ns
        await asyncio.sleep(half)
        return now // 1_000_000_000, now % 1_000_000_000 // 1000


async def test_measure_estimates_an_offset_within_its_error_bound() -> None:
    fake = FakeClockRedis(-SKEW_NS, iter([0.05, 0.02, 0.001, 0.03]))
    s = await clock.measure(fake, n=4)
    assert s.error_ns < 10_000_000  # the 1 ms round trip was kept, not a 50 ms one
    assert abs(s.offset_ns + SKEW_NS) <= s.error_ns + 1_000_000


def test_shift_and_estimate_from_two_offsets() -> None:
    producer = ClockSample(offset_ns=-SKEW_NS + 1000, error_ns=100_000)
    consumer = ClockSample(offset_ns=1000, error_ns=200_000)
    assert clock.shift_ns(producer, consumer) == -SKEW_NS
    e = clock.estimate(producer, consumer)
    assert e.offset_ms == 5000.0 and e.error_ms == pytest.approx(0.3) and e.corrected


def test_negative_latencies_merge_exactly_across_phases() -> None:
    phases: list[PhaseRecorder] = []
    for values in ([5_000_000, 4_000_000], [3_000]):
        p = PhaseRecorder(index=len(phases), label="p", started_s=0.0, conversations=1,
                          delay_ms=1)
        for v in values:
            p.negative_latencies += 1
            p.negative_latency.record(v)
        phases.append(p)
    total = PhaseRecorder.merged(phases).freeze(1.0)
    assert total.negative_latencies == 3
    assert (total.negative_latency.min_us, total.negative_latency.max_us) == (3_000, 5_000_000)
    assert clock.negative_warning(total) == (
        "3 latencies were negative (down to −5.0 s): the producer's clock is ahead of this "
        "one; sync clocks (NTP/PTP) or use --redis for an offset estimate")
