"""The real app over the real engine (in its own process) against the local sandbox."""

from __future__ import annotations

import io

from sse_tui.engine.process import EngineProcess
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.tui.app import finish_run, make_app
from sse_tui.tui.widgets.phases import PhaseTable
from tests.fake_engine import wait_for


async def test_tokens_flow_and_a_key_reaches_the_engine(sandbox: Sandbox) -> None:
    settings = Settings(
        redis=sandbox.redis_address,
        sse=sandbox.sse_url,
        conversations=3,
        tokens=400,
        delay_ms=10,
        duration_s=60,
        grace_s=1.0,
    )
    handle = EngineProcess(settings)
    app = make_app(handle)
    try:
        async with app.run_test(size=(80, 24)) as pilot:

            def received() -> int:
                snap = app.last_snapshot
                return snap.total.tokens_received if snap else 0

            await wait_for(pilot, lambda: received() > 50, timeout=20, what="tokens received")
            await pilot.press("plus")
            await wait_for(
                pilot,
                lambda: handle.settings.conversations == 4,
                timeout=10,
                what="conversations 3 -> 4 in the engine",
            )
            phases = app.main_screen.query_one(PhaseTable)
            await wait_for(pilot, lambda: phases.row_count == 2, timeout=10, what="phase 1")
            await wait_for(
                pilot,
                lambda: app.last_snapshot is not None and app.last_snapshot.conversations_live == 4,
                timeout=10,
                what="4 live conversations",
            )
            await pilot.press("q")
        out = io.StringIO()
        assert finish_run(handle, out=out) == 0
        assert "Tokens Received:" in out.getvalue()
    finally:
        handle.close()
