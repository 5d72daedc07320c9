"""Load settings: the values an operator sets, saves as TOML and loads back.

`Settings` is what the engine runs with. The live-changeable part (conversations, delay)
is changed through the engine's control API, which records each change as a new phase.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Mode = Literal["producer", "consumer", "both"]
MODES: tuple[Mode, ...] = ("producer", "consumer", "both")
TRANSPORTS = ("raw", "httpx")


class UsageError(Exception):
    """Bad input from the operator: the message is one line saying what is wrong and what to do."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
# (multiply, divide): dividing for sub-second units keeps `700ms` exactly 0.7, not 0.70000001.
_UNIT_SCALE = {
    "ns": (1, 1e9), "us": (1, 1e6), "µs": (1, 1e6), "μs": (1, 1e6), "ms": (1, 1e3),
    "s": (1, 1), "m": (60, 1), "h": (3600, 1),
}


def parse_duration(text: str) -> float:
    """Parse a Go duration (`500ms`, `30s`, `1h30m`, `0`) into seconds.

    A bare number is taken as seconds, which is what people type in TOML files.
    """
    s = text.strip()
    if not s:
        raise UsageError("empty duration: use a Go duration such as 500ms, 30s, 5m or 1h30m")
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value != value or value in (float("inf"), float("-inf")):
            raise UsageError(f"invalid duration {text!r}: use a Go duration such as 30s")
        if value < 0:
            raise UsageError(f"negative duration {text!r}: use 0 for one round, or e.g. 30s")
        return value
    pos = 0
    total = 0.0
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        pos = 1
    if pos == len(s):
        raise UsageError(
            f"invalid duration {text!r}: use a Go duration such as 500ms, 30s or 1h30m"
        )
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise UsageError(
                f"invalid duration {text!r}: use a Go duration such as 500ms, 30s, 5m or 1h30m"
            )
        mul, div = _UNIT_SCALE[m.group(2)]
        total += float(m.group(1)) * mul / div
        pos = m.end()
    if sign < 0 and total > 0:
        raise UsageError(f"negative duration {text!r}: use 0 for one round, or e.g. 30s")
    return total


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for saving: `90` -> `1m30s`, `0.5` -> `500ms`."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000!r}ms".replace(".0ms", "ms")
    whole = int(seconds)
    frac = seconds - whole
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = ""
    if h:
        out += f"{h}h"
    if m:
        out += f"{m}m"
    if s or frac or not out:
        secs = s + frac if frac else s
        out += (repr(float(secs)) if frac else str(secs)) + "s"
    return out


@dataclass(frozen=True)
class Settings:
    """Everything the engine needs to run. Defaults are the original Go tool's."""

    mode: Mode = "both"
    redis: str = "localhost:6379"
    sse: str = "http://localhost:8080"
    conversations: int = 5
    tokens: int = 50
    delay_ms: float = 50.0
    duration_s: float = 30.0
    run_id: str = field(default_factory=lambda: str(time.time_ns()))
    channel_prefix: str = "llm:tokens:"
    transport: str = "raw"
    # After publishing stops, how long in-flight tokens may still arrive before counting as missing.
    grace_s: float = 2.0
    # A stream silent this long is taken for dead (a half-open connection: a dropped
    # port-forward, a dead leaf) and resumed; the adapter sends a keep-alive every 15 s.
    # 0 = never.
    idle_timeout_s: float = 45.0

    def validated(self) -> Settings:
        """Return self, or raise UsageError naming the first bad value."""
        if self.mode not in MODES:
            raise UsageError(f"invalid mode {self.mode!r}: use producer, consumer or both")
        if self.conversations < 1:
            raise UsageError(f"conversations must be at least 1, got {self.conversations}")
        if self.tokens < 1:
            raise UsageError(f"tokens must be at least 1, got {self.tokens}")
        if self.delay_ms < 0:
            raise UsageError(f"delay must be 0 or more milliseconds, got {self.delay_ms:g}")
        if self.duration_s < 0:
            raise UsageError("duration must be 0 (one round) or positive, e.g. 30s")
        if self.transport not in TRANSPORTS:
            raise UsageError(f"invalid transport {self.transport!r}: use raw or httpx")
        if self.grace_s < 0:
            raise UsageError("grace must be 0 or more seconds")
        if self.idle_timeout_s < 0:
            raise UsageError("idle timeout must be 0 (never) or a duration such as 45s")
        if not self.channel_prefix or any(c in self.channel_prefix for c in " \t*?[]"):
            raise UsageError(f"invalid channel prefix {self.channel_prefix!r}: it is subscribed "
                             "as <prefix>*, so no spaces or * ? [ ]; e.g. llm:tokens:")
        if not self.run_id or any(c in self.run_id for c in " /*?[]"):
            raise UsageError(f"invalid run id {self.run_id!r}: use letters, digits, - and _")
        if self.mode in ("producer", "both") or self.redis:
            redis_url(self.redis)  # raises on nonsense
        if self.mode in ("consumer", "both"):
            sse_base(self.sse)
        return self

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def for_next_run(self) -> Settings:
        """The same settings under a new run id (`<id>-r2`, `-r3`, …), so that a new run's
        conversation ids never meet streams the previous run left behind."""
        m = re.fullmatch(r"(.*)-r(\d+)", self.run_id)
        run_id = f"{m[1]}-r{int(m[2]) + 1}" if m else f"{self.run_id}-r2"
        return replace(self, run_id=run_id)

    def conversation_id(self, n: int) -> str:
        """`loadtest-<run-id>-<n>`: a producer and a consumer given the same run id line up."""
        return f"loadtest-{self.run_id}-{n}"

    def to_toml_dict(self) -> dict[str, Any]:
        """The TOML form: the same keys as the flags, durations as Go strings."""
        return {
            "mode": self.mode,
            "redis": self.redis,
            "sse": self.sse,
            "conversations": self.conversations,
            "tokens": self.tokens,
            "delay": _int_if_whole(self.delay_ms),
            "duration": format_duration(self.duration_s),
            "run_id": self.run_id,
            "channel_prefix": self.channel_prefix,
            "transport": self.transport,
            "grace": format_duration(self.grace_s),
            "idle_timeout": format_duration(self.idle_timeout_s),
        }

    def summary_dict(self) -> dict[str, Any]:
        """The `settings` object of the JSON summary."""
        d = asdict(self)
        return {
            "mode": d["mode"],
            "redis": d["redis"],
            "sse": d["sse"],
            "conversations": d["conversations"],
            "tokens": d["tokens"],
            "delay_ms": d["delay_ms"],
            "duration_s": d["duration_s"],
            "run_id": d["run_id"],
            "channel_prefix": d["channel_prefix"],
            "transport": d["transport"],
            "grace_s": d["grace_s"],
            "idle_timeout_s": d["idle_timeout_s"],
        }


def _int_if_whole(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def redis_url(address: str) -> str:
    """`host:port`, `host` or a redis:// / rediss:// / unix:// URL -> a URL redis-py accepts."""
    a = address.strip()
    if not a:
        raise UsageError("empty redis address: use host:port or redis://host:port")
    if "://" in a:
        scheme = a.split("://", 1)[0].lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise UsageError(f"invalid redis address {address!r}: use host:port or redis://host:port")
        return a
    host, sep, port = a.rpartition(":")
    if not sep:
        return f"redis://{a}:6379"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid redis port in {address!r}: use host:port, e.g. localhost:6379")
    if not host:
        host = "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"redis://{host}:{port}"


def sse_base(url: str) -> str:
    """Validate the SSE base URL and strip a trailing slash."""
    u = url.strip()
    if not (u.startswith("http://") or u.startswith("https://")) or len(u.split("://", 1)[1]) == 0:
        raise UsageError(f"invalid SSE URL {url!r}: use http://host:port, e.g. http://localhost:8080")
    return u.rstrip("/")
