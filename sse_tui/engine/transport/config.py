"""What every stream of a run is opened with, besides its URL: built once by the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from sse_tui.engine.transport.tls import TLSOptions


@dataclass(frozen=True)
class StreamConfig:
    transport: str = "raw"
    # (name, value) sent with every request, `$ENV` references already resolved.
    headers: tuple[tuple[str, str], ...] = ()
    tls: TLSOptions = field(default_factory=TLSOptions)
