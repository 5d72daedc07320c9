"""Prometheus metrics of a run (`--metrics-port`): `/metrics`, read from snapshots.

Nothing is counted twice: at scrape time `SnapshotCollector` reads the newest immutable
`StatsSnapshot` the view has (headless: pushed once a second from the engine's loop; the
TUI: the engine process's latest report) and turns it into metric families. The engine
pays nothing per token and knows nothing of Prometheus.

`metric_families` takes any number of (snapshot, worker) pairs, so that a fleet view can
serve its generators' snapshots through the same code; one generator is worker "0".

Every counter of the JSON summary's `Counters` is exported, as `sse_tui_<name>_total`, so the
final scrape equals the final JSON counter for counter. Histograms get fixed Prometheus
buckets (`BUCKETS_MS`) counted from the snapshot's HDR histograms, with the exact count and
sum; their values are in seconds, the Prometheus convention. docs/metrics.md lists it all.
"""

from __future__ import annotations

import errno
import math
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from sse_tui import __version__
from sse_tui.snapshot import COUNTER_FIELDS, HistogramSnapshot, StatsSnapshot
from sse_tui.values import UsageError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

PREFIX = "sse_tui_"
LABELS = ("run_id", "mode", "worker")

# The bucket ladder of every histogram, in ms (exported in seconds): sub-millisecond
# loopback latencies up to a minute-long connect. One ladder for all, so that dashboards can
# put any two side by side and add generators' buckets up.
BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
              10_000, 30_000, 60_000)
_BUCKETS_US = tuple(int(ms * 1000) for ms in BUCKETS_MS)
_BUCKET_LABELS = tuple(floatToGoString(ms / 1000) for ms in BUCKETS_MS)

# (StatsSnapshot.total field, metric name, help): the histograms exported.
HISTOGRAMS = (
    ("latency", "latency_seconds", "publish timestamp to receipt, per token"),
    ("first_token", "first_token_seconds",
     "stream established to its first token, per conversation"),
    ("connect", "connect_seconds", "the stream request that worked: to its first event"),
    ("establish", "establish_seconds",
     "a conversation's first attempt to its first working stream, retries included"),
    ("itl", "inter_token_gap_seconds", "between two tokens of one stream"),
    ("publish_rtt", "publish_round_trip_seconds", "one PUBLISH pipeline to Redis and back"),
    ("latency_intended", "latency_intended_seconds",
     "intended publish time (the schedule) to receipt, per token: stalls included"),
    ("redis_to_nats", "redis_to_nats_seconds",
     "with the NATS tap: publish timestamp to the token's arrival on NATS (the bridge hop)"),
    ("nats_to_sse", "nats_to_sse_seconds",
     "with the NATS tap: arrival on NATS to SSE receipt (leaf and adapter)"),
)

# Counters whose name ends in a unit other than seconds: (suffix, new suffix, factor).
_UNITS = (("_ms", "_seconds", 1e-3), ("_us", "_seconds", 1e-6))


@dataclass(frozen=True, slots=True)
class Observed:
    """One generator's newest snapshot, and which generator it is."""

    snapshot: StatsSnapshot
    worker: str = "0"


Source = Callable[[], Iterable[Observed]]


def _labels(o: Observed) -> list[str]:
    return [o.snapshot.settings.run_id, o.snapshot.settings.mode, o.worker]


def counter_metric(name: str) -> tuple[str, float]:
    """A Counters field's metric name (without the prefix and `_total`) and the factor
    that turns its unit into the metric's (ms and µs counters are exported in seconds)."""
    for suffix, unit, factor in _UNITS:
        if name.endswith(suffix):
            return name[: -len(suffix)] + unit, factor
    return name, 1.0


def _seconds(ms: float) -> float:
    return ms / 1000.0 if ms == ms else math.nan  # NaN (no samples) stays NaN


def metric_families(observed: Iterable[Observed]) -> list[Metric]:
    """Every metric family, one sample per observed generator in each."""
    obs = list(observed)
    families: list[Metric] = []

    def counter(name: str, doc: str, value: Callable[[StatsSnapshot], float]) -> None:
        fam = CounterMetricFamily(PREFIX + name, doc, labels=LABELS)
        for o in obs:
            fam.add_metric(_labels(o), value(o.snapshot))
        families.append(fam)

    def gauge(name: str, doc: str, value: Callable[[StatsSnapshot], float]) -> None:
        fam = GaugeMetricFamily(PREFIX + name, doc, labels=LABELS)
        for o in obs:
            fam.add_metric(_labels(o), value(o.snapshot))
        families.append(fam)

    # The run itself.
    info = GaugeMetricFamily(PREFIX + "run_info", "always 1: the run's state and the version",
                             labels=(*LABELS, "state", "version"))
    for o in obs:
        info.add_metric([*_labels(o), o.snapshot.state, __version__], 1)
    families.append(info)
    gauge("run_finished", "1 once the run has ended (the figures are final)",
          lambda s: float(s.finished))
    gauge("elapsed_seconds", "time since the run started", lambda s: s.elapsed_s)

    # Every counter of the JSON summary, under its own name.
    for f in COUNTER_FIELDS:
        name, factor = counter_metric(f.name)

        def value(s: StatsSnapshot, n: str = f.name, k: float = factor) -> float:
            return float(getattr(s.total, n) * k)

        counter(name, f"the JSON summary's {f.name}" + (" (in seconds)" if factor != 1 else ""),
                value)
    errors = CounterMetricFamily(PREFIX + "errors", "errors by kind (the JSON's errors_by_kind)",
                                 labels=(*LABELS, "kind"))
    for o in obs:
        for kind, n in sorted(o.snapshot.total.errors.items()):
            errors.add_metric([*_labels(o), kind], n)
    families.append(errors)

    # The load now.
    gauge("conversations_live", "conversations live now", lambda s: s.conversations_live)
    gauge("conversations_target", "the conversations setting in force",
          lambda s: s.settings.conversations)
    gauge("token_delay_seconds", "the delay setting in force", lambda s: s.settings.delay_ms / 1e3)
    gauge("phase", "the index of the current phase (a new one per live change)",
          lambda s: s.phase_index)
    gauge("tokens_in_flight", "tokens sent to Redis whose reply has not come back",
          lambda s: s.tokens_in_flight)
    gauge("publish_rate_tokens_per_second", "tokens published in the last closed second",
          lambda s: s.timeline[-1].published_per_s if s.timeline else 0.0)
    gauge("receive_rate_tokens_per_second", "tokens received in the last closed second",
          lambda s: s.timeline[-1].received_per_s if s.timeline else 0.0)

    # The generator's self-check: is it distorting its own figures?
    gauge("generator_loop_lag_p99_seconds",
          "event-loop lag p99 over the last seconds (the whole run once finished)",
          lambda s: _seconds(s.health.loop_lag.p99))
    gauge("generator_schedule_lag_p99_seconds",
          "how late tokens went out against their schedule, p99, last seconds",
          lambda s: _seconds(s.health.schedule_lag.p99))
    gauge("generator_cpu_ratio", "the generator process's CPU over the last 1 s window",
          lambda s: s.health.cpu_percent / 100.0)
    gauge("generator_overloaded", "1 while the self-check warns that the figures may be "
          "distorted", lambda s: float(s.health.warning is not None and not s.finished))
    counter("generator_overloaded_seconds", "time the self-check judged the generator "
            "overloaded", lambda s: s.health.overloaded_s)

    for field_name, name, doc in HISTOGRAMS:
        fam = HistogramMetricFamily(PREFIX + name, doc, labels=LABELS)
        for o in obs:
            h: HistogramSnapshot = getattr(o.snapshot.total, field_name)
            counts = h.cumulative_counts(_BUCKETS_US)
            if counts is None:  # a summary alone: no buckets to give
                continue
            buckets = [*zip(_BUCKET_LABELS, counts, strict=True), ("+Inf", h.count)]
            fam.add_metric(_labels(o), buckets, sum_value=h.sum_us / 1e6)
        families.append(fam)
    return families


class SnapshotCollector(Collector):
    """A prometheus_client collector over the newest snapshots, read at scrape time."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self.source())


class MetricsServer:
    """/metrics on ADDRESS:PORT, in a daemon thread of prometheus_client's."""

    def __init__(self, address: str, port: int, source: Source) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(source))
        self.address, self.port = address, port
        try:
            self._server: WSGIServer | None
            self._server, self._thread = start_http_server(port, address, self.registry)
        except OSError as e:
            raise UsageError(_bind_problem(address, port, e)) from None

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5.0)


def _bind_problem(address: str, port: int, e: OSError) -> str:
    where = f"{address}:{port}" if ":" not in address else f"[{address}]:{port}"
    if e.errno == errno.EADDRINUSE:
        return (f"--metrics-port {port}: {where} is already in use; choose another port "
                "(or stop what listens there)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return (f"--metrics-port {port}: not allowed to listen on {where}; use a port "
                "above 1023")
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        return (f"--metrics-address {address}: not an address of this machine; use 0.0.0.0 "
                "(every interface) or 127.0.0.1")
    return f"--metrics-port {port}: cannot listen on {where}: {e.strerror or e}"

