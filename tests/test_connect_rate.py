"""--connect-rate: streams open at most R a second, nothing is published before a stream is
open (the TUI's `opening N/M` is checked in tests/test_tui_scale.py)."""

from __future__ import annotations

import asyncio

import pytest

from sse_tui.engine.connect_rate import BURST_S, ConnectRate
from sse_tui.engine.engine import LoadEngine
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings, UsageError
from tests.conftest import until


def test_the_bucket_allows_a_short_burst_then_spaces_openings_evenly() -> None:
    gate = ConnectRate(100)  # a burst of 100 * BURST_S = 5, then one every 10 ms
    burst = int(100 * BURST_S)
    waits = [gate.reserve(10.0) for _ in range(burst + 3)]
    assert waits[:burst] == [0.0] * burst
    assert waits[burst:] == pytest.approx([0.01, 0.02, 0.03])
    # After a quiet second the bucket is full again: the burst, not the backlog.
    assert gate.reserve(11.0) == 0.0


def test_rate_zero_is_unlimited() -> None:
    gate = ConnectRate(0)
    assert all(gate.reserve(1.0) == 0.0 for _ in range(10_000))


def test_a_bad_connect_rate_is_one_clear_line() -> None:
    from sse_tui.settings import SETTINGS
    spec = next(s for s in SETTINGS if s.field == "connect_rate")
    with pytest.raises(UsageError, match="--connect-rate"):
        spec.read_flag("--connect-rate", "fast")
    assert spec.read_flag("--connect-rate", "250/s") == 250.0
    assert Settings().connect_rate > 0  # limited by default


async def test_streams_open_at_the_rate_and_publishing_waits_for_them(sandbox: Sandbox) -> None:
    rate, n = 20.0, 50  # 50 streams at 20/s: ~2.3 s of ramp
    settings = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=n,
                        tokens=100_000, delay_ms=20, duration_s=20, grace_s=0.5,
                        connect_rate=rate, run_id="connect-rate")
    engine = LoadEngine(settings)
    task = asyncio.create_task(engine.run())
    loop = asyncio.get_running_loop()
    try:
        await until(lambda: engine.state == "running" and engine.connect_gate.waiting > 0,
                    timeout=10, what="conversations waiting for a connect slot")
        t0 = loop.time()
        seen_waiting = []
        while loop.time() - t0 < 1.0:
            snap = engine.snapshot()
            opened = snap.total.connect_attempts
            elapsed = loop.time() - t0
            # Never faster than the rate: the burst, plus R per second since the ramp began
            # (it began at most one poll before t0), plus one slot of slack.
            assert opened <= int(rate * BURST_S) + rate * (elapsed + 0.1) + 1
            seen_waiting.append(snap.connect_waiting)
            for conv in snap.conversations:
                if conv.state == "connecting":  # no stream yet: nothing published to it
                    assert conv.published == 0, conv
            await asyncio.sleep(0.05)
        assert max(seen_waiting) > 0
        await until(lambda: engine.snapshot().total.connections_opened >= n, timeout=15,
                    what=f"all {n} streams open")
        elapsed = loop.time() - t0
        # The ramp took about as long as the rate says (it is a ceiling, not a floor).
        assert elapsed >= (n - rate * BURST_S - rate * 0.2) / rate - 1.0
        snap = engine.snapshot()
        assert snap.connect_waiting == 0
        assert snap.total.errors_total == 0
    finally:
        # stop, not hurry: tokens in flight get the grace period, so none is counted missing
        # for the way the test ended the run.
        engine.stop()
        final = await asyncio.wait_for(task, 30)
    assert final.total.tokens_missing == 0
