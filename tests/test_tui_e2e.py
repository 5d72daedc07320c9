"""The real app over the real engine (in its own process) against the local sandbox."""

from __future__ import annotations

import io
import os
import re
import signal
import time
from typing import Any

from sse_tui.engine.process import EngineProcess
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.tui.app import SseTuiApp, finish_run, make_app
from sse_tui.tui.widgets.dialogs import HelpScreen, SettingsScreen
from sse_tui.tui.widgets.phases import PhaseTable
from sse_tui.tui.widgets.status import StatusLine
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


def _status(app: SseTuiApp) -> str:
    return str(app.main_screen.query_one(StatusLine).content)


def _frozen_for(app: SseTuiApp) -> int:
    """The seconds in the status line's "engine not answering for N s", else -1."""
    m = re.search(r"engine not answering for (\d+) s", _status(app))
    return int(m[1]) if m else -1


async def _settled(pilot: Any, app: SseTuiApp, handle: EngineProcess) -> Any:
    """The snapshot the app shows once the handle's newest has not changed for 0.5 s."""
    seen, since = handle.snapshot(), time.monotonic()
    deadline = since + 5
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        latest = handle.snapshot()
        if latest is not seen:
            seen, since = latest, time.monotonic()
        elif time.monotonic() - since >= 0.5 and app.last_snapshot is latest:
            return latest
    raise AssertionError("the snapshots did not settle after the engine stopped")


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


async def test_the_ui_answers_keys_and_repaints_while_the_engine_is_stopped(
    sandbox: Sandbox,
) -> None:
    settings = Settings(
        redis=sandbox.redis_address,
        sse=sandbox.sse_url,
        conversations=3,
        tokens=100_000,
        delay_ms=10,
        duration_s=120,
        grace_s=0.5,
    )
    handle = EngineProcess(settings)
    app = make_app(handle)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(
                pilot,
                lambda: (
                    app.last_snapshot is not None and app.last_snapshot.total.tokens_received > 20
                ),
                timeout=20,
                what="tokens received",
            )
            assert handle._proc is not None and handle._proc.pid is not None
            pid = handle._proc.pid
            os.kill(pid, signal.SIGSTOP)  # the engine stalls for real: its loop does nothing
            try:
                await wait_for(pilot, lambda: _stopped(pid), timeout=5, what="child stopped")
                # A snapshot the child wrote just before it stopped may still be in the pipe:
                # the figures are frozen once the newest one has been read and shown.
                frozen = await _settled(pilot, app, handle)
                # Keys are handled at once: the help screen and the settings dialog open.
                t0 = time.monotonic()
                await pilot.press("question_mark")
                await wait_for(
                    pilot, lambda: isinstance(app.screen, HelpScreen), timeout=2, what="help screen"
                )
                assert time.monotonic() - t0 < 2
                await pilot.press("escape")
                await pilot.press("s")
                await wait_for(
                    pilot,
                    lambda: isinstance(app.screen, SettingsScreen),
                    timeout=2,
                    what="settings dialog",
                )
                await pilot.press("escape")
                await wait_for(
                    pilot,
                    lambda: app.screen is app.main_screen,
                    timeout=2,
                    what="back on the main screen",
                )
                # A change is sent and shown as pending; the settings shown stay the engine's.
                await pilot.press("plus")
                await wait_for(
                    pilot,
                    lambda: "(→ 4 conv · 10 ms pending)" in _status(app),
                    timeout=2,
                    what="the change marked pending",
                )
                assert "  3 conv · 10 ms" in _status(app)
                assert handle.settings.conversations == 3
                # The screen keeps repainting: the stale indicator counts the seconds up.
                await wait_for(
                    pilot, lambda: _frozen_for(app) >= 2, timeout=6, what="the stale indicator"
                )
                first = _frozen_for(app)
                await wait_for(
                    pilot,
                    lambda: _frozen_for(app) > first,
                    timeout=3,
                    what="the stale indicator counting up",
                )
                assert app.main_screen.query_one(StatusLine).has_class("-warning")
                assert app.last_snapshot is frozen  # no figures were invented meanwhile
            finally:
                os.kill(pid, signal.SIGCONT)
            # Once it runs again, the key's effect reaches the engine and a snapshot shows it.
            await wait_for(
                pilot,
                lambda: (
                    app.last_snapshot is not None and app.last_snapshot.settings.conversations == 4
                ),
                timeout=10,
                what="conversations 3 -> 4 in a snapshot",
            )
            await wait_for(
                pilot,
                lambda: "pending" not in _status(app) and _frozen_for(app) < 0,
                timeout=5,
                what="neither pending nor stale",
            )
            phases = app.main_screen.query_one(PhaseTable)
            await wait_for(pilot, lambda: phases.row_count == 2, timeout=10, what="phase 1")
            await pilot.press("q")
        assert finish_run(handle, out=io.StringIO()) == 0
    finally:
        handle.close()
