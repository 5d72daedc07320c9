"""The steps the +/- and ]/[ keys take: 1-2-5 for the delay, whole decades for the count."""

from __future__ import annotations

import math

MAX_CONVERSATIONS = 100_000
MAX_DELAY_MS = 60_000.0

_DELAYS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 60000)


def step_conversations(n: int, direction: int) -> int:
    """One step up (+1) or down (-1): by 1 below 10, by 10 below 100, by 100 below 1000..."""
    if direction > 0:
        step = 10 ** int(math.log10(max(n, 1)))
        return min(MAX_CONVERSATIONS, (n // step + 1) * step)
    if n <= 1:
        return 1
    step = 10 ** int(math.log10(n - 1))
    return max(1, math.ceil(n / step - 1) * step)


def step_delay(ms: float, direction: int) -> float:
    """The next value on the 0, 1, 2, 5, 10, 20, 50... ladder, longer (+1) or shorter (-1)."""
    if direction > 0:
        return float(next((d for d in _DELAYS if d > ms), MAX_DELAY_MS))
    return float(next((d for d in reversed(_DELAYS) if d < ms), 0))
