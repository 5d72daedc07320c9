"""The progress line never shows more received than published (issue 14, item 4)."""

from __future__ import annotations

import asyncio
import dataclasses
import re

from sse_tui.engine.engine import LoadEngine
from sse_tui.report import progress_line
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings


def test_tokens_sent_but_not_yet_answered_count_as_published() -> None:
    snap = LoadEngine(Settings(run_id="inflight")).snapshot()
    snap = dataclasses.replace(snap, tokens_in_flight=3)
    assert "Published: 3, Received: 0" in progress_line(snap)


async def test_received_never_runs_ahead_of_published_in_the_progress_line(
        sandbox: Sandbox) -> None:
    s = Settings(mode="both", redis=sandbox.redis_address, sse=sandbox.sse_url,
                 conversations=20, tokens=60, delay_ms=2, duration_s=0, run_id="ahead")
    engine = LoadEngine(s)
    task = asyncio.ensure_future(engine.run())
    pairs: list[tuple[int, int]] = []
    for _ in range(2000):  # bounded: ~1 ms apart, for as long as the run lasts
        if task.done():
            break
        m = re.search(r"Published: (\d+), Received: (\d+)", progress_line(engine.snapshot()))
        assert m is not None
        pairs.append((int(m[1]), int(m[2])))
        await asyncio.sleep(0.001)
    final = await asyncio.wait_for(task, 30)
    assert final.total.tokens_received == 20 * 60  # the run did what it should
    assert len(pairs) > 20
    assert all(received <= published for published, received in pairs), [
        p for p in pairs if p[1] > p[0]][:5]
