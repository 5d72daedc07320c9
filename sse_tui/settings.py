"""Load settings: the values an operator sets, saves as TOML and loads back.

`Settings` is what the engine runs with. The live-changeable part (conversations, delay)
is changed through the engine's control API, which records each change as a new phase.

Each field of `Settings` carries a `SettingSpec` (its dataclass field metadata) saying
everything else about it: its flags, its TOML key, its key in the JSON summary, what kind
of value it is (how that is read from a flag or a TOML file, checked and written back), any
further check, and its help text. The flags (`cli_args`), TOML files (`config`), the JSON
summary and `validated()` all iterate `SETTINGS`, so a new setting is one field here plus
the code that uses it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from sse_tui.credentials import (
    header_saved,
    header_shown,
    redact_url,
    resolve_header,
    url_without_password,
)
from sse_tui.distributions import SHAPES
from sse_tui.slo import SLO
from sse_tui.values import (
    COUNT,
    COUNT_OR_SHAPE,
    DURATION,
    HEADERS,
    IDENTIFIER,
    MILLISECONDS,
    MS_OR_SHAPE,
    RATE,
    SEED,
    SHAPE,
    SPEED,
    STAGES,
    SWITCH,
    TEXT,
    UsageError,
    ValueKind,
    check_channel_prefix,
    check_load_model,
    check_max_event_bytes,
    check_run_id,
    check_token_bytes,
    choice,
    format_duration,
    parse_duration,
    redis_url,
    shown_toml_value,
    sse_base,
)

# Re-exported: what callers read about settings, they import from here.
__all__ = [
    "MODES", "SETTINGS", "TRANSPORTS", "Mode", "SettingSpec", "Settings", "UsageError",
    "check_outside_world", "env_settings", "format_duration", "parse_duration", "redis_url",
    "sse_base",
]

Mode = Literal["producer", "consumer", "both"]
MODES: tuple[Mode, ...] = ("producer", "consumer", "both")
TRANSPORTS = ("raw", "httpx")
ARRIVALS = ("poisson", "uniform")  # how open-loop arrivals are spaced (sse_tui.engine.arrivals)


# A TCP port to listen on, 0 = off (--metrics-port), and an address to listen on. (Kinds of
# value live in sse_tui.values; these two may move there.)
def _port_from_text(text: str, example: str) -> int:
    s = text.strip()
    if not s.isdigit() or int(s) > 65535:
        raise ValueError(f"{text!r} is not a port number (1-65535, 0 = off); use e.g. {example}")
    return int(s)


def _port_from_toml(value: Any, example: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError(f"must be a port number (1-65535, 0 = off), e.g. {example}; "
                         f"got {shown_toml_value(value)}")
    return value


def _port_check(label: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise UsageError(f"{label} must be a port number (1-65535, 0 = off), got {value!r}")


PORT = ValueKind(_port_from_text, _port_from_toml, _port_check,
                 show=lambda port: str(port) if port else "off")


def check_listen_address(address: str) -> None:
    """An IP address or a host name to listen on (--metrics-address)."""
    if not address or any(c.isspace() or c in "/[]" for c in address):
        raise UsageError(f"invalid address {address!r}: give an IP address such as 0.0.0.0, "
                         "127.0.0.1 or ::, or a host name")



def check_fleet_name(name: str) -> None:
    """--fleet: part of Redis key names, so the characters of a run id ("" = off)."""
    if not name:
        return
    try:
        check_run_id(name)
    except UsageError:
        raise UsageError(f"invalid fleet name {name!r}: use letters, digits, '-', '_' and "
                         "'.', e.g. f1") from None


def nats_url(address: str) -> str:
    """`host:port`, `host` or a nats:// / tls:// URL -> a URL nats-py accepts; "" = off."""
    a = address.strip()
    if not a:
        return ""
    if "://" in a:
        if a.split("://", 1)[0].lower() not in ("nats", "tls"):
            raise UsageError(f"invalid NATS address {address!r}: use host:port or "
                             "nats://host:4222")
        return a
    host, sep, port = a.rpartition(":")
    if not sep:
        return f"nats://{a}:4222"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid NATS port in {address!r}: use host:port, e.g. "
                         "localhost:4222")
    return f"nats://{host or 'localhost'}:{port}"


# --- the table ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SettingSpec:
    """Everything about one setting but its type and default, which its Settings field has."""

    kind: ValueKind
    help: str  # for --help; "(default: ...)" is added
    metavar: str  # for --help: `-c, --conversations N`
    example: str  # a good value as typed after the flag, for messages (TOML's is derived)
    # Long flag names without dashes, the first the canonical one; each works as --name and,
    # as in the original Go tool, -name, and with _ for - too. Default: the TOML key.
    flags: tuple[str, ...] = ()
    short: str | None = None  # `c` for -c (and -c5)
    toml: str = ""  # the TOML key; default: the field name
    json: str = ""  # the key in the JSON summary's `settings`; default: the field name
    check: Callable[[Any], object] | None = None  # raises UsageError; beyond the kind's check
    # Modes that use it; in the other modes it may be left empty.
    used_by: tuple[Mode, ...] = MODES
    original: bool = False  # a flag of the original tool: listed first in --help
    sandbox: bool = False  # `sse-tui sandbox` takes it too
    switch: bool = False  # a flag without a value (`--json-detail`, or `--json-detail=false`)
    # An environment variable that gives the value when neither a flag nor the config does.
    env: str = ""
    # A setting that may hold a secret (a password in a URL, a header's value): the value as
    # every view and the JSON summary show it, and as a saved TOML file keeps it (None: not
    # at all), with `secret_note` written in the file's comments when something was left out.
    shown: Callable[[Any], Any] | None = None
    saved: Callable[[Any], Any] | None = None
    secret_note: str = ""
    # It names a file sse-tui reads (a CA, a key, a password): `check_outside_world` makes
    # sure it is there before the run. Not a per-value check: a config file may name a file
    # that exists only where the run will happen.
    reads_file: bool = False
    default_help: str = ""  # "(default: ...)" when the default itself says nothing
    field: str = ""  # the Settings field: filled in below, from the dataclass

    @property
    def toml_key(self) -> str:
        return self.toml or self.field

    @property
    def json_key(self) -> str:
        return self.json or self.field

    @property
    def long_flags(self) -> tuple[str, ...]:
        return self.flags or (self.toml_key.replace("_", "-"),)

    @property
    def toml_keys(self) -> tuple[str, ...]:
        """The documented key first, then what people copy from the help and the JSON summary:
        flag spellings (`token-delay`, `token_delay`) and the field name (`delay_ms`)."""
        names = [self.toml_key]
        for flag in self.long_flags:
            names += [flag, flag.replace("-", "_")]
        names.append(self.field)
        return tuple(dict.fromkeys(names))

    def validate(self, value: Any) -> None:
        """Raise UsageError if the engine cannot run with this value."""
        self.kind.check(self.toml_key.replace("_", " "), value)  # "idle timeout must be ..."
        if self.check is not None:
            self.check(value)

    def read_flag(self, flag: str, text: str) -> Any:
        """The value of `flag text`, checked; the UsageError names the flag as it was typed."""
        try:
            value = self.kind.from_text(text, f"{flag} {self.example}")
            self.validate(value)
        except ValueError as e:
            raise UsageError(f"invalid value for {flag}: {e}") from None
        except UsageError as e:
            raise UsageError(f"{flag}: {e}") from None
        return value

    def read_toml(self, key: str, value: Any) -> Any:
        """The value of `key = value` in a TOML file, checked. Raises ValueError or UsageError
        with a message for the caller to put after the file, line and key."""
        example = self.kind.to_toml(self.kind.from_text(self.example, ""))
        # json.dumps writes these plain strings and numbers as TOML does.
        converted = self.kind.from_toml(value, f"{key} = {json.dumps(example)}")
        self.validate(converted)
        return converted


_SPEC = "sse_tui.setting"


def _spec(**spec: Any) -> dict[str, SettingSpec]:
    """The metadata of a Settings field: its SettingSpec."""
    return {_SPEC: SettingSpec(**spec)}


@dataclass(frozen=True)
class Settings:
    """Everything the engine needs to run. Defaults are the original Go tool's.

    A field's metadata is its SettingSpec: adding a field here gives the new setting its
    flags, TOML key, JSON key, checks and help."""

    mode: Mode = field(default="both", metadata=_spec(
        kind=choice(MODES, "mode"), short="m", metavar="MODE", example="both",
        original=True, help="producer, consumer or both",
    ))
    redis: str = field(default="localhost:6379", metadata=_spec(
        kind=TEXT, short="r", metavar="ADDR", example="localhost:6379",
        original=True, check=redis_url,
        # A consumer uses Redis only to follow a producer elsewhere (when given).
        used_by=("producer", "both"),
        help="Redis host:port, or a redis:// or rediss:// URL; a password is better given "
             "by REDIS_PASSWORD or --redis-password-file than in the URL",
        env="REDIS_URL", shown=redact_url, saved=url_without_password,
        secret_note="The Redis password is not saved: give it with REDIS_PASSWORD=..., "
                    "--redis-password-file FILE, or REDIS_URL=redis://user:pw@host:port "
                    "(used when no redis address is set here or by a flag).",
    ))
    sse: str = field(default="http://localhost:8080", metadata=_spec(
        kind=TEXT, short="s", metavar="URL",
        example="http://localhost:8080", original=True, check=sse_base,
        used_by=("consumer", "both"), help="base URL of the SSE adapter",
        shown=redact_url, saved=url_without_password,
        secret_note="The SSE URL's password is not saved: give credentials with "
                    "--header 'Authorization: Basic $CREDENTIALS' (an environment variable).",
    ))
    conversations: int = field(default=5, metadata=_spec(
        kind=COUNT, short="c", metavar="N", example="5", original=True,
        help="conversations live at once; a finished one is replaced",
    ))
    tokens: int = field(default=50, metadata=_spec(
        kind=COUNT_OR_SHAPE, short="t", metavar="N", example="50", original=True,
        help="tokens per conversation, or a distribution each conversation draws its own "
             "from: 20..400, exp:200, lognormal:median=150,p99=1500 (README: Shaping the load)",
    ))
    delay_ms: float = field(default=50.0, metadata=_spec(
        kind=MS_OR_SHAPE, flags=("delay", "token-delay"), short="d", toml="delay",
        metavar="MS", example="50", original=True,
        help="milliseconds between tokens, plus a jitter of 0 to delay/2; may be fractional; "
             "or a distribution each gap is drawn from (no jitter added), e.g. exp:30",
    ))
    duration_s: float = field(default=30.0, metadata=_spec(
        kind=DURATION, toml="duration", metavar="DURATION", example="30s", original=True,
        help="how long to run, a Go duration such as 500ms, 30s, 5m or 1h30m; "
             "0 = one round of conversations",
    ))
    run_id: str = field(default_factory=lambda: str(time.time_ns()), metadata=_spec(
        kind=IDENTIFIER, metavar="ID",
        example="run1", check=check_run_id, default_help="the current time in ns",
        help="conversation ids are loadtest-ID-<n>: give a producer and a consumer on "
             "different machines the same ID",
    ))
    channel_prefix: str = field(default="llm:tokens:", metadata=_spec(
        kind=TEXT, metavar="PREFIX", example="llm:tokens:",
        check=check_channel_prefix, sandbox=True,
        help="Redis channel prefix; channels are PREFIX<conversation id>",
    ))
    transport: str = field(default="raw", metadata=_spec(
        kind=choice(TRANSPORTS, "transport"), metavar="raw|httpx", example="raw",
        help="how SSE streams are read",
    ))
    # After publishing stops, how long in-flight tokens may still arrive before counting as missing.
    grace_s: float = field(default=2.0, metadata=_spec(
        kind=DURATION, toml="grace", metavar="DURATION", example="2s",
        help="after publishing stops, how long in-flight tokens may still arrive before they "
             "count as missing",
    ))
    # A stream silent this long is taken for dead (a half-open connection: a dropped
    # port-forward, a dead leaf) and resumed; the adapter sends a keep-alive every 15 s.
    # 0 = never.
    idle_timeout_s: float = field(default=45.0, metadata=_spec(
        kind=DURATION, toml="idle_timeout", metavar="DURATION", example="45s",
        help="a stream silent this long is taken for dead and resumed with Last-Event-ID; "
             "0 = never",
    ))
    # How long a conversation may be without a working stream (its first connect, or after
    # one broke) while it retries with backoff: long enough to ride out an adapter restart.
    retry_budget_s: float = field(default=30.0, metadata=_spec(
        kind=DURATION, toml="retry_budget", metavar="DURATION", example="30s",
        used_by=("consumer", "both"),
        help="how long a conversation keeps retrying (with backoff) without a working "
             "stream before it fails; 0 = fail at the first failed attempt",
    ))
    # Engine processes (sse_tui.engine.workers), each with a share of the load; 0 = as many
    # as the CPUs this process may use (sse_tui.cpus), resolved before the run starts.
    workers: int = field(default=0, metadata=_spec(
        kind=SEED, metavar="N", example="2",
        default_help="the CPUs this process may use (affinity and cgroup quota)",
        help="run N engine processes, each with a share of the conversations (and of the "
             "rate and each stage's target), merged exactly into one view; 1 = a single "
             "process",
    ))
    # New streams per second (sse_tui.engine.connect_rate), reconnects included: `-c 10000`
    # at once would overflow the adapter's listen backlog (SYNs dropped, retried 1-3 s
    # later: the generator's doing). 1000/s opens 10 000 in 10 s; its 50 ms burst (50
    # streams) fits even asyncio's default backlog of 100.
    connect_rate: float = field(default=1000.0, metadata=_spec(
        kind=RATE, metavar="R", example="500", used_by=("consumer", "both"),
        help="open at most R new SSE streams per second (first connects and reconnects), "
             "so that a large -c does not flood the adapter's accept queue; 0 = unlimited",
    ))
    # One SSE event (or line) larger than this is an error on its conversation, and the
    # readers stop buffering it there: memory stays bounded whatever a server sends.
    max_event_bytes: int = field(default=1024 * 1024, metadata=_spec(
        kind=COUNT, metavar="BYTES", example="1048576", check=check_max_event_bytes,
        used_by=("consumer", "both"),
        help="an SSE event larger than this many bytes is an error on its conversation",
    ))
    json_detail: bool = field(default=False, metadata=_spec(
        kind=SWITCH, metavar="", example="true", switch=True,
        help="add a `detail` object to the --json summary: every ended conversation "
             "(up to a cap) with its missing sequence ranges, loss classes, reconnects "
             "and errors",
    ))
    # Sent with every stream request (auth). Values may be $ENV references, resolved at start;
    # they are never shown (`Name: ***`) and saved to TOML only as such references.
    headers: tuple[str, ...] = field(default=(), metadata=_spec(
        kind=HEADERS, flags=("header",), metavar="'NAME: VALUE'",
        example="Authorization: Bearer $TOKEN", used_by=("consumer", "both"),
        help="an HTTP header sent with every SSE request; repeat for more; $VAR or ${VAR} "
             "in the value is taken from the environment (keeps the secret out of ps and "
             "of saved files); values are never shown",
        shown=lambda headers: [header_shown(h) for h in headers],
        saved=lambda headers: [h for h in headers if header_saved(h) is not None],
        secret_note="Headers whose value is not a $VAR reference are not saved: pass them "
                    "again with --header 'Name: $VAR'.",
    ))
    redis_password_file: str = field(default="", metadata=_spec(
        kind=TEXT, metavar="FILE", example="/run/secrets/redis-password",
        reads_file=True, used_by=("producer", "both"),
        default_help="none",
        help="read the Redis password from the first line of FILE (when the --redis URL "
             "has none); without it, REDIS_PASSWORD is used",
    ))
    # TLS, for https:// and rediss:// alike.
    cacert: str = field(default="", metadata=_spec(
        kind=TEXT, metavar="FILE", example="ca.pem", reads_file=True,
        default_help="the system's CAs",
        help="verify https:// and rediss:// servers with the CA certificates in FILE (PEM) "
             "instead of the system's",
    ))
    cert: str = field(default="", metadata=_spec(
        kind=TEXT, metavar="FILE", example="client.pem", reads_file=True,
        default_help="none",
        help="client certificate (PEM) for https:// and rediss:// servers that ask for one",
    ))
    key: str = field(default="", metadata=_spec(
        kind=TEXT, metavar="FILE", example="client-key.pem", reads_file=True,
        default_help="in the --cert file",
        help="the private key of --cert, if not in the same file",
    ))
    insecure: bool = field(default=False, metadata=_spec(
        kind=SWITCH, metavar="", example="true", switch=True,
        help="do not verify the certificates of https:// and rediss:// servers (tests only: "
             "anyone on the path can read and change the traffic)",
    ))
    # The SLO gate (sse_tui.slo): judged at the end; a failed clause is exit status 3.
    slo: tuple[str, ...] = field(default=(), metadata=_spec(
        kind=SLO, metavar="CLAUSES", example="p99<50ms,missing=0",
        default_help="none",
        help="fail the run (exit status 3) unless every clause holds at the end, e.g. "
             "'p99<50ms,missing=0,errors<=5'; repeatable; metrics: p50 p90 p99 p999 max "
             "(latency), first_token.p99, connect.p99, missing, duplicated, out_of_order, "
             "errors, received_per_s … (docs/slo.md)",
    ))
    # The per-hop tap (sse_tui.engine.nats_tap, docs/topology.md): "" = off.
    nats: str = field(default="", metadata=_spec(
        kind=TEXT, metavar="URL", example="nats://localhost:4222", check=nats_url,
        default_help="off",
        help="tap NATS here: subscribe to chat.<id>.tokens of this run's conversations and "
             "split latency and loss by hop (Redis->NATS, NATS->SSE); for a cluster: "
             "kubectl port-forward -n nats-system svc/nats 4222 (docs/topology.md)",
    ))
    # Prometheus and the time series (sse_tui.metrics, sse_tui.timeseries; docs/metrics.md).
    metrics_port: int = field(default=0, metadata=_spec(
        kind=PORT, metavar="PORT", example="9464", default_help="off",
        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics while the run lasts "
             "(docs/metrics.md)",
    ))
    metrics_address: str = field(default="0.0.0.0", metadata=_spec(
        kind=TEXT, metavar="ADDR", example="127.0.0.1", check=check_listen_address,
        help="where --metrics-port listens: 0.0.0.0 (every interface, for a Prometheus in "
             "the cluster to scrape the pod), or 127.0.0.1 for this machine alone",
    ))
    metrics_linger_s: float = field(default=0.0, metadata=_spec(
        kind=DURATION, toml="metrics_linger", metavar="DURATION", example="30s",
        help="keep serving /metrics this long after the run has ended, so that a scrape "
             "catches the final figures",
    ))
    timeseries: str = field(default="", metadata=_spec(
        kind=TEXT, metavar="FILE", example="run.jsonl", default_help="none",
        help="write one row per second of the run to FILE as it goes: JSON lines, or CSV "
             "when FILE ends in .csv",
    ))
    # One live test from many generators (sse_tui.fleet, docs/fleet.md).
    fleet: str = field(default="", metadata=_spec(
        kind=TEXT, metavar="NAME", example="f1", check=check_fleet_name, default_help="off",
        help="join the fleet NAME: publish this run's summary once a second on the run's "
             "Redis (sse-tui:fleet:NAME:*) and take fleet commands; `sse-tui fleet NAME` "
             "watches and steers them all (docs/fleet.md)",
    ))
    # Open-loop load and load profiles (sse_tui.engine.arrivals, sse_tui.engine.stages).
    # `rate` is a plain field so that a sweep can set it; > 0 makes the run open loop.
    rate: float = field(default=0.0, metadata=_spec(
        kind=RATE, metavar="R", example="20",
        help="open loop: start R new conversations per second whatever the system answers, "
             "with --conversations as the cap on live ones (an arrival that finds the cap "
             "full is dropped and counted); 0 = closed loop (--conversations live at once, "
             "a finished one replaced)",
    ))
    arrival: str = field(default="poisson", metadata=_spec(
        kind=choice(ARRIVALS, "known arrival process"), metavar="poisson|uniform",
        example="uniform",
        help="with --rate: poisson (random, exponential gaps: independent users) or uniform "
             "(fixed spacing)",
    ))
    seed: int = field(default=0, metadata=_spec(
        kind=SEED, metavar="N", example="7",
        help="seed of the random --arrival gaps, for a repeatable run; 0 = a new one each run",
    ))
    stages: tuple[str, ...] = field(default=(), metadata=_spec(
        kind=STAGES, metavar="N:DURATION,...", example="10:30s,50:1m",
        help="load profile: each stage sets conversations live at once (with --rate: "
             "arrivals per second) for its duration, and is a phase of its own; without "
             "--duration the run lasts as long as the profile",
    ))
    # How the producer talks to Redis (sse_tui.engine.producer, sse_tui.engine.publishers).
    publish_connections: int = field(default=1, metadata=_spec(
        kind=COUNT, metavar="N", example="16", used_by=("producer", "both"),
        help="publish over N Redis connections, each pipelining its own conversations "
             "(the reference uses a pool: one PUBLISH per token per connection)",
    ))
    publish_batch_ms: float = field(default=1.0, metadata=_spec(
        kind=MILLISECONDS, metavar="MS", example="0", used_by=("producer", "both"),
        help="tokens due within MS of each other go out in one pipeline (one write, one round "
             "trip); 0 = one PUBLISH per write, each awaited, as the reference generator does",
    ))
    token_bytes: int = field(default=0, metadata=_spec(
        kind=SEED, metavar="N", example="16", used_by=("producer", "both"),
        default_help="short words", check=check_token_bytes,
        help="size of each token's text in bytes (the payload grows with it); 0 = short "
             "English words, as the reference",
    ))
    # The shape of each conversation (sse_tui.distributions) and replays of recorded traffic
    # (sse_tui.trace); tokens and delay above take distributions too.
    first_token_delay_ms: float = field(default=0.0, metadata=_spec(
        kind=MS_OR_SHAPE, flags=("first-token-delay",), toml="first_token_delay", metavar="MS",
        example="300", used_by=("producer", "both"),
        help="time from a conversation's start (its stream open, when reading) to its first "
             "token, the prefill: ms or a distribution, e.g. lognormal:median=300,p99=2000",
    ))
    shape: str = field(default="", metadata=_spec(
        kind=SHAPE, metavar="|".join(SHAPES), example="chat", default_help="none",
        help="a preset of --tokens, --delay and --first-token-delay distributions (those "
             "given explicitly win); README: Shaping the load",
    ))
    trace: str = field(default="", metadata=_spec(
        kind=TEXT, metavar="FILE", example="trace.jsonl", used_by=("producer", "both"),
        reads_file=True, default_help="none",
        help="replay the timing `sse-tui record` wrote: each conversation's start, token "
             "count and gaps, under this run's ids; without --duration the run lasts as "
             "long as the trace",
    ))
    speed: float = field(default=1.0, metadata=_spec(
        kind=SPEED, metavar="X", example="2", used_by=("producer", "both"),
        help="with --trace: play it X times as fast (gaps and arrivals divided by X)",
    ))
    loop: bool = field(default=False, metadata=_spec(
        kind=SWITCH, switch=True, metavar="", example="true", used_by=("producer", "both"),
        help="with --trace: start the trace again when it ends, until --duration",
    ))

    def validated(self) -> Settings:
        """Return self, or raise UsageError naming the first bad value."""
        for spec in SETTINGS:  # mode first: the others depend on it
            value = getattr(self, spec.field)
            if self.mode not in spec.used_by and not value:
                continue
            spec.validate(value)
        check_load_model(self.rate, self.duration_s, self.stages)  # --rate, --stages
        if self.trace and (self.rate > 0 or self.stages):
            raise UsageError("--trace is the load by itself: leave out --rate and --stages "
                             "(--speed plays it faster or slower)")
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
        """The TOML form: the same keys as the flags, durations as Go strings; no secrets."""
        out: dict[str, Any] = {}
        for s in SETTINGS:
            value = getattr(self, s.field)
            out[s.toml_key] = s.kind.to_toml(s.saved(value) if s.saved else value)
        return out

    def save_notes(self) -> list[str]:
        """What a saved file leaves out, and how to give it instead (for its comments)."""
        notes: list[str] = []
        for s in SETTINGS:
            value = getattr(self, s.field)
            if s.saved is not None and s.secret_note and s.saved(value) != (
                    list(value) if isinstance(value, tuple) else value):
                notes.append(s.secret_note)
        return notes

    def shown(self, name: str) -> Any:
        """A setting as views and the JSON show it: any secret in it replaced by `***`."""
        spec = _SPEC_OF_FIELD[name]
        value = getattr(self, name)
        return spec.shown(value) if spec.shown is not None else value

    def summary_dict(self) -> dict[str, Any]:
        """The `settings` object of the JSON summary (secrets shown as `***`)."""
        return {s.json_key: self.shown(s.field) for s in SETTINGS}

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: a repr shows what views show.
        shown = ", ".join(f"{s.field}={self.shown(s.field)!r}" for s in SETTINGS)
        return f"Settings({shown})"


# The table, in field order (the order of --help, TOML files and the JSON summary).
SETTINGS: tuple[SettingSpec, ...] = tuple(
    replace(f.metadata[_SPEC], field=f.name) for f in fields(Settings)
)
_SPEC_OF_FIELD = {s.field: s for s in SETTINGS}


def check_outside_world(s: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Before a run: the files the settings name can be read, and the environment variables
    the --header values name are set. Raises UsageError (one line, no value shown)."""
    if s.key and not s.cert:
        raise UsageError("--key needs --cert: give the client certificate it belongs to")
    for spec in SETTINGS:
        path = getattr(s, spec.field)
        if not spec.reads_file or not path:
            continue
        flag = f"--{spec.long_flags[0]}"
        p = Path(path).expanduser()
        if not p.is_file():
            why = "is a directory" if p.is_dir() else "not found"
            raise UsageError(f"{flag} {path} {why}: give the path of a readable file")
        if not os.access(p, os.R_OK):
            raise UsageError(f"{flag} {path} cannot be read: check its permissions")
    env = os.environ if environ is None else environ
    if s.mode != "producer":
        for text in s.headers:
            try:
                resolve_header(text, env)
            except ValueError as e:
                raise UsageError(f"--header: {e}") from None


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """{field: value} for the settings given by environment variables (`REDIS_URL`), read
    and checked as their flag would be. They sit under the config file and the flags."""
    return {s.field: s.read_flag(s.env, environ[s.env])
            for s in SETTINGS if s.env and environ.get(s.env, "").strip()}


def default_text(spec: SettingSpec) -> str:
    """The default of a setting as --help shows it."""
    if spec.default_help:
        return spec.default_help
    return spec.kind.show(getattr(Settings(), spec.field))
