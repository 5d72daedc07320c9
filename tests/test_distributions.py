"""Distributions of conversation shapes: what is asked is what is drawn, and seeds repeat."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from sse_tui.distributions import SHAPES, DistributionError, parse_distribution

N = 50_000


def draw(text: str, seed: int = 7, n: int = N) -> list[float]:
    d = parse_distribution(text)
    rng = random.Random(seed)
    return [d.sample(rng) for _ in range(n)]


def quantile(xs: list[float], q: float) -> float:
    return sorted(xs)[int(q * (len(xs) - 1))]


def test_uniform_mean_and_spread() -> None:
    xs = draw("20..400")
    assert min(xs) >= 20 and max(xs) <= 400
    assert statistics.fmean(xs) == pytest.approx(210, rel=0.02)
    assert statistics.pstdev(xs) == pytest.approx(380 / math.sqrt(12), rel=0.03)


def test_exponential_mean_and_spread() -> None:
    xs = draw("exp:200")
    assert statistics.fmean(xs) == pytest.approx(200, rel=0.03)
    assert statistics.pstdev(xs) == pytest.approx(200, rel=0.05)  # an exponential's sd = mean


def test_lognormal_has_the_median_and_p99_asked_for() -> None:
    xs = draw("lognormal:median=150,p99=1500")
    assert quantile(xs, 0.5) == pytest.approx(150, rel=0.03)
    assert quantile(xs, 0.99) == pytest.approx(1500, rel=0.08)
    assert statistics.fmean(xs) == pytest.approx(parse_distribution(
        "lognormal:median=150,p99=1500").mean(), rel=0.05)


def test_clamping_holds_every_sample_within_bounds() -> None:
    xs = draw("exp:200,min=50,max=300")
    assert min(xs) == 50 and max(xs) == 300  # both bounds are reached, none crossed
    assert sum(x == 300 for x in xs) / N == pytest.approx(math.exp(-300 / 200), rel=0.1)


def test_the_same_seed_gives_the_same_shape_and_another_seed_does_not() -> None:
    assert draw("lognormal:median=150,p99=1500", seed=3, n=100) == draw(
        "lognormal:median=150,p99=1500", seed=3, n=100)
    assert draw("exp:20", seed=3, n=100) != draw("exp:20", seed=4, n=100)


def test_a_fixed_value_is_fixed_and_whole_counts_are_at_least_one() -> None:
    d = parse_distribution("200")
    assert d.fixed and d.sample(random.Random()) == 200.0
    rng = random.Random(1)
    assert min(parse_distribution("0..2").sample_int(rng) for _ in range(1000)) == 1


@pytest.mark.parametrize("text", ["200", "20..400", "exp:200", "exp:200,max=2000",
                                  "lognormal:median=150,p99=1500,min=5,max=4000"])
def test_the_text_round_trips(text: str) -> None:
    assert str(parse_distribution(text)) == text


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty value"),
    ("abc", "not a number"),
    ("400..20", "runs backwards"),
    ("exp:", "needs its mean"),
    ("gauss:3", "unknown distribution 'gauss'"),
    ("lognormal:median=150", "needs median and p99"),
    ("lognormal:median=150,p99=100", "need 0 < median < p99"),
    ("exp:200,max=10,min=20", "min is above max"),
    ("exp:200,cap=3", "unknown parameter 'cap'"),
    ("-5", ">= 0"),
])
def test_bad_text_says_what_to_write(text: str, message: str) -> None:
    with pytest.raises(DistributionError, match=message) as info:
        parse_distribution(text)
    assert "\n" not in str(info.value)


def test_every_preset_parses_and_says_why() -> None:
    for shape in SHAPES.values():
        tokens, delay, first = shape.distributions()
        assert tokens.mean() > 1 and delay.mean() > 0 and first.mean() > 0
        assert shape.why


def test_the_length_histogram_spans_the_buckets_used() -> None:
    from sse_tui.shaping import LENGTH_BUCKETS, length_bucket, length_histogram_text

    counts = [0] * LENGTH_BUCKETS
    for n in (5, 6, 40, 40, 40, 40, 300):
        counts[length_bucket(n)] += 1
    # 4..7: 2, 32..63: 4, 256..511: 1, and the empty buckets between them as blanks.
    assert length_histogram_text(tuple(counts)) == "▄  █  ▂ 4..511 tok"
    assert length_histogram_text((0,) * LENGTH_BUCKETS) == ""
    assert length_bucket(1) == 0 and length_bucket(10**9) == LENGTH_BUCKETS - 1
