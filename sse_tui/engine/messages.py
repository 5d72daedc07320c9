"""What crosses the pipe between a view and the engine in its child process.

Commands go one way and are fire-and-forget: the child applies each on its own loop and the
effect shows in the next snapshot it pushes. Reports go the other way: a `Snapshot` every
push interval (and right after a batch of commands), then one `Final` when the run is over.
Each report says how many commands the child had applied when it was taken, so the parent
knows which of its commands a snapshot already shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never

from sse_tui.snapshot import StatsSnapshot

if TYPE_CHECKING:
    from sse_tui.engine.engine import LoadEngine


@dataclass(frozen=True, slots=True)
class SetConversations:
    """How many conversations are live at once; starts a new stats phase."""

    n: int


@dataclass(frozen=True, slots=True)
class SetDelay:
    """The delay between tokens, ms; starts a new stats phase."""

    delay_ms: float


@dataclass(frozen=True, slots=True)
class SetRate:
    """Open loop: new conversations per second; starts a new stats phase. Holds a load
    profile (the operator takes over)."""

    rate: float


@dataclass(frozen=True, slots=True)
class HoldProfile:
    """The operator takes the load over from the --stages profile: it stops moving on,
    and the run's clock stands still, until `ReleaseProfile`."""


@dataclass(frozen=True, slots=True)
class ReleaseProfile:
    """Hand the load back to the profile: its current stage's target, as a new phase."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop starting conversations and publishing tokens; streams stay open."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Undo `Pause`."""


@dataclass(frozen=True, slots=True)
class Stop:
    """End the run: stop publishing, give in-flight tokens the grace period, finish."""


@dataclass(frozen=True, slots=True)
class Hurry:
    """End the run at once, without the grace period."""


Command = (SetConversations | SetDelay | SetRate | HoldProfile | ReleaseProfile | Pause
           | Resume | Stop | Hurry)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine's figures as of now; a newer one makes an unsent older one worthless."""

    snapshot: StatsSnapshot
    commands_applied: int


@dataclass(frozen=True, slots=True)
class Final:
    """The run is over: its last snapshot. Never dropped, always the last report."""

    snapshot: StatsSnapshot
    commands_applied: int


Report = Snapshot | Final


def apply(engine: LoadEngine, command: Command) -> None:
    """Carry out one command on the engine (on the engine's own loop)."""
    match command:
        case SetConversations(n):
            engine.set_conversations(n)
        case SetDelay(delay_ms):
            engine.set_delay(delay_ms)
        case SetRate(rate):
            engine.set_rate(rate)
        case HoldProfile():
            engine.hold_profile()
        case ReleaseProfile():
            engine.release_profile()
        case Pause():
            engine.pause()
        case Resume():
            engine.resume()
        case Stop():
            engine.stop()
        case Hurry():
            engine.hurry()
        case _:
            assert_never(command)
