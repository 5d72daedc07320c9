"""Can one generator process hold the conversations asked for? Checked before a run starts.

`-c 10000000` used to build ten million conversations in one go with the loop blocked (no
Ctrl-C, no SIGTERM) until memory ran out. Each conversation costs memory and, when it reads
a stream, a socket; past MAX_CONVERSATIONS a single process is the wrong tool, and the
answer is more generator processes (the Indexed Job), said up front.

The engine opens conversations in batches that yield (LoadEngine._fill), so sizes below the
limit never block the loop either; a live change past it is capped there.
"""

from __future__ import annotations

from sse_tui.settings import Settings, UsageError
from sse_tui.values import parse_stages

MAX_CONVERSATIONS = 1_000_000


def peak_conversations(settings: Settings) -> int:
    """The most conversations live at once the run asks for: -c, or in a closed-loop
    --stages profile its largest stage (with --rate, -c is the cap)."""
    n = settings.conversations
    if settings.stages and settings.rate <= 0:
        n = max([n, *(int(st.target) for st in parse_stages(settings.stages))])
    return n


def check_capacity(settings: Settings) -> None:
    """Raise UsageError (one line, exit 2) when the run cannot fit in this process."""
    n = peak_conversations(settings)
    if n > MAX_CONVERSATIONS:
        raise UsageError(
            f"-c {n} is more conversations than one generator process can hold (at most "
            f"{MAX_CONVERSATIONS:,}); split the load over several "
            "processes (deploy/k8s/indexed-job.yaml) and combine them with sse-tui merge")
