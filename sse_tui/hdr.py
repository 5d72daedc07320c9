"""The HDR histogram we use everywhere, and how it crosses a process boundary.

Values are microseconds: 1 µs .. 1 h at 3 significant digits (percentiles within 0.1%).
"""

from __future__ import annotations

import ctypes
import math

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3


class NearestRankHdr(HdrHistogram):
    """HdrHistogram with the standard nearest-rank percentile (rank = ceil(p/100 * n)).

    The Python port rounds the rank (int(p * n / 100 + 0.5)), which in a sparse tail can
    pick the neighbouring sample: 2% off at p99.9 of 50k samples. With nearest rank the
    only error left is the bucket width, 0.1% at 3 significant digits.
    """

    def get_target_count_at_percentile(self, percentile: float) -> int:
        rank = round(min(percentile, 100.0) * self.total_count / 100.0, 9)
        return max(1, math.ceil(rank))


def new_hdr() -> HdrHistogram:
    return NearestRankHdr(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def counts_slice(hdr: HdrHistogram, min_value: int, max_value: int) -> tuple[int, bytes]:
    """The counts between the buckets of min and max (all others are zero), as raw bytes.

    A memcpy of a few KB, where HdrHistogram's own encode() walks every bucket."""
    lo = hdr._counts_index_for(int(min_value))
    hi = hdr._counts_index_for(int(max_value))
    return lo, memoryview(hdr.counts)[lo:hi + 1].tobytes()


def hdr_from_counts(lo: int, data: bytes, total: int, min_value: int,
                    max_value: int) -> HdrHistogram:
    """Rebuild a histogram from `counts_slice`."""
    hdr = new_hdr()
    ctypes.memmove(ctypes.addressof(hdr.counts) + lo * hdr.word_size, data, len(data))
    hdr.total_count = total
    hdr.min_value = min_value
    hdr.max_value = max_value
    return hdr
