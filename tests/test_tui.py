"""Pilot tests: the app over an injected FakeEngine, driven by keys."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from textual.widgets import Input

from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot
from sse_tui.tui.app import SseTuiApp, finish_run, make_app, run_tui
from sse_tui.tui.logcapture import MemoryLogHandler, captured_logging
from sse_tui.tui.widgets.consumers import ConversationTable
from sse_tui.tui.widgets.dialogs import HelpScreen, SettingsScreen
from sse_tui.tui.widgets.phases import PhaseTable
from sse_tui.tui.widgets.status import StatusLine
from tests.fake_engine import FakeEngine, wait_for

SIZE = (80, 24)


def settings(**changes: object) -> Settings:
    base = Settings(run_id="test", conversations=5, tokens=200, delay_ms=50, duration_s=60)
    return base.with_changes(**changes)


def engine(**changes: object) -> FakeEngine:
    e = FakeEngine(settings(**changes), auto_advance=False)
    e.start()
    e.advance(3)
    return e


def status_text(app: SseTuiApp) -> str:
    return str(app.main_screen.query_one(StatusLine).content)


def calls_of(e: FakeEngine, name: str) -> list[tuple[object, ...]]:
    return [c for c in e.calls if c[0] == name]


async def test_app_starts_an_engine_that_is_not_started() -> None:
    e = FakeEngine(settings(), auto_advance=False)
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, what="first poll")
        assert e.started
        assert e.command_names().count("start") == 1


async def test_app_does_not_start_an_engine_twice() -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.polls >= 2, what="two polls")
        assert e.command_names().count("start") == 1


async def test_keys_change_the_engines_settings() -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("plus")
        await wait_for(pilot, lambda: ("set_conversations", 6) in e.calls, what="+")
        await pilot.press("equals_sign")  # the unshifted + key
        await wait_for(pilot, lambda: ("set_conversations", 7) in e.calls, what="=")
        await pilot.press("minus")
        await wait_for(pilot, lambda: e.calls[-1] == ("set_conversations", 6), what="-")
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: ("set_delay", 100.0) in e.calls, what="]")
        await pilot.press("left_square_bracket", "left_square_bracket")
        await wait_for(pilot, lambda: e.calls[-1] == ("set_delay", 20.0), what="[ [")
        assert e.settings.conversations == 6
        assert e.settings.delay_ms == 20.0
        await wait_for(pilot, lambda: "6 conv · 20 ms" in status_text(app), what="status")


async def test_fewer_conversations_stops_at_one() -> None:
    e = engine(conversations=1)
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("minus")
        await wait_for(pilot, lambda: app.polls >= 2, what="a poll")
        assert not calls_of(e, "set_conversations")


async def test_each_change_appears_as_a_new_phase() -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        table = app.main_screen.query_one(PhaseTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="phase 0 row")
        await pilot.press("plus", "right_square_bracket")
        await wait_for(pilot, lambda: table.row_count == 3, what="phases 1 and 2")
        assert "phase 2" in status_text(app)
        # On 80 columns the phases replace the consumers on v.
        phases = app.main_screen.query_one("#phases")
        assert not phases.display
        await pilot.press("v")
        await wait_for(pilot, lambda: phases.display, what="phases panel shown")
        assert not app.main_screen.query_one("#consumers").display
        # The current phase row shows the new settings.
        row = [str(c) for c in table.get_row("2")]
        assert row[:3] == ["2", "6", "100"]


@pytest.mark.parametrize("size", [(160, 50), (190, 30)])
async def test_phases_and_consumers_both_shown_when_tall_or_wide(size: tuple[int, int]) -> None:
    app = make_app(engine())
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, what="first poll")
        assert app.main_screen.query_one("#phases").display
        assert app.main_screen.query_one("#consumers").display


async def test_pause_and_resume() -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("space")
        await wait_for(pilot, lambda: status_text(app).startswith("PAUSED"), what="paused")
        assert calls_of(e, "pause")
        await pilot.press("p")
        await wait_for(pilot, lambda: status_text(app).startswith("RUNNING"), what="resumed")
        assert calls_of(e, "resume")


async def _type_into(pilot: object, field: Input, text: str) -> None:
    field.focus()
    field.value = ""
    await pilot.press(*text)  # type: ignore[attr-defined]


async def test_settings_dialog_applies_typed_values() -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="dialog")
        dialog = app.screen
        conv = dialog.query_one("#conversations", Input)
        delay = dialog.query_one("#delay", Input)
        assert (conv.value, delay.value) == ("5", "50")
        await _type_into(pilot, conv, "25")
        await pilot.press("tab")
        await _type_into(pilot, delay, "12.5")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen), what="closed")
        assert ("set_conversations", 25) in e.calls
        assert ("set_delay", 12.5) in e.calls
        assert (e.settings.conversations, e.settings.delay_ms) == (25, 12.5)


async def test_settings_dialog_rejects_bad_values_and_escape_cancels() -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="dialog")
        dialog = app.screen
        conv = dialog.query_one("#conversations", Input)
        await _type_into(pilot, conv, "0")
        await pilot.press("enter")
        error = dialog.query_one("#settings-error")
        await wait_for(pilot, lambda: "conversations" in str(error.content), what="error")
        assert isinstance(app.screen, SettingsScreen)
        await _type_into(pilot, conv, "")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="still open")
        delay = dialog.query_one("#delay", Input)
        await _type_into(pilot, conv, "3")
        await _type_into(pilot, delay, "-5")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "delay" in str(error.content), what="delay error")
        assert isinstance(app.screen, SettingsScreen)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen), what="closed")
        assert not calls_of(e, "set_conversations")
        assert not calls_of(e, "set_delay")


async def test_save_writes_toml_that_loads_back_identically(tmp_path: Path) -> None:
    from sse_tui.config import load_config

    e = engine()
    path = tmp_path / "conf" / "load.toml"
    app = make_app(e, config_path=path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("plus", "right_square_bracket", "w")
        await wait_for(pilot, path.exists, what="saved file")
        await wait_for(
            pilot,
            lambda: any(str(path.resolve()) in n.message for n in app._notifications),
            what="notification with the absolute path",
        )
    loaded = Settings(**load_config(path))
    assert loaded == e.settings
    assert (loaded.conversations, loaded.delay_ms) == (6, 100.0)


async def test_save_without_config_goes_to_the_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sse_tui.config import DEFAULT_CONFIG_PATH, load_config

    monkeypatch.chdir(tmp_path)
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        target = tmp_path / DEFAULT_CONFIG_PATH
        await wait_for(pilot, target.exists, what="default file")
    assert Settings(**load_config(target)) == e.settings


async def test_export_writes_the_json_summary(tmp_path: Path) -> None:
    e = engine()
    out = tmp_path / "summary.json"
    app = make_app(e, json_path=str(out))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await wait_for(pilot, out.exists, what="json file")
    data = json.loads(out.read_text())
    assert data["settings"]["run_id"] == "test"


async def test_export_without_json_path_writes_a_timestamped_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = make_app(engine(), json_path="-")  # stdout is the screen: never written to live
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await wait_for(pilot, lambda: list(tmp_path.glob("sse-tui-test-*.json")), what="file")


@pytest.mark.parametrize("key", ["q", "ctrl+q", "ctrl+c"])
async def test_quit_keys_exit_and_the_summary_follows(key: str, tmp_path: Path) -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, what="first poll")
        await pilot.press(key)
        await wait_for(pilot, lambda: not app.is_running, what="exit")
    assert app.return_code == 0
    out = io.StringIO()
    status = finish_run(e, json_path=str(tmp_path / "final.json"), out=out)
    assert status == 0
    assert e.command_names()[-2:] == ["stop", "join"]
    assert "Tokens Published:" in out.getvalue()
    assert json.loads((tmp_path / "final.json").read_text())["settings"]["run_id"] == "test"


class QuittingEngine(FakeEngine):
    """Quits the app from inside its third poll, as an operator pressing q would."""

    polls = 0

    def snapshot(self) -> StatsSnapshot:
        snap = super().snapshot()
        self.polls += 1
        if self.polls == 3:
            from textual._context import active_app

            active_app.get().exit(0)
        return snap


def test_run_tui_prints_the_summary_after_the_app_closes(tmp_path: Path) -> None:
    e = QuittingEngine(settings(), auto_advance=True)
    out = io.StringIO()
    status = run_tui(e, json_path=str(tmp_path / "run.json"), out=out, headless=True)
    assert status == 0
    text = out.getvalue()
    assert "=== Load Test Results ===" in text
    assert "Tokens Published:" in text
    assert (tmp_path / "run.json").exists()
    assert e.command_names()[0] == "start"
    assert e.command_names()[-2:] == ["stop", "join"]


def test_run_tui_returns_1_on_a_fatal_error() -> None:
    e = QuittingEngine(settings(), auto_advance=True, fatal_error="redis refused the connection")
    assert run_tui(e, out=io.StringIO(), headless=True) == 1


async def test_finished_run_stays_on_final_figures_and_r_restarts() -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, what="first poll")
        assert app.check_action("restart", ()) is False
        e.advance(2)
        e.finish()
        await wait_for(pilot, lambda: status_text(app).startswith("FINISHED"), what="finished")
        published = e.snapshot().total.tokens_published
        assert str(f"{published:,}") in str(app.main_screen.query_one("#producer").content)
        assert app.is_running  # it stays open on the final figures
        # A change after the end is kept for the next run, not sent to the finished engine.
        await pilot.press("plus")
        await wait_for(pilot, lambda: "next: 6 conv" in status_text(app), what="pending")
        assert not calls_of(e, "set_conversations")
        await pilot.press("r")
        await wait_for(pilot, lambda: status_text(app).startswith("RUNNING"), what="new run")
        (restart,) = calls_of(e, "restart")
        assert isinstance(restart[1], Settings) and restart[1].conversations == 6
        assert e.settings.conversations == 6


async def test_restart_key_does_nothing_while_running() -> None:
    e = engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await wait_for(pilot, lambda: app.polls >= 2, what="a poll")
        assert not calls_of(e, "restart")


async def test_help_lists_every_key() -> None:
    app = make_app(engine())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        keys = dict(app.key_map())
        assert set(keys) >= {"+ =", "-", "[", "]", "p space", "s", "w", "e", "v", "r", "? f1 h"}
        assert keys["q ^q ^c"].startswith("quit")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), what="closed")


async def test_every_binding_has_an_id_and_a_description() -> None:
    from textual.binding import Binding

    for b in SseTuiApp.BINDINGS:
        assert isinstance(b, Binding)
        assert b.id and b.description, b


async def test_health_warning_and_fatal_error_show_on_the_status_line() -> None:
    e = engine()
    e.warning = "event-loop lag p99 180 ms: figures may be distorted"
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        status = app.main_screen.query_one(StatusLine)
        await wait_for(pilot, lambda: "event-loop lag" in status_text(app), what="warning")
        assert status.has_class("-warning")
        e.fatal_error = "redis: connection refused"
        e.finish()
        await wait_for(pilot, lambda: "connection refused" in status_text(app), what="fatal")
        assert status.has_class("-fatal")


async def test_log_warnings_show_instead_of_reaching_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = MemoryLogHandler()
    with captured_logging(handler):
        app = make_app(engine(), log_handler=handler)
        async with app.run_test(size=SIZE) as pilot:
            logging.getLogger("sse_tui.engine.test").warning("consumer 3: stream reset")
            await wait_for(pilot, lambda: "stream reset" in status_text(app), what="log line")
    assert "stream reset" not in capsys.readouterr().err
    assert handler.latest_warning() and "stream reset" in handler.latest_warning()


async def test_consumer_rows_update_in_place() -> None:
    e = engine(conversations=8)
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        table = app.main_screen.query_one(ConversationTable)
        # The first poll may run before the table has a size, so the percentiles of the rows
        # on screen arrive with the second one; after that, no change means no call.
        await wait_for(pilot, lambda: table.row_count > 0 and app.polls >= 3, what="rows")
        counts = {"add_row": 0, "update_cell": 0, "clear": 0}
        for name in counts:
            original = getattr(table, name)

            def spy(*a: object, _o: object = original, _n: str = name, **k: object) -> object:
                counts[_n] += 1
                return _o(*a, **k)  # type: ignore[operator]

            setattr(table, name, spy)
        polls = app.polls
        await wait_for(pilot, lambda: app.polls >= polls + 2, what="two polls")
        assert counts == {"add_row": 0, "update_cell": 0, "clear": 0}  # nothing changed
        e.advance(0.5)
        await wait_for(pilot, lambda: counts["update_cell"] > 0, what="cells updated")
        assert counts["clear"] == 0
        assert counts["update_cell"] < table.row_count * 13  # not every cell of every row


async def test_thousands_of_conversations_show_the_interesting_ones_first() -> None:
    e = FakeEngine(settings(conversations=2000), auto_advance=False)
    e.start()
    e.advance(2.5)
    app = make_app(e)
    async with app.run_test(size=(160, 50)) as pilot:
        table = app.main_screen.query_one(ConversationTable)
        await wait_for(pilot, lambda: table.row_count == 200, what="capped rows")
        first = table.coordinate_to_cell_key((0, 0)).row_key.value
        assert first == e.settings.conversation_id(4)  # the one with an error
        second = table.coordinate_to_cell_key((1, 0)).row_key.value
        assert second == e.settings.conversation_id(2)  # the one missing tokens
        totals = str(app.main_screen.query_one("#consumer-totals").content)
        assert "200/2,000" in totals


def test_no_color_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(engine())
    assert app.no_color


class LaggingEngine(FakeEngine):
    """Like the engine in its process: commands take effect only when `deliver()` says the
    engine has got round to them, and until then the snapshots show the old settings."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.inbox: list[tuple[str, tuple[object, ...]]] = []

    @property
    def commands_in_flight(self) -> int:
        return len(self.inbox)

    def set_conversations(self, n: int) -> None:
        self.inbox.append(("set_conversations", (n,)))

    def set_delay(self, delay_ms: float) -> None:
        self.inbox.append(("set_delay", (delay_ms,)))

    def pause(self) -> None:
        self.inbox.append(("pause", ()))

    def resume(self) -> None:
        self.inbox.append(("resume", ()))

    def deliver(self) -> None:
        inbox, self.inbox = self.inbox, []
        for name, args in inbox:
            getattr(FakeEngine, name)(self, *args)


def lagging_engine() -> LaggingEngine:
    e = LaggingEngine(settings(), auto_advance=False)
    e.start()
    e.advance(3)
    return e


async def test_changes_not_yet_applied_are_pending_and_keys_step_from_them() -> None:
    e = lagging_engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, what="first poll")
        await pilot.press("plus", "plus", "plus", "right_square_bracket")
        # Three presses step 5 -> 8 even though the engine has applied none of them yet.
        assert [c for c, _ in e.inbox] == ["set_conversations"] * 3 + ["set_delay"]
        assert [a for _, a in e.inbox] == [(6,), (7,), (8,), (100.0,)]
        await wait_for(
            pilot,
            lambda: "5 conv · 50 ms (→ 8 conv · 100 ms pending)" in status_text(app),
            what="the engine's settings, and the change marked pending",
        )
        assert e.settings.conversations == 5
        assert "5 conv · 50 ms" in str(app.main_screen.query_one("#producer").content)
        e.deliver()
        await wait_for(
            pilot,
            lambda: "8 conv · 100 ms" in status_text(app) and "pending" not in status_text(app),
            what="the change applied",
        )


async def test_pause_pressed_twice_before_the_engine_answers_resumes() -> None:
    e = lagging_engine()
    app = make_app(e)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, what="first poll")
        await pilot.press("p")
        await wait_for(pilot, lambda: "→ pause pending" in status_text(app), what="pending")
        assert status_text(app).startswith("RUNNING")  # not paused until the engine says so
        await pilot.press("p")
        assert [c for c, _ in e.inbox] == ["pause", "resume"]
        e.deliver()
        await wait_for(pilot, lambda: "pending" not in status_text(app), what="applied")
        assert status_text(app).startswith("RUNNING")


class StalledEngine(FakeEngine):
    """Gives the same snapshot again while `stalled`, as a handle does when no new one came."""

    stalled = False
    _last: StatsSnapshot | None = None

    def snapshot(self) -> StatsSnapshot:
        if not (self.stalled and self._last is not None):
            self._last = super().snapshot()
        return self._last


async def test_the_status_line_says_how_long_the_figures_have_been_frozen() -> None:
    e = StalledEngine(settings(), auto_advance=True)
    app = make_app(e, stale_after_s=0.5)
    async with app.run_test(size=SIZE) as pilot:
        status = app.main_screen.query_one(StatusLine)
        await wait_for(pilot, lambda: app.polls >= 2, what="two polls")
        assert "not answering" not in status_text(app)
        e.stalled = True
        await wait_for(
            pilot,
            lambda: "engine not answering for 1 s: figures frozen" in status_text(app),
            what="the stale indicator",
        )
        assert status.has_class("-warning")
        # Right after the clock, so that 80 columns show it whole.
        assert status_text(app).index("figures frozen") < 70
        await wait_for(pilot, lambda: "not answering for 2 s" in status_text(app), what="2 s")
        e.stalled = False
        await wait_for(pilot, lambda: "not answering" not in status_text(app), what="fresh")
        assert not status.has_class("-warning")
        # A finished run's figures are final, not frozen.
        e.finish()
        await wait_for(pilot, lambda: status_text(app).startswith("FINISHED"), what="finished")
        e.stalled = True
        polls = app.polls
        await wait_for(pilot, lambda: app.polls >= polls + 6, what="1.5 s of polls")
        assert "not answering" not in status_text(app)


async def test_an_engine_that_never_reported_is_called_so() -> None:
    e = StalledEngine(settings(), auto_advance=False)
    e.stalled = True
    app = make_app(e, stale_after_s=0.5)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(
            pilot,
            lambda: "no figures from the engine yet (1 s)" in status_text(app),
            what="the waiting indicator",
        )


async def test_save_keeps_workers_as_the_operator_asked(tmp_path: Path) -> None:
    """The engine runs with the resolved count (2 here); `w` saves what was asked (0: as
    many as the CPUs), so the file means the same on a machine with more cores."""
    from sse_tui.config import load_config

    e = engine(workers=2)
    path = tmp_path / "load.toml"
    app = make_app(e, config_path=path, workers_asked=0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        await wait_for(pilot, path.exists, what="saved file")
    assert load_config(path)["workers"] == 0
