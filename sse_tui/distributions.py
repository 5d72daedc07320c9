"""Conversation shapes drawn from distributions: token counts, gaps and prefill delays.

Real LLM traffic is not N identical conversations: answers range from a few tokens to
thousands and the first token waits for the prompt to be processed. A value here is either
fixed (`200`) or a distribution a user can read off a dashboard:

  `20..400`                         uniform between the two bounds
  `exp:200`                         exponential with mean 200
  `lognormal:median=150,p99=1500`   log-normal given by two of its quantiles
  any of them `,min=..,max=..`      clamped (`exp:200,max=2000`)

Samples come from a `random.Random` the caller seeds (`--seed`), so a run can be repeated.
Everything is in the unit of the setting it shapes (tokens, or milliseconds).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

# z of the 99th percentile of the standard normal: lognormal p99 = median * exp(sigma * Z99).
Z99 = 2.3263478740408408
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE = re.compile(rf"^({_NUMBER})\s*\.\.\s*({_NUMBER})$")
EXAMPLES = "200, 20..400, exp:200 or lognormal:median=150,p99=1500 (optionally ,min=..,max=..)"


class DistributionError(ValueError):
    """A distribution text that cannot be read; the message says what to write instead."""


@dataclass(frozen=True)
class Distribution:
    """A fixed value or a distribution of non-negative values, clamped to [low, high]."""

    kind: str  # "fixed", "uniform", "exp", "lognormal"
    a: float  # fixed: the value; uniform: lower bound; exp: mean; lognormal: median
    b: float = 0.0  # uniform: upper bound; lognormal: p99
    low: float = 0.0
    high: float = math.inf

    @property
    def fixed(self) -> bool:
        return self.kind == "fixed"

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            x = self.a
        elif self.kind == "uniform":
            x = rng.uniform(self.a, self.b)
        elif self.kind == "exp":
            x = rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0
        else:
            x = rng.lognormvariate(math.log(self.a), self._sigma())
        return min(max(x, self.low), self.high)

    def sample_int(self, rng: random.Random, *, at_least: int = 1) -> int:
        """A whole count (tokens per conversation): rounded, and never below `at_least`."""
        return max(at_least, round(self.sample(rng)))

    def _sigma(self) -> float:
        return math.log(self.b / self.a) / Z99

    def mean(self) -> float:
        """The mean before clamping (what a user asked for; tests compare against it)."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "exp":
            return self.a
        return self.a * math.exp(self._sigma() ** 2 / 2)

    def __str__(self) -> str:
        if self.kind == "fixed":
            text = _num(self.a)
        elif self.kind == "uniform":
            text = f"{_num(self.a)}..{_num(self.b)}"
        elif self.kind == "exp":
            text = f"exp:{_num(self.a)}"
        else:
            text = f"lognormal:median={_num(self.a)},p99={_num(self.b)}"
        if self.low > 0:
            text += f",min={_num(self.low)}"
        if self.high != math.inf:
            text += f",max={_num(self.high)}"
        return text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": str(self), "kind": self.kind, "mean": round(self.mean(), 3)}
        if self.low > 0:
            out["min"] = self.low
        if self.high != math.inf:
            out["max"] = self.high
        return out


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _number(text: str, what: str, whole: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise DistributionError(f"{what} in {whole!r} is not a number: use {EXAMPLES}") from None
    if not math.isfinite(x) or x < 0:
        raise DistributionError(f"{what} in {whole!r} must be a finite number >= 0")
    return x


def _params(parts: list[str], whole: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in parts:
        key, eq, value = p.partition("=")
        if not eq:
            raise DistributionError(f"{p!r} in {whole!r}: write name=value, e.g. max=2000")
        out[key.strip().lower()] = _number(value.strip(), key.strip(), whole)
    return out


def parse_distribution(text: str) -> Distribution:
    """Read one of the forms in the module docstring; DistributionError says what is wrong."""
    whole = text.strip()
    if not whole:
        raise DistributionError(f"empty value: use {EXAMPLES}")
    kind, colon, rest = whole.partition(":")
    # The first comma-separated part is the value itself (`200`, `20..400`, `exp:200`, or
    # `lognormal:median=150` whose first part is already a parameter); the rest are name=value.
    first, *others = [p.strip() for p in (rest if colon else whole).split(",")]
    if colon and "=" in first:
        others.insert(0, first)
        first = ""
    params = _params(others, whole)
    low, high = params.pop("min", 0.0), params.pop("max", math.inf)
    if low > high:
        raise DistributionError(f"min is above max in {whole!r}")
    kind = kind.strip().lower() if colon else ("uniform" if ".." in first else "fixed")
    wanted = {"fixed": set(), "uniform": set(), "exp": set(), "lognormal": {"median", "p99"}}
    if kind not in wanted:
        raise DistributionError(f"unknown distribution {kind!r} in {whole!r}: use {EXAMPLES}")
    extra = sorted(set(params) - wanted[kind])
    if extra:
        raise DistributionError(f"unknown parameter {extra[0]!r} in {whole!r}: use {EXAMPLES}")
    if kind == "fixed":
        return Distribution("fixed", _number(first, "the value", whole), low=low, high=high)
    if kind == "uniform":
        m = _RANGE.match(first)
        if not m:
            raise DistributionError(f"invalid range {whole!r}: write LOW..HIGH, e.g. 20..400")
        lo, hi = float(m.group(1)), float(m.group(2))
        if lo > hi:
            raise DistributionError(f"the range {whole!r} runs backwards: write LOW..HIGH")
        return Distribution("uniform", lo, hi, low=low, high=high)
    if kind == "exp":
        if not first:
            raise DistributionError(f"{whole!r} needs its mean: e.g. exp:200")
        return Distribution("exp", _number(first, "the mean", whole), low=low, high=high)
    median, p99 = params.get("median"), params.get("p99")
    if first or median is None or p99 is None:
        raise DistributionError(
            f"{whole!r} needs median and p99: e.g. lognormal:median=150,p99=1500")
    if not 0 < median < p99:
        raise DistributionError(f"{whole!r}: need 0 < median < p99")
    return Distribution("lognormal", median, p99, low=low, high=high)


@dataclass(frozen=True)
class Shape:
    """A named preset: what a conversation looks like (tokens, inter-token gap, prefill)."""

    name: str
    tokens: str
    delay_ms: str
    first_token_delay_ms: str
    why: str

    def distributions(self) -> tuple[Distribution, Distribution, Distribution]:
        return (parse_distribution(self.tokens), parse_distribution(self.delay_ms),
                parse_distribution(self.first_token_delay_ms))


# The numbers are orders of magnitude, not measurements of any one service: output lengths as
# in the ShareGPT conversations vLLM's benchmark_serving replays (median a few hundred tokens,
# a long tail into the thousands), decode speeds of 20-60 tokens/s per stream, and prefill of
# a few hundred ms growing with the prompt. Use `record` on your own system for real numbers.
SHAPES: dict[str, Shape] = {s.name: s for s in (
    Shape("chat", tokens="lognormal:median=250,p99=1500,min=5,max=4000",
          delay_ms="lognormal:median=25,p99=80,max=1000",
          first_token_delay_ms="lognormal:median=300,p99=2000,max=10000",
          why="chat answers: a few hundred tokens, ~40 tokens/s, prefill ~0.3 s"),
    Shape("long-form", tokens="lognormal:median=1500,p99=6000,min=100,max=16000",
          delay_ms="lognormal:median=30,p99=100,max=1000",
          first_token_delay_ms="lognormal:median=800,p99=4000,max=20000",
          why="documents and code: thousands of tokens, connections held for minutes"),
    Shape("short", tokens="lognormal:median=30,p99=200,min=1,max=1000",
          delay_ms="lognormal:median=20,p99=60,max=1000",
          first_token_delay_ms="lognormal:median=150,p99=800,max=5000",
          why="classifiers and short replies: subscriptions churn fast"),
)}


class ShapedInt(int):
    """A whole-number setting drawn from a distribution (`--tokens 20..400`).

    As a number it is the distribution's mean, rounded: what displays, capacity checks and
    the JSON's existing numeric key show. The engine draws each conversation's own value
    from `dist` (see `distribution_of`). str() gives the text it was written as."""

    dist: Distribution

    def __new__(cls, dist: Distribution) -> ShapedInt:
        obj = super().__new__(cls, max(1, round(dist.mean())))
        obj.dist = dist
        return obj

    def __str__(self) -> str:
        return str(self.dist)

    def __format__(self, spec: str) -> str:
        # In f-strings (panels, labels, progress lines) it reads as the mean it is: `~210`.
        return f"~{int(self)}" if spec in ("", "d") else super().__format__(spec)

    def __repr__(self) -> str:
        return f"ShapedInt({str(self.dist)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShapedInt, (self.dist,))


class ShapedFloat(float):
    """A millisecond setting drawn from a distribution (`--delay exp:30`); see ShapedInt."""

    dist: Distribution

    def __new__(cls, dist: Distribution) -> ShapedFloat:
        obj = super().__new__(cls, dist.mean())
        obj.dist = dist
        return obj

    def __str__(self) -> str:
        return str(self.dist)

    def __format__(self, spec: str) -> str:
        # `{delay:g} ms` in panels and labels reads `~28.3 ms`: the mean, marked as one.
        return f"~{float(self):.3g}" if spec in ("", "g") else super().__format__(spec)

    def __repr__(self) -> str:
        return f"ShapedFloat({str(self.dist)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShapedFloat, (self.dist,))


def distribution_of(value: float) -> Distribution:
    """The distribution a setting's value stands for: its own, or a fixed value."""
    dist = getattr(value, "dist", None)
    return dist if isinstance(dist, Distribution) else Distribution("fixed", float(value))


def is_shaped(value: float) -> bool:
    return isinstance(value, ShapedInt | ShapedFloat)


def shape_text(value: float) -> int | float | str:
    """How a setting is written back (TOML, flags): its distribution's text, or the number."""
    return str(value) if is_shaped(value) else value


def shown(value: float) -> str:
    """A setting for a line people read: its distribution's text, or the number (`50`)."""
    return str(value) if is_shaped(value) else f"{value:g}"
