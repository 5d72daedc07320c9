"""What a run's conversations look like: the --shape preset applied to the settings, the
engine's per-conversation draws, and the length of a --trace replay.

The settings keep a shaped value as a number with its distribution attached (see
sse_tui.distributions.ShapedInt); `ConversationShapes` is the one place that draws from them.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass

from sse_tui.distributions import (
    SHAPES,
    Distribution,
    ShapedFloat,
    ShapedInt,
    distribution_of,
    is_shaped,
)
from sse_tui.settings import Settings
from sse_tui.trace import load_trace

# The fields a --shape preset fills, unless given by a flag or the config file.
SHAPED_FIELDS = ("tokens", "delay_ms", "first_token_delay_ms")


def apply_shape(settings: Settings, explicit: Collection[str]) -> Settings:
    """The settings with the --shape preset's distributions where none was given."""
    if not settings.shape:
        return settings
    tokens, delay, first = SHAPES[settings.shape].distributions()
    preset = {"tokens": ShapedInt(tokens), "delay_ms": ShapedFloat(delay),
              "first_token_delay_ms": ShapedFloat(first)}
    return settings.with_changes(**{k: v for k, v in preset.items() if k not in explicit})


def trace_length_s(settings: Settings) -> float:
    """How long one pass of --trace lasts at --speed (its last token, plus a second to drain)."""
    return load_trace(settings.trace).length_s / settings.speed + 1.0


@dataclass(frozen=True)
class ConversationShapes:
    """Draws each conversation's token count, gaps and prefill, from one seeded generator
    (--seed: the same seed, the same conversations; 0: a new one each run)."""

    tokens: Distribution
    delay_ms: Distribution
    first_token_delay_ms: Distribution
    rng: random.Random

    @classmethod
    def of(cls, settings: Settings) -> ConversationShapes:
        # Its own stream, apart from --arrival's: changing the rate keeps the shapes.
        seed = settings.seed or None
        return cls(distribution_of(settings.tokens), distribution_of(settings.delay_ms),
                   distribution_of(settings.first_token_delay_ms),
                   random.Random(None if seed is None else f"shape:{seed}"))

    @property
    def shaped(self) -> bool:
        return not (self.tokens.fixed and self.delay_ms.fixed and self.first_token_delay_ms.fixed)

    def token_count(self) -> int:
        return self.tokens.sample_int(self.rng) if not self.tokens.fixed else int(self.tokens.a)

    def first_token_delay_s(self) -> float:
        d = self.first_token_delay_ms
        return (d.a if d.fixed else d.sample(self.rng)) / 1000.0


def distributions_json(settings: Settings) -> dict[str, object]:
    """The JSON settings' `distributions`: what each shaped setting's number (its mean)
    stands for; empty when nothing is drawn from a distribution."""
    return {f: distribution_of(getattr(settings, f)).to_json() for f in SHAPED_FIELDS
            if is_shaped(getattr(settings, f))}


# Conversation lengths so far, for the producer panel: counts per power-of-two bucket
# (bucket i holds lengths 2**i .. 2**(i+1)-1), so that 5 and 5000 tokens fit one line.
LENGTH_BUCKETS = 16
_BARS = " ▁▂▃▄▅▆▇█"


def length_bucket(tokens: int) -> int:
    return min(LENGTH_BUCKETS - 1, max(0, tokens.bit_length() - 1))


def length_histogram_text(counts: tuple[int, ...]) -> str:
    """`▁▃█▅▂ 8..511 tok`: the buckets from the first to the last one used."""
    used = [i for i, n in enumerate(counts) if n]
    if not used:
        return ""
    lo, hi = used[0], used[-1]
    top = max(counts)
    bars = "".join(_BARS[0 if not n else max(1, round(8 * n / top))] for n in counts[lo:hi + 1])
    return f"{bars} {2 ** lo}..{2 ** (hi + 1) - 1} tok"
