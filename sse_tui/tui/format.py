"""Short, fixed-width number formats for the panels (the screen is 80 columns wide)."""

from __future__ import annotations

import math


def is_missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_ms(x: float | None) -> str:
    """Milliseconds in at most 6 characters: `0.42`, `12.3`, `1234`, `12.3k`."""
    if is_missing(x):
        return "–"
    assert x is not None
    if x < 10:
        return f"{x:.2f}"
    if x < 1000:
        return f"{x:.1f}"
    if x < 100_000:
        return f"{x:.0f}"
    return f"{x / 1000:.0f}k"


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_rate(x: float) -> str:
    if x < 10:
        return f"{x:.2f}/s"
    if x < 100_000:
        return f"{x:,.0f}/s"
    return f"{x / 1000:,.0f}k/s"


def fmt_clock(seconds: float | None) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on; `∞` when there is no end."""
    if seconds is None:
        return "∞"
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds:.0f}s"
    return f"{seconds / 3600:.0f}h"


def fmt_delay(ms: float) -> str:
    return f"{ms:g} ms"
