"""The HDR histogram we use everywhere: one configuration, one percentile definition.

Values are microseconds: 1 µs .. 1 h at 3 significant digits (percentiles within 0.1%).
Only hdrhistogram's API is used here (record, add, encode/decode, the count/value index
accessors, and its `counts` bucket array, read-only, with the accessor as a fallback), so an
upgrade of the library cannot silently change our figures.
"""

from __future__ import annotations

import bisect
import itertools
import math
import weakref
from collections.abc import Sequence

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3


def new_hdr() -> HdrHistogram:
    return _untangled(HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))


def _untangled(hdr: HdrHistogram) -> HdrHistogram:
    """The histogram with its encoder's back-reference made weak. hdrhistogram's histogram
    and encoder refer to each other, so a dropped histogram (184 KiB of buckets) waited for
    the cyclic garbage collector: a --workers coordinator, decoding every worker's report
    4 times a second, held ~100 MiB of them (measured at 10 000 connections). Without the
    cycle, reference counting frees each one at once. The encoder is only ever used
    through its histogram, which is then alive."""
    encoder = getattr(hdr, "encoder", None)
    if encoder is not None and getattr(encoder, "histogram", None) is hdr:
        encoder.histogram = weakref.proxy(hdr)
    return hdr


def percentile_values(hdr: HdrHistogram, percentiles: Sequence[float], min_value: int,
                      max_value: int) -> dict[float, int]:
    """Nearest-rank percentiles (rank = ceil(p/100 * n)): the highest value of the bucket
    holding the sample of that rank.

    hdrhistogram's own get_percentile_to_value_dict rounds the rank instead (int(p*n/100 +
    0.5)), which in a sparse tail picks the neighbouring sample: 2% off at p99.9 of 50k
    samples. The walk starts at the bucket of the smallest value, not at bucket 0.
    """
    total = hdr.get_total_count()
    wanted = sorted(
        (max(1, math.ceil(round(min(p, 100.0) * total / 100.0, 9))), p) for p in percentiles)
    out: dict[float, int] = {}
    if total == 0 or not wanted:
        return out
    lo = hdr.get_counts_array_index(min_value)
    hi = hdr.get_counts_array_index(max_value)
    # The running count over the buckets from min to max, in one C-level pass: walking them
    # one get_count_at_index() call at a time cost ~6 ms for a wide distribution, several
    # times per repaint. `counts` is the library's bucket array (its codec reads it too);
    # where a version lacks it, the accessor does the same, slower.
    counts = getattr(hdr, "counts", None)
    window = (counts[lo:hi + 1] if counts is not None
              else [hdr.get_count_at_index(i) for i in range(lo, hi + 1)])
    running = list(itertools.accumulate(window))
    for target, p in wanted:
        at = bisect.bisect_left(running, target)  # the first bucket where seen >= target
        if at == len(running):  # only if the counts and max_value disagree
            out[p] = max_value
        else:
            out[p] = hdr.get_highest_equivalent_value(hdr.get_value_from_index(lo + at))
    return out


def encode(hdr: HdrHistogram) -> str:
    """HdrHistogram's portable V2 encoding (compressed, base64): the JSON's and the pipe's."""
    return hdr.encode().decode("ascii")


def decode(blob: str | bytes) -> HdrHistogram:
    """The histogram `encode()` made (the JSON of another pod, or a snapshot off the pipe)."""
    return _untangled(
        HdrHistogram.decode(blob.encode("ascii") if isinstance(blob, str) else blob))
