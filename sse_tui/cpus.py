"""How many CPUs this process may use: the default of `--workers`.

`os.cpu_count()` is the machine's; a process may be held to fewer by its CPU affinity
(`taskset`, a cpuset) and, in a container, by a CPU quota (a pod's `limits.cpu: 2` is a
cgroup quota of 2 CPUs' time per period on a 64-core node). More engine processes than the
quota allows only take turns on it, so the default is the smallest of the three.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may use (at least 1): affinity, capped by any cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_quota(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs (1.5 = one and a half), or None when there is none.

    cgroup v2 writes it as `cpu.max` ("200000 100000": quota and period in µs; "max 100000":
    no limit). cgroup v1 writes the same two numbers in `cpu/cpu.cfs_quota_us` (-1: no
    limit) and `cpu/cpu.cfs_period_us`. Only the files at the root are read: inside a
    container that is the container's own cgroup."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _ratio(parts[0], parts[1])
        return None
    quota = _read(root / "cpu" / "cpu.cfs_quota_us")
    period = _read(root / "cpu" / "cpu.cfs_period_us")
    if quota is not None and period is not None:
        return _ratio(quota, period)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None
