"""The live monitor: a Textual app over an injected engine handle.

The engine runs off this loop (in a child process, `EngineProcess`) and pushes snapshots of
its own accord; the app never waits on it. A timer reads the handle's latest immutable
`StatsSnapshot` and applies it inside `batch_update()`; keys send fire-and-forget commands
through the small `EngineHandle` API, and their effect shows in a later snapshot. What the
screen shows of the settings is the engine's, from the snapshot: a change not yet applied
is marked pending, and when snapshots stop coming (an engine stalled or overloaded) the
status line says for how long the figures have been frozen. `run_tui` runs the app and then
does what headless mode does at the end: stop the engine, print the final summary to the
normal screen, write the JSON if asked.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer

from sse_tui.engine.handle import EngineHandle
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot
from sse_tui.tui.logcapture import MemoryLogHandler, captured_logging
from sse_tui.tui.messages import SettingsChange
from sse_tui.tui.step_ladders import step_conversations, step_delay
from sse_tui.tui.widgets.consumers import DEFAULT_ROW_CAP, ConsumersPanel
from sse_tui.tui.widgets.dialogs import HelpScreen, SettingsScreen
from sse_tui.tui.widgets.latency import LatencyPanel
from sse_tui.tui.widgets.phases import PhasesPanel
from sse_tui.tui.widgets.producer import ProducerPanel
from sse_tui.tui.widgets.status import StatusLine, stale_message

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
# No new snapshot for this long while the run is on: the figures on screen are frozen.
STALE_AFTER_S = 2.0
GC_FREEZE_AFTER_S = 1.0  # see on_mount
# Layout breakpoints: from this height on the top panels grow and the phases sit under the
# consumers; from this width on they sit beside them (which leaves the consumers 90 columns).
WIDE_COLUMNS = 170
TALL_ROWS = 40

HELP_NOTES = (
    "Each change of conversations, delay or rate starts a new stats phase (the Phases "
    "panel; on a narrow screen v shows it in place of the consumers).\n"
    "With --rate, , and . step the arrival rate (conversations then caps the live ones). "
    "With --stages, t takes the load over from the profile (its clock and the run's stop) "
    "and hands it back; a change of conversations (or rate) takes it over too.\n"
    "Consumers lists errors first, then lost, duplicated or out-of-order tokens, "
    "reconnects and slow conversations, capped at a few hundred rows.\n"
    "The status line turns yellow when the load generator itself may be distorting the "
    "figures (event-loop lag, CPU), red on a fatal error.\n"
    "When the run ends the app stays on the final figures; r starts a new run with the "
    "current settings. On quit the final summary is printed to the terminal and the JSON "
    "written if --json was given."
)


_CONVERSATIONS = Binding.Group("Conv", compact=True)
_DELAY = Binding.Group("Delay", compact=True)
_RATE = Binding.Group("Rate", compact=True)

# The steps of the rate keys: 1-2-5 per decade, 0.1 to 50 000 new conversations per second.
RATE_STEPS = tuple(round(m * 10.0**e, 6) for e in range(-1, 5) for m in (1, 2, 5))


def step_rate(rate: float, direction: int) -> float:
    """The next rate on the 1-2-5 ladder, faster (+1) or slower (-1)."""
    if direction > 0:
        return next((r for r in RATE_STEPS if r > rate * (1 + 1e-9)), RATE_STEPS[-1])
    return next((r for r in reversed(RATE_STEPS) if r < rate * (1 - 1e-9)), RATE_STEPS[0])


class SseTuiApp(App[int]):
    """Producer, latency, consumers and phases panels over one engine handle."""

    CSS_PATH = "app.tcss"
    TITLE = "sse-tui"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "plus,equals_sign",
            "more_conversations",
            "More conversations",
            id="conversations.more",
            group=_CONVERSATIONS,
            tooltip="more conversations at once (1, 2 … 10, 20 … 100, 200 …)",
        ),
        Binding(
            "minus",
            "fewer_conversations",
            "Fewer conversations",
            id="conversations.fewer",
            group=_CONVERSATIONS,
            tooltip="fewer conversations at once",
        ),
        Binding(
            "left_square_bracket",
            "shorter_delay",
            "Shorter delay",
            id="delay.shorter",
            group=_DELAY,
            tooltip="shorter delay between tokens",
        ),
        Binding(
            "right_square_bracket",
            "longer_delay",
            "Longer delay",
            id="delay.longer",
            group=_DELAY,
            tooltip="longer delay between tokens (0, 1, 2, 5, 10, 20, 50 … ms)",
        ),
        Binding(
            "comma,less_than_sign",
            "slower_arrivals",
            "Slower",
            id="rate.slower",
            group=_RATE,
            tooltip="with --rate: fewer new conversations per second",
        ),
        Binding(
            "full_stop,greater_than_sign",
            "faster_arrivals",
            "Faster",
            id="rate.faster",
            group=_RATE,
            tooltip="with --rate: more new conversations per second",
        ),
        Binding(
            "t",
            "toggle_profile",
            "Take over",
            id="profile",
            tooltip="with --stages: take over from the profile / hand it back",
        ),
        Binding(
            "p,space",
            "toggle_pause",
            "Pause",
            id="pause",
            tooltip="pause / resume publishing (streams stay open)",
        ),
        Binding(
            "s",
            "settings",
            "Set",
            id="settings",
            tooltip="settings dialog: type conversations and delay, Enter applies",
        ),
        Binding(
            "w",
            "save_settings",
            "Save",
            id="save",
            tooltip="save the settings as TOML (--config file, else ./sse-tui.toml)",
        ),
        Binding(
            "e",
            "export_json",
            "JSON",
            id="export",
            tooltip="export the JSON summary now (--json file, else a timestamped file)",
        ),
        Binding(
            "v",
            "toggle_phases",
            "Phases",
            id="phases",
            tooltip="show the phases table instead of the consumers (narrow screens)",
        ),
        Binding(
            "r",
            "restart",
            "New run",
            id="restart",
            tooltip="start a new run with the current settings (after the run ended)",
        ),
        Binding("question_mark,f1,h", "help", "Help", id="help", tooltip="this key map"),
        Binding(
            "q",
            "quit",
            "Quit",
            id="quit",
            tooltip="quit: stop the run, print the summary, write the JSON",
        ),
        Binding(
            "ctrl+q", "quit", "Quit", id="quit.ctrl_q", show=False, priority=True, tooltip="quit"
        ),
        Binding(
            "ctrl+c", "quit", "Quit", id="quit.ctrl_c", show=False, priority=True, tooltip="quit"
        ),
    ]

    def __init__(
        self,
        handle: EngineHandle,
        *,
        config_path: Path | None = None,
        json_path: str | None = None,
        poll_interval: float = POLL_INTERVAL_S,
        stale_after_s: float = STALE_AFTER_S,
        row_cap: int = DEFAULT_ROW_CAP,
        log_handler: MemoryLogHandler | None = None,
        workers_asked: int | None = None,
    ) -> None:
        # NO_COLOR: with ansi_color the filter Textual picks is NoColor (the terminal's own
        # foreground and background) rather than Monochrome (greys, which a 16-colour
        # terminal turns into black on black).
        super().__init__(ansi_color=True if "NO_COLOR" in os.environ else None)
        self.handle = handle
        self.config_path = config_path
        self.json_path = json_path
        self.poll_interval = poll_interval
        self.stale_after_s = stale_after_s
        self.row_cap = row_cap
        self.log_handler = log_handler
        # --workers as the operator gave it (0: as many as the CPUs): what `w` saves, not
        # the count this machine resolved it to. None: save what the engine runs with.
        self.workers_asked = workers_asked
        self.last_snapshot: StatsSnapshot | None = None
        self.polls = 0
        # Settings changed after the run ended: the operator's intent for the next run (r),
        # not a copy of the engine's (which are in the snapshots).
        self.pending_settings: Settings | None = None
        # Changes sent to the running engine that no snapshot shows yet: what the next key
        # press steps from, shown as pending, dropped once the engine's snapshots cover them.
        self.requested: dict[str, Any] = {}
        # When the handle last gave a snapshot other than the one before: how stale it is.
        self._seen_snapshot: StatsSnapshot | None = None
        self._seen_at = time.monotonic()
        self._snapshots_seen = 0
        self._run_key: tuple[str, float] | None = None
        self._watch_terminal = False
        self._finished_seen = False
        self._paused_seen = False
        self._profile_seen = False
        self.main_screen: Screen[Any] | None = None

    # -- layout --------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        with Horizontal(id="top"):
            yield ProducerPanel(id="producer")
            yield LatencyPanel(id="latency")
        with Container(id="bottom"):
            yield self.rows_panel()
            yield PhasesPanel(id="phases")
        yield Footer(compact=True)

    def rows_panel(self) -> ConsumersPanel:
        """The table of rows under the top panels: one per conversation here (the fleet
        monitor's: one per generator)."""
        return ConsumersPanel(cap=self.row_cap, id="consumers")

    def on_mount(self) -> None:
        if self.no_color or (
            not self.is_headless and self.console.color_system in (None, "standard", "windows")
        ):
            # 16 colours (TERM=xterm or unset, kubectl exec): the terminal's own palette
            # looks right where the default theme's RGB colours would be approximated.
            self.theme = "ansi-dark"
        # Held here because App.query_one searches the active screen, which may be a dialog.
        self.main_screen = self.screen
        self.status_line = self.main_screen.query_one(StatusLine)
        self.producer_panel = self.main_screen.query_one(ProducerPanel)
        self.latency_panel = self.main_screen.query_one(LatencyPanel)
        self.consumers_panel = self.main_screen.query_one(ConsumersPanel)
        self.phases_panel = self.main_screen.query_one(PhasesPanel)
        self._apply_size(self.size.width, self.size.height)
        self._start_engine()
        self.poll()
        self.set_interval(self.poll_interval, self.poll, name="poll-engine")
        # What is alive a moment after start (modules, the widgets: ~80 000 objects) stays
        # for the whole run: left to the cyclic GC, every full collection walks it again (with
        # the render caches, 150-190 ms with keys waiting, every few seconds at -c 10000;
        # docs/benchmarks.md). Frozen, it is left out.
        self.set_timer(GC_FREEZE_AFTER_S, gc.freeze, name="gc-freeze")
        if not self.is_headless:
            self._watch_terminal = _stdout_is_tty()
            self._install_signal_handlers()

    def on_unmount(self) -> None:
        gc.unfreeze()  # what on_mount froze: collectable again once the app is gone

    def on_resize(self, event: Resize) -> None:
        if self.main_screen is not None:
            self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        assert self.main_screen is not None
        screen = self.main_screen
        wide, tall = width >= WIDE_COLUMNS, height >= TALL_ROWS
        if (wide, tall) != (screen.has_class("-wide"), screen.has_class("-tall")):
            screen.set_class(wide, "-wide")
            screen.set_class(tall, "-tall")
            self.refresh_bindings()

    def _start_engine(self) -> None:
        """Start the engine unless whoever built the app already did."""
        if not self.handle.started:
            self.handle.start()

    # -- the poll loop -------------------------------------------------------------------
    def poll(self) -> None:
        """Pull one snapshot and apply it; cheap enough to run 4 times a second."""
        if self._watch_terminal and not _terminal_alive():
            log.warning("terminal went away; quitting")
            self.exit(0)
            return
        try:
            # In this order: a snapshot read after the count is at least as new as it.
            in_flight = self.handle.commands_in_flight
            snap = self.handle.snapshot()
        except Exception as exc:
            log.exception("snapshot failed")
            self.notify(f"engine snapshot failed: {exc}", severity="error", timeout=5)
            return
        now = time.monotonic()
        if snap is not self._seen_snapshot:
            self._seen_snapshot, self._seen_at = snap, now
            self._snapshots_seen += 1
        if in_flight == 0 or snap.finished:
            self.requested.clear()  # the engine's settings in `snap` say what came of them
        if not all(p.ready for p in (self.latency_panel, self.consumers_panel, self.phases_panel)):
            return  # the panels' own children mount a moment after the app's on_mount
        self.polls += 1
        with self.batch_update():
            self._apply(snap, stale_s=now - self._seen_at)

    def _apply(self, snap: StatsSnapshot, *, stale_s: float = 0.0) -> None:
        run_key = (snap.settings.run_id, snap.elapsed_s)
        if self._run_key is not None and (
            run_key[0] != self._run_key[0] or run_key[1] < self._run_key[1]
        ):
            self._reset_views()
        self._run_key = run_key
        self.last_snapshot = snap
        log_warning = self.log_handler.latest_warning() if self.log_handler else None
        pending = None
        if self.pending_settings is not None:
            p = self.pending_settings
            pending = f"next: {_load_text(p)} · {p.delay_ms:g} ms"
        stale = None
        if not snap.finished and stale_s >= self.stale_after_s:
            stale = stale_message(stale_s, reported=self._snapshots_seen > 1)
        self.status_line.update_from(
            snap,
            log_warning=log_warning,
            pending=pending,
            requested=self.requested_text(),
            stale=stale,
        )
        self.producer_panel.update_from(snap)
        self.latency_panel.update_from(snap)
        self.consumers_panel.update_from(snap)
        self.phases_panel.update_from(snap)
        if snap.finished != self._finished_seen:
            self._finished_seen = snap.finished
            self.refresh_bindings()
            if snap.finished:
                what = "failed" if snap.state == "failed" else "finished"
                self.notify(f"Run {what}: press r for a new run, q to quit", timeout=6)
        paused = snap.state == "paused"
        if paused != self._paused_seen:
            self._paused_seen = paused
            self.refresh_bindings()
        profile = snap.profile is not None
        if profile != self._profile_seen:  # its key shows only with a profile
            self._profile_seen = profile
            self.refresh_bindings()

    def _reset_views(self) -> None:
        self.consumers_panel.reset()
        self.phases_panel.reset()

    # -- bindings ------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "restart":
            return self.run_finished
        if action in ("faster_arrivals", "slower_arrivals"):  # hidden in a closed loop
            return self._current().rate > 0
        if action == "toggle_profile":  # hidden without --stages, or once it is over
            snap = self.last_snapshot
            return snap is not None and snap.profile is not None and not snap.finished
        if action == "toggle_phases":  # both panels are on screen when wide or tall
            return self.main_screen is None or not (
                self.main_screen.has_class("-wide") or self.main_screen.has_class("-tall")
            )
        return True

    @property
    def run_finished(self) -> bool:
        return self.last_snapshot is not None and self.last_snapshot.finished

    def _current(self) -> Settings:
        """What a change steps from: the next run's settings once the run has ended, else
        the engine's with the changes it has not applied yet."""
        if self.pending_settings is not None:
            return self.pending_settings
        settings_changes = {k: v for k, v in self.requested.items()
                            if k not in ("paused", "profile_held")}
        return self.handle.settings.with_changes(**settings_changes)

    def requested_text(self) -> str | None:
        """The changes sent that the engine has not applied yet, for the status line."""
        if not self.requested:
            return None
        parts = []
        if {"conversations", "delay_ms", "rate"} & self.requested.keys():
            c = self._current()
            parts.append(f"{_load_text(c)} · {c.delay_ms:g} ms")
        if "paused" in self.requested:
            parts.append("pause" if self.requested["paused"] else "resume")
        if "profile_held" in self.requested:
            parts.append("take over" if self.requested["profile_held"] else "hand back")
        return ", ".join(parts)

    def change_settings(
        self,
        *,
        conversations: int | None = None,
        delay_ms: float | None = None,
        rate: float | None = None,
    ) -> None:
        """Apply at once to the running engine (a new phase), or keep for the next run."""
        current = self._current()
        changes: dict[str, Any] = {}
        if conversations is not None and conversations != current.conversations:
            changes["conversations"] = conversations
        if delay_ms is not None and delay_ms != current.delay_ms:
            changes["delay_ms"] = delay_ms
        if rate is not None and rate != current.rate and current.rate > 0:
            changes["rate"] = rate
        if not changes:
            return
        if self.run_finished:
            self.pending_settings = current.with_changes(**changes)
            p = self.pending_settings
            self.notify(f"next run: {_load_text(p)}, {p.delay_ms:g} ms (press r)")
        else:
            if "conversations" in changes:
                self.handle.set_conversations(changes["conversations"])
            if "delay_ms" in changes:
                self.handle.set_delay(changes["delay_ms"])
            if "rate" in changes:
                self.handle.set_rate(changes["rate"])
            self.requested.update(changes)
            parts = [f"{k.removesuffix('_ms')} → {v:g}" for k, v in changes.items()]
            note = " sent (a new phase)"
            # The engine takes the load over from a running profile when the quantity the
            # profile sets (conversations, or the rate in open loop) is changed by hand.
            if self._profile_running() and ("rate" in changes if current.rate > 0
                                            else "conversations" in changes):
                self.requested["profile_held"] = True
                note += "; the profile is held: t hands the load back to it"
            self.notify(", ".join(parts) + note, timeout=3)
        self.poll()

    def _profile_running(self) -> bool:
        """A load profile is on and not held (as far as the latest snapshot and the
        changes sent since say)."""
        snap = self.last_snapshot
        if snap is None or snap.profile is None or snap.finished:
            return False
        return not self.requested.get("profile_held", snap.profile.held)

    def action_more_conversations(self) -> None:
        self.change_settings(conversations=step_conversations(self._current().conversations, 1))

    def action_fewer_conversations(self) -> None:
        self.change_settings(conversations=step_conversations(self._current().conversations, -1))

    def action_faster_arrivals(self) -> None:
        self.change_settings(rate=step_rate(self._current().rate, 1))

    def action_slower_arrivals(self) -> None:
        self.change_settings(rate=step_rate(self._current().rate, -1))

    def action_toggle_profile(self) -> None:
        snap = self.last_snapshot
        if snap is None or snap.profile is None or snap.finished:
            return
        if self._profile_running():
            self.handle.hold_profile()
            self.notify("the load is yours: the profile and the run's clock wait (t hands "
                        "it back)", timeout=3)
            self.requested["profile_held"] = True
        else:
            self.handle.release_profile()
            self.notify("the profile goes on from its current stage", timeout=2)
            self.requested["profile_held"] = False
        self.poll()

    def action_longer_delay(self) -> None:
        self.change_settings(delay_ms=step_delay(self._current().delay_ms, 1))

    def action_shorter_delay(self) -> None:
        self.change_settings(delay_ms=step_delay(self._current().delay_ms, -1))

    def action_toggle_pause(self) -> None:
        if self.run_finished:
            return
        paused = self.requested.get(
            "paused", self.last_snapshot is not None and self.last_snapshot.state == "paused"
        )
        if paused:
            self.handle.resume()
            self.notify("resume sent", timeout=2)
        else:
            self.handle.pause()
            self.notify("pause sent: no new tokens; streams stay open", timeout=2)
        self.requested["paused"] = not paused
        self.poll()

    def action_settings(self) -> None:
        current = self._current()

        def done(change: SettingsChange | None) -> None:
            if change is not None:
                self.change_settings(conversations=change.conversations, delay_ms=change.delay_ms)

        self.push_screen(SettingsScreen(current.conversations, current.delay_ms), done)

    def action_save_settings(self) -> None:
        from sse_tui.config import DEFAULT_CONFIG_PATH, save_settings

        path = Path(self.config_path or DEFAULT_CONFIG_PATH)
        try:
            current = self._current()
            if self.workers_asked is not None:
                current = current.with_changes(workers=self.workers_asked)
            written = save_settings(current, path)
        except Exception as exc:
            log.warning("saving settings to %s failed: %s", path, exc)
            self.notify(f"could not save {path}: {exc}", severity="error", timeout=8)
            return
        self.notify(f"settings saved to {Path(written).resolve()}", timeout=6)

    def export_path(self) -> str:
        """--json if given (and not stdout, which the app is drawing on), else a new file."""
        if self.json_path and self.json_path != "-":
            return self.json_path
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return f"sse-tui-{self.handle.settings.run_id}-{stamp}.json"

    def action_export_json(self) -> None:
        from sse_tui.report import write_json

        path = self.export_path()
        try:
            write_json(self.handle.snapshot(), path)
        except Exception as exc:
            log.warning("export to %s failed: %s", path, exc)
            self.notify(f"could not write {path}: {exc}", severity="error", timeout=8)
            return
        self.notify(f"JSON summary written to {Path(path).resolve()}", timeout=6)

    def action_toggle_phases(self) -> None:
        if self.main_screen is not None:
            self.main_screen.toggle_class("-phases")

    def action_restart(self) -> None:
        if not self.run_finished:
            return
        settings, self.pending_settings = self.pending_settings, None
        self.handle.restart(settings)
        self._reset_views()
        self._run_key = None
        self.requested.clear()
        self._snapshots_seen = 0
        self.notify("new run started", timeout=2)
        self.poll()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.key_map(), HELP_NOTES))

    def key_map(self) -> list[tuple[str, str]]:
        """(keys, what they do) for every binding, merged by action."""
        rows: dict[str, tuple[list[str], str]] = {}
        for b in self.BINDINGS:
            assert isinstance(b, Binding)
            keys = [self.get_key_display(Binding(k, b.action)) for k in b.key.split(",")]
            if b.action in rows:
                rows[b.action][0].extend(keys)
            else:
                rows[b.action] = (keys, b.tooltip or b.description)
        return [(" ".join(keys), text) for keys, text in rows.values()]

    async def action_quit(self) -> None:
        self.exit(0)

    # -- the terminal going away ---------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            # Not every platform or loop has signal handlers; then the default action stays.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        log.warning("%s: quitting", signal.Signals(sig).name)
        self._watch_terminal = False
        self.exit(0)


def _load_text(s: Settings) -> str:
    """The load as the status line says it: `20 conv`, or open loop `5/s ≤100`."""
    return f"{s.rate:g}/s ≤{s.conversations}" if s.rate > 0 else f"{s.conversations} conv"


def _stdout_is_tty() -> bool:
    try:
        return sys.__stdout__ is not None and os.isatty(sys.__stdout__.fileno())
    except (OSError, ValueError):
        return False


def _terminal_alive() -> bool:
    """False once the terminal has hung up (the ioctl fails with EIO)."""
    try:
        assert sys.__stdout__ is not None
        os.get_terminal_size(sys.__stdout__.fileno())
    except (OSError, ValueError, AssertionError):
        return False
    return True


def make_app(
    handle: EngineHandle,
    *,
    config_path: Path | None = None,
    json_path: str | None = None,
    **kwargs: Any,
) -> SseTuiApp:
    """The app over an engine handle: what the CLI and the tests both build."""
    return SseTuiApp(handle, config_path=config_path, json_path=json_path, **kwargs)


def join_timeout(settings: Settings) -> float:
    """How long to wait for the engine to drain after stop()."""
    return settings.grace_s + 10.0


def finish_run(
    handle: EngineHandle, *, json_path: str | None = None, out: IO[str] | None = None
) -> int:
    """Stop the engine, print the final summary and write the JSON; the exit status.

    This is what happens after the app has closed, on the normal screen, so the summary
    stays in the scrollback.
    """
    from sse_tui import slo
    from sse_tui.report import format_summary, write_json

    out = out if out is not None else sys.stdout
    handle.stop()
    final = handle.join(join_timeout(handle.settings))
    try:
        out.write(format_summary(final).rstrip("\n") + "\n")
        out.flush()
    except OSError:  # the terminal is gone; the JSON below is what still matters
        pass
    if not final.fatal_error:  # each failed --slo clause, on stderr as in headless
        for line in slo.failure_lines(slo.evaluate(final)):
            with contextlib.suppress(OSError, ValueError):
                print(line, file=sys.stderr)
    if json_path:
        from sse_tui.files import WriteError

        try:
            write_json(final, json_path)
        except WriteError as e:  # e.g. ENOSPC from /dev/full: one line, not a traceback
            with contextlib.suppress(OSError, ValueError):
                print(f"sse-tui: the JSON summary was not written: {e}", file=sys.stderr)
            return slo.EXIT_FATAL
    return slo.exit_status(final)  # 1: failed to measure; 3: an --slo clause failed


def run_tui(
    handle: EngineHandle,
    *,
    config_path: Path | None = None,
    json_path: str | None = None,
    out: IO[str] | None = None,
    headless: bool = False,
    workers_asked: int | None = None,
) -> int:
    """Run the app until the operator quits, then stop the run and print its summary."""
    logs = MemoryLogHandler()
    app = make_app(handle, config_path=config_path, json_path=json_path, log_handler=logs,
                   workers_asked=workers_asked)
    try:
        with captured_logging(logs):
            app.run(headless=headless)
    finally:
        status = finish_run(handle, json_path=json_path, out=out)
    warnings = [text for level, text in logs.records if level >= logging.WARNING]
    if warnings:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            print(
                f"{len(warnings)} warning(s) during the run; the last: {warnings[-1]}",
                file=sys.stderr,
            )
    if app.return_code not in (None, 0):
        return app.return_code or 1
    return status
