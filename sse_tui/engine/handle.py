"""The small command API through which a view (TUI, headless) drives a running engine.

Implementations must be safe to call from a thread other than the engine's own loop, and
must never make the caller wait on the engine (join() aside): `snapshot()` returns the
latest figures at once, and commands are fire-and-forget, their effect seen in a later
snapshot. The engine's settings live in one place, the engine; `settings` reports them as
of the latest snapshot.

Implementations: `EngineProcess` (one engine in a child process), `WorkerPool` (--workers:
several, each with a share of the load, their snapshots combined) and the tests' FakeEngine.
"""

from __future__ import annotations

from typing import Protocol

from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot


class EngineHandle(Protocol):
    @property
    def settings(self) -> Settings:
        """The settings in force as of the latest snapshot, live changes included (a change
        just sent shows once the engine has applied it)."""
        ...

    @property
    def started(self) -> bool:
        """Whether start() was called (a handle is started once; restart() for a new run)."""
        ...

    @property
    def commands_in_flight(self) -> int:
        """How many commands were sent whose effect the latest snapshot does not show yet
        (always 0 for a handle that applies them at once, and once the run has ended)."""
        ...

    def start(self) -> None:
        """Start the run (returns at once; the engine runs off the caller's loop)."""

    def snapshot(self) -> StatsSnapshot:
        """The latest immutable snapshot of everything measured; returns at once."""
        ...

    def set_conversations(self, n: int) -> None:
        """Change how many conversations are live at once; starts a new stats phase."""

    def set_delay(self, delay_ms: float) -> None:
        """Change the delay between tokens; starts a new stats phase."""

    def set_rate(self, rate: float) -> None:
        """Open loop (--rate): new conversations per second; starts a new stats phase and
        holds a load profile. Ignored in a closed loop."""

    def hold_profile(self) -> None:
        """Take the load over from the --stages profile: it stops moving on, and the run's
        clock with it, until release_profile()."""

    def release_profile(self) -> None:
        """Hand the load back to the profile (its current stage's target, a new phase)."""

    def pause(self) -> None:
        """Stop starting conversations and publishing tokens; streams stay open."""

    def resume(self) -> None: ...

    def stop(self) -> None:
        """Ask the run to end: stop publishing, drain in-flight tokens, finish. Returns at once."""

    def join(self, timeout: float | None = None) -> StatsSnapshot:
        """Wait until the run has finished and return its final snapshot."""
        ...

    def restart(self, settings: Settings | None = None) -> None:
        """Start a new run (after the previous one finished) with these or the current
        settings; a run id equal to the previous run's gets a `-rN` suffix."""
