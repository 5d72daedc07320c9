"""Is Redis holding publishing back? The Redis side of "who is the bottleneck".

The publisher sends one pipeline at a time and waits for its reply, so a Redis that stops
answering (a fork for a snapshot, a slow replica, SIGSTOP) holds every conversation back: the
offered load drops while the generator itself is idle. The self-check (selfwatch) does not see
this — the publisher reports it only its own lateness — so it is judged here, from the publish
round trips and the tokens that came due while a slow reply was awaited. The schedule is
absolute (sse_tui.engine.producer), so those tokens are not lost: they go out late, at once,
when Redis answers, and their wait shows in the intended latency (`latency_intended`).

Live: a warning while a reply is overdue, or when a slow round trip in the last LIVE_S held
tokens back. End of run: a verdict from the run's totals alone (the `publish_rtt` histogram
and `tokens_held_back_by_redis`), so a merged summary gets the same verdict.
"""

from __future__ import annotations

import time
from collections import deque

from sse_tui.snapshot import PhaseStats

# A PUBLISH round trip this long is a Redis stall: on a healthy Redis it is well under 1 ms,
# and at the usual token delays (20-100 ms) a 100 ms wait costs every conversation tokens.
SLOW_RTT_MS = 100.0
LIVE_S = 10.0  # the live warning covers the last 10 s, as the self-check's does
_KEPT = 1000
# A round trip is measured on our loop: while the generator itself is overloaded, replies
# also wait for us, so the verdict says so rather than put it all on Redis.
_ALSO_OURS = "; the generator was overloaded too, which lengthens round trips as well"


def _duration(ms: float) -> str:
    if ms < 10:
        return f"{ms:.1f} ms"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


class PublishWatch:
    """Slow round trips and held-back tokens of the last LIVE_S, for the live warning."""

    def __init__(self) -> None:
        self._slow: deque[tuple[float, float]] = deque(maxlen=_KEPT)  # (when, rtt ms)
        self._held: deque[tuple[float, int]] = deque(maxlen=_KEPT)  # (when, tokens)

    def round_trip(self, rtt_s: float) -> None:
        if rtt_s * 1000.0 >= SLOW_RTT_MS:
            self._slow.append((time.monotonic(), rtt_s * 1000.0))

    def held_back(self, tokens: int) -> None:
        """Tokens that went out late (once Redis answered) because a slow reply held them."""
        self._held.append((time.monotonic(), tokens))

    def warning(self, waiting_s: float | None = None, *,
                generator_overloaded: bool = False) -> str | None:
        """`waiting_s`: how long the pipeline in flight has waited for its reply (None: none
        is); `generator_overloaded`: the self-check's live warning is on."""
        text = self._warning(waiting_s)
        return text + _ALSO_OURS if text and generator_overloaded else text

    def _warning(self, waiting_s: float | None) -> str | None:
        now = time.monotonic()
        for events in (self._slow, self._held):
            while events and events[0][0] < now - LIVE_S:
                events.popleft()
        if waiting_s is not None and waiting_s * 1000.0 >= SLOW_RTT_MS:
            return (f"Redis has not answered a PUBLISH for {_duration(waiting_s * 1000.0)}: "
                    "publishing is stalled on Redis, not on the generator")
        held = sum(n for _, n in self._held)
        if not self._slow or held < 1:
            return None
        worst = max(ms for _, ms in self._slow)
        return (f"Redis is slow: publish round trip up to {_duration(worst)} in the last "
                f"{LIVE_S:.0f} s; {held} tokens went out late, behind schedule, waiting for "
                "it (Redis, not the generator, held publishing back)")


def redis_verdict(total: PhaseStats, *, generator_overloaded: bool = False) -> str | None:
    """The run's verdict on Redis, from its totals: None when Redis kept up."""
    rtt = total.publish_rtt.summary
    held = total.tokens_held_back_by_redis
    if rtt.count == 0 or rtt.max < SLOW_RTT_MS or held < 1:
        return None
    return (f"Redis held publishing back: publish round trip p99 {_duration(rtt.p99)}, max "
            f"{_duration(rtt.max)}; {held} tokens went out late, behind schedule, while the "
            "generator waited for Redis (their wait is in the intended latency)"
            + (_ALSO_OURS if generator_overloaded else ""))
