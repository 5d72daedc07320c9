"""Which conversations are the most interesting: the one ranking the engine and the TUI share.

The engine uses it to choose which live conversations a snapshot carries when there are too
many to send them all; the consumer table to order its rows. Both rank by what a
conversation and its view have in common (the `Rankable` attributes): errors first, then
lost, duplicated or out-of-order tokens, reconnects, slow ones, the rest of the live ones,
the finished ones; within each, by number.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Protocol, TypeVar

from sse_tui.snapshot import ConversationState, Distribution

# Fewer samples than this give no meaningful p99: nothing counts as slow yet.
SLOW_MIN_SAMPLES = 20


class Rankable(Protocol):
    @property
    def number(self) -> int: ...

    @property
    def state(self) -> ConversationState: ...

    @property
    def error(self) -> str | None: ...

    @property
    def missing(self) -> int: ...

    @property
    def duplicated(self) -> int: ...

    @property
    def out_of_order(self) -> int: ...

    @property
    def reconnects(self) -> int: ...

    @property
    def last_latency_ms(self) -> float | None: ...


R = TypeVar("R", bound=Rankable)


def slow_threshold_ms(run_latency: Distribution) -> float | None:
    """A conversation is slow when its last latency is above the run's p99 and twice its p50."""
    if run_latency.count < SLOW_MIN_SAMPLES:
        return None
    return max(run_latency.p99, 2 * run_latency.p50)


# Looked up once: an Enum member or property read per conversation is most of the cost
# of ranking 10 000 of them four times a second.
_ERROR = ConversationState.ERROR
_RECONNECTING = ConversationState.RECONNECTING
_LIVE = frozenset(s for s in ConversationState if s.live)
_CLASSES = 6  # the values interest() returns


def interest(c: Rankable, slow_ms: float | None) -> int:
    """Lower is more interesting."""
    state = c.state
    if state is _ERROR or c.error:
        return 0
    if c.missing or c.duplicated or c.out_of_order:
        return 1
    if state is _RECONNECTING or c.reconnects:
        return 2
    if slow_ms is not None:
        last = c.last_latency_ms
        if last is not None and last >= slow_ms:
            return 3
    return 4 if state in _LIVE else 5


def most_interesting(items: Iterable[R], n: int, slow_ms: float | None) -> list[R]:
    """The `n` most interesting, most interesting first (by number within a class).

    One pass sorts them into their classes, then only the classes needed are ordered: at
    `-c 10000` ~5 ms rather than ~15 ms for one heap over (class, number) keys."""
    classes: tuple[list[R], ...] = tuple([] for _ in range(_CLASSES))
    for c in items:
        classes[interest(c, slow_ms)].append(c)
    out: list[R] = []
    for members in classes:
        if len(out) >= n:
            break
        out.extend(heapq.nsmallest(n - len(out), members, key=_number))
    return out


def _number(c: Rankable) -> int:
    return c.number
