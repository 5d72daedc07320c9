"""What follows a run beside its view: Prometheus `/metrics` (sse_tui.metrics) and the
per-second time series (sse_tui.timeseries). Both read the same immutable snapshots.

The views feed them: headless pushes a snapshot from the engine's loop once a second
(`feed`), the TUI lets a thread follow the engine process's latest report (`follow`); each
hands over the final snapshot with `update` when the run is over. `close` then keeps
/metrics up for `--metrics-linger` (a Ctrl-C or SIGTERM ends that early) and stops it.

Opened before the run (and before the demo sandbox starts), so that a port in use or an
unwritable file is one line and exit status 2 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from sse_tui.metrics import MetricsServer, Observed
from sse_tui.settings import Settings, format_duration
from sse_tui.snapshot import StatsSnapshot
from sse_tui.timeseries import TimeSeriesWriter

if TYPE_CHECKING:
    from sse_tui.fleet.commands import CommandTarget
    from sse_tui.fleet.publisher import FleetPublisher

FEED_INTERVAL_S = 1.0  # headless: a snapshot from the engine's loop this often
FOLLOW_INTERVAL_S = 0.5  # TUI: the time series looks at the latest report this often
_LINGER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RunOutputs:
    def __init__(self, settings: Settings) -> None:
        self.linger_s = settings.metrics_linger_s
        self._latest: StatsSnapshot | None = None
        self._source: Callable[[], StatsSnapshot] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.series = TimeSeriesWriter(settings.timeseries) if settings.timeseries else None
        self.server: MetricsServer | None = None
        # --fleet: one more reader of the snapshots (sse_tui.fleet.publisher).
        self.fleet: FleetPublisher | None = None
        if settings.fleet:
            from sse_tui.fleet.publisher import FleetPublisher

            self.fleet = FleetPublisher(settings)
        if settings.metrics_port:
            try:
                self.server = MetricsServer(settings.metrics_address, settings.metrics_port,
                                            self.observed)
            except BaseException:
                if self.series is not None:
                    self.series.close()
                raise

    @classmethod
    def open(cls, settings: Settings) -> RunOutputs | None:
        """The outputs the settings ask for, or None. Raises UsageError (exit 2)."""
        if not settings.metrics_port and not settings.timeseries and not settings.fleet:
            return None
        return cls(settings)

    def describe(self) -> list[str]:
        """Where the outputs go, for the run's opening lines."""
        lines = []
        if self.server is not None:
            linger = (f", and {format_duration(self.linger_s)} after the run"
                      if self.linger_s else "")
            lines.append(f"  Prometheus metrics at {self.server.url}{linger}")
        if self.series is not None:
            kind = "CSV" if self.series.csv else "JSON lines"
            lines.append(f"  one row per second to {self.series.path} ({kind})")
        if self.fleet is not None:
            lines.append(self.fleet.describe())
        return lines

    # -- the snapshots -----------------------------------------------------------------------

    def observed(self) -> list[Observed]:
        """What /metrics serves now (called on the scrape's thread)."""
        source = self._source
        snap = source() if source is not None else self._latest
        if snap is None:
            return []
        # With --workers the snapshot is already the exact merge of every engine process.
        return [Observed(snap, worker="all" if snap.settings.workers > 1 else "0")]

    def update(self, snap: StatsSnapshot) -> None:
        """The newest snapshot: /metrics serves it, the time series gets its new seconds.
        Any thread; the final snapshot must come through here too."""
        with self._lock:
            self._latest = snap
            if self.series is not None:
                self.series.write_new(snap)
        if self.fleet is not None:
            self.fleet.update(snap)

    def control(self, target: CommandTarget) -> None:
        """Where fleet commands go: the engine handle (TUI) or a LoopTarget (headless)."""
        if self.fleet is not None:
            self.fleet.control(target)

    async def feed(self, snapshot: Callable[[], StatsSnapshot],
                   interval_s: float = FEED_INTERVAL_S) -> None:
        """Headless: on the engine's loop, hand over a snapshot now and every interval."""
        while True:
            self.update(snapshot())
            await asyncio.sleep(interval_s)

    def follow(self, source: Callable[[], StatsSnapshot],
               interval_s: float = FOLLOW_INTERVAL_S) -> None:
        """The TUI: `source` (the engine handle's snapshot(), which never waits) is read at
        scrape time, and by a thread of ours for the time series."""
        self._source = source
        if self.series is None and self.fleet is None:
            return

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.update(source())
                except Exception:  # the view goes on; the final update writes the rest
                    continue

        self._follower = threading.Thread(target=run, name="sse-tui-outputs", daemon=True)
        self._follower.start()

    # -- the end ---------------------------------------------------------------------------

    def close(self, err: TextIO | None = None) -> None:
        """Stop following, close the time series, linger, stop /metrics. Reports a time
        series that could not be written on `err` (stderr)."""
        err = err if err is not None else sys.stderr
        self._stop.set()
        if self._follower is not None:
            self._follower.join(5.0)
        if self._source is not None:  # serve the last snapshot, not a handle shutting down
            with contextlib.suppress(Exception):
                self.update(self._source())
            self._source = None
        if self.fleet is not None:  # the final report, before any linger
            self.fleet.close()
        if self.series is not None:
            self.series.close()
            if self.series.error:
                _say(err, f"sse-tui: {self.series.error}")
        if self.server is not None:
            try:
                if self.linger_s > 0:
                    _linger(self.linger_s, f"sse-tui: {self.server.url} stays up for "
                                           f"{format_duration(self.linger_s)} "
                                           "(--metrics-linger); Ctrl-C ends it sooner", err)
            finally:
                self.server.close()


def _say(stream: TextIO, text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(text, file=stream, flush=True)


def _linger(seconds: float, message: str, err: TextIO) -> None:
    """Say `message` and wait, ended early by SIGINT, SIGTERM or SIGHUP (a pod being
    stopped). The handlers are in place before the message: whoever reads it may signal."""
    done = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    if threading.current_thread() is threading.main_thread():
        for sig in _LINGER_SIGNALS:
            with contextlib.suppress(OSError, ValueError):
                previous[sig] = signal.signal(sig, on_signal)
    try:
        _say(err, message)
        done.wait(seconds)
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, handler)
