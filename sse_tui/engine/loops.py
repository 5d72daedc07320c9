"""Which event loop runs the engine: uvloop where it is installed, else asyncio's own.

uvloop does a socket read's bookkeeping (the selector, the ready queue, the protocol call) in
C, where asyncio does it in Python: at the anchor load (200 streams, ~16,000 tokens/s) the
engine spends ~16% less CPU per token with it (docs/benchmarks.md). It is optional: where it
cannot be imported, or `SSE_TUI_LOOP=asyncio` asks, the engine runs on asyncio's loop and
measures the same things the same way.

One thing is changed on uvloop's loop: its clock. uvloop's `loop.time()` is libuv's cached
millisecond clock (its value moves in steps of 1 ms and stands still within a loop turn), and
the engine times sub-millisecond things with `loop.time()`: connects, the publish round trip,
the schedule's lateness that decides `intended_ts`. So `time()` here is `time.monotonic()`, the
clock asyncio's loop uses. uvloop computes timer delays from `self.time()`, so timers follow the
same clock; they still fire at libuv's millisecond resolution, which is why the publisher treats
a timer that fired as its due time having come (producer.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "SSE_TUI_LOOP"  # "asyncio" forces asyncio's loop; "uvloop" (or unset) prefers uvloop


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory for uvloop loops with a fine clock, or None where uvloop is not usable."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None

    class FineClockLoop(uvloop.Loop):
        def time(self) -> float:
            return time.monotonic()

    return FineClockLoop


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """"uvloop" or "asyncio": which loop runs (the running one by default)."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith(("uvloop", __name__)) else "asyncio"


def new_loop() -> asyncio.AbstractEventLoop:
    factory = _uvloop_factory()
    return factory() if factory is not None else asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the engine's loop (new_loop)."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
