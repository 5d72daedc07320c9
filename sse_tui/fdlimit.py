"""Enough file descriptors for the run, checked before it starts.

Every conversation that reads a stream holds a socket. With the usual soft limit of 1024,
`-c 2000` used to fail mid-run with EMFILE, reported as connect errors and an overloaded
generator. So: raise the soft RLIMIT_NOFILE to the hard limit (what `ulimit -n` allows
without privileges), and if the conversations still cannot fit, say so up front (exit 2).
The engine's own process (TUI mode) inherits the raised limit.
"""

from __future__ import annotations

import sys

from sse_tui.capacity import peak_conversations
from sse_tui.settings import Settings, UsageError

# Descriptors besides the streams: Redis connections, the event loop's own, stdio, log and
# JSON files, the TUI's pipes to the engine process.
MARGIN = 64


def descriptors_needed(settings: Settings) -> int:
    streams = peak_conversations(settings) if settings.mode in ("consumer", "both") else 0
    return streams + MARGIN


def ensure_descriptors(settings: Settings) -> None:
    """Raise the soft limit as far as the hard one allows; UsageError if the run cannot fit."""
    if sys.platform == "win32":  # pragma: no cover (no RLIMIT_NOFILE there)
        return
    import resource

    need = descriptors_needed(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if soft != infinite and (hard == infinite or soft < hard):
        # An unlimited hard limit still has a kernel ceiling (fs.nr_open): ask for what is
        # needed (at least), not for infinity.
        wanted = hard if hard != infinite else max(soft, need)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft != infinite and soft < need:
        raise UsageError(
            f"{settings.conversations} conversations need about {need} file descriptors "
            f"(one socket each, plus {MARGIN}), but this process may open only {soft} "
            f"(hard limit {'unlimited' if hard == infinite else hard}): raise it with "
            f"`ulimit -n {need}` or run fewer conversations per process")
