"""Screenshots pinned with pytest-textual-snapshot, from a frozen FakeEngine.

Update after an intended layout change with `pytest tests/test_tui_snapshots.py
--snapshot-update` and look at the SVGs in tests/__snapshots__/ before committing.
"""

from __future__ import annotations

from sse_tui.settings import Settings
from sse_tui.tui.app import SseTuiApp, make_app
from tests.fake_engine import FakeEngine, wait_for


def frozen_run(conversations: int = 12, warning: str | None = None) -> FakeEngine:
    """Two phases, an error, missing tokens and a slow conversation; never moves by itself."""
    e = FakeEngine(
        Settings(
            run_id="demo",
            conversations=conversations,
            tokens=400,
            delay_ms=20,
            duration_s=120,
            redis="redis.redis-system:6379",
            sse="http://sse-adapter.sse-system",
        ),
        auto_advance=False,
        warning=warning,
    )
    e.start()
    e.advance(9)
    e.set_conversations(conversations + 8)
    e.advance(7)
    return e


async def settled(pilot) -> None:  # type: ignore[no-untyped-def]
    app: SseTuiApp = pilot.app
    await wait_for(pilot, lambda: app.polls >= 3, what="three polls")


def test_main_screen_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(frozen_run()), terminal_size=(80, 24), run_before=settled)


def test_main_screen_160x50(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(frozen_run()), terminal_size=(160, 50), run_before=settled)


def test_warning_and_phases_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    e = frozen_run(warning="event-loop lag p99 180 ms: the figures may be distorted")

    async def show_phases(pilot) -> None:  # type: ignore[no-untyped-def]
        await settled(pilot)
        await pilot.press("v")

    assert snap_compare(make_app(e), terminal_size=(80, 24), run_before=show_phases)


def test_settings_dialog_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def open_dialog(pilot) -> None:  # type: ignore[no-untyped-def]
        await settled(pilot)
        await pilot.press("s")

    assert snap_compare(make_app(frozen_run()), terminal_size=(80, 24), run_before=open_dialog)


def test_help_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def open_help(pilot) -> None:  # type: ignore[no-untyped-def]
        await settled(pilot)
        await pilot.press("question_mark")

    assert snap_compare(make_app(frozen_run()), terminal_size=(80, 24), run_before=open_help)


async def _save_readme_screenshot(path: str, size: tuple[int, int]) -> None:
    app = make_app(frozen_run(conversations=16))
    async with app.run_test(size=size) as pilot:
        await settled(pilot)
        app.save_screenshot(filename=path)


if __name__ == "__main__":
    # python -m tests.test_tui_snapshots: regenerate docs/screenshot.svg for the README.
    import asyncio

    asyncio.run(_save_readme_screenshot("docs/screenshot.svg", (150, 42)))
