"""How long to wait before the next attempt: exponential backoff with full jitter.

"Full jitter" (AWS architecture blog, "Exponential Backoff and Jitter"): the n-th wait is
uniform in [0, min(cap, base * 2**n)]. Spreading the waits over the whole interval is what
keeps a thousand conversations that lost their adapter at the same instant from coming back
at the same instant. A server's `retry:` field (what EventSource obeys) is a floor: we never
come back sooner than the server asked.
"""

from __future__ import annotations

import random

BASE_S = 0.1  # the first wait is up to this long
CAP_S = 5.0  # no wait is longer than this (unless the server's retry: asks for more)

_rng = random.Random()


def backoff_s(attempt: int, *, floor_s: float = 0.0, base_s: float = BASE_S,
              cap_s: float = CAP_S, rng: random.Random = _rng) -> float:
    """The wait before retry number `attempt` (0 for the first retry)."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 32))
    return max(floor_s, rng.uniform(0.0, ceiling))
