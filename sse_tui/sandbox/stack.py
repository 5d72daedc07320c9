"""The local stack: a redis-server and the reference SSE adapter, both child processes;
in the full topology also the reference bridge and a nats-server between them
(redis -> bridge -> NATS -> adapter, docs/topology.md).

``Sandbox`` is what the load engine uses for ``--demo``, tests and benchmarks;
``run_sandbox`` backs the ``sse-tui sandbox`` command.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import IO, Any, Self

import orjson

from sse_tui.sandbox.nats_server import NatsServer, NatsServerError
from sse_tui.sandbox.redis_server import RedisServer, RedisServerError, spawn_child, stop_child
from sse_tui.sandbox.tls import SandboxTLSError, make_self_signed

_ADAPTER_START_TIMEOUT_S = 10.0
_LISTENING_PREFIX = b"LISTENING "
# full: Redis -> bridge -> NATS -> adapter, the real path; direct: the adapter reads Redis.
TOPOLOGIES = ("full", "direct")


class SandboxError(RuntimeError):
    """The local stack could not be started."""


@dataclass
class FaultConfig:
    """Faults the reference adapter injects; the exact semantics are in ``adapter``'s docstring."""

    drop_rate: float = 0.0
    dup_rate: float = 0.0
    reorder_rate: float = 0.0
    delay_ms: float = 0.0
    disconnect_after: int = 0
    resume_skip_bug: bool = False
    seed: int = 1
    # The loss shapes of the real chain (docs/loss.md), each counted exactly in /stats:
    first_loss_rate: float = 0.0  # share of fresh streams that lose their first token
    gap: int = 0  # tokens a fresh stream loses in one run, from the 3rd it is offered
    tail_after: int = 0  # a stream goes silent (and stays open) after this many tokens
    # A load-dependent delay, for capacity searches (`sse-tui sweep`): while more than
    # overload_streams streams are open, every token is held overload_delay_ms longer.
    overload_streams: int = 0  # 0 = off
    overload_delay_ms: float = 0.0
    # The hops of the full topology (docs/topology.md): the bridge drops or delays tokens on
    # their way from Redis to NATS; the adapter's NATS interest becomes active late.
    bridge_drop_rate: float = 0.0
    bridge_delay_ms: float = 0.0
    interest_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.gap < 0 or self.tail_after < 0:
            raise ValueError(f"gap and tail_after must be >= 0 (0 = off), got "
                             f"{self.gap} and {self.tail_after}")
        for name in ("drop_rate", "dup_rate", "reorder_rate", "first_loss_rate",
                     "bridge_drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        for name in ("bridge_delay_ms", "interest_delay_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.disconnect_after < 0:
            raise ValueError(
                f"disconnect_after must be >= 0 (0 = off), got {self.disconnect_after}"
            )
        if self.overload_streams < 0 or self.overload_delay_ms < 0:
            raise ValueError(f"overload_streams and overload_delay_ms must be >= 0, got "
                             f"{self.overload_streams} and {self.overload_delay_ms}")
        if bool(self.overload_streams) != bool(self.overload_delay_ms):
            raise ValueError("overload_streams and overload_delay_ms go together: the delay "
                             "applies while more than overload_streams streams are open")

    @property
    def any(self) -> bool:
        """True when some fault (or delay) is switched on."""
        return bool(
            self.drop_rate
            or self.dup_rate
            or self.reorder_rate
            or self.delay_ms
            or self.disconnect_after
            or self.resume_skip_bug
            or self.first_loss_rate
            or self.gap
            or self.tail_after
            or self.overload_streams
            or self.hop_faults
        )

    @property
    def hop_faults(self) -> bool:
        """A fault of a hop only the full topology has (the bridge, the NATS interest)."""
        return bool(self.bridge_drop_rate or self.bridge_delay_ms or self.interest_delay_ms)

    def bridge_args(self) -> list[str]:
        """The bridge's command-line flags for this configuration."""
        return ["--drop-rate", repr(self.bridge_drop_rate),
                "--delay-ms", repr(self.bridge_delay_ms), "--seed", str(self.seed)]

    def to_args(self) -> list[str]:
        """The adapter's command-line flags for this configuration."""
        args = [
            "--drop-rate", repr(self.drop_rate),
            "--dup-rate", repr(self.dup_rate),
            "--reorder-rate", repr(self.reorder_rate),
            "--delay-ms", repr(self.delay_ms),
            "--disconnect-after", str(self.disconnect_after),
            "--seed", str(self.seed),
            "--first-loss-rate", repr(self.first_loss_rate),
            "--gap", str(self.gap),
            "--tail-after", str(self.tail_after),
            "--overload-streams", str(self.overload_streams),
            "--overload-delay-ms", repr(self.overload_delay_ms),
            "--interest-delay-ms", repr(self.interest_delay_ms),
            "--bridge-drop-rate", repr(self.bridge_drop_rate),
            "--bridge-delay-ms", repr(self.bridge_delay_ms),
        ]  # fmt: skip
        if self.resume_skip_bug:
            args.append("--resume-skip-bug")
        return args


class Sandbox:
    """redis-server + reference SSE adapter on free loopback ports; use as a context manager."""

    def __init__(
        self,
        faults: FaultConfig | None = None,
        channel_prefix: str = "llm:tokens:",
        keepalive_s: float = 15.0,
        tls: bool = False,
        require_header: str = "",
        topology: str = "direct",
    ) -> None:
        if keepalive_s <= 0:
            raise ValueError(f"keepalive_s must be > 0, got {keepalive_s}")
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be full or direct, got {topology!r}")
        if faults is not None and faults.hop_faults and topology != "full":
            raise ValueError("the bridge and interest faults need the full topology "
                             "(--topology full): the direct one has no bridge and no NATS")
        self.topology = topology
        # tls: the adapter serves https:// with a self-signed certificate made at start,
        # which is its own CA file (`ca_file`, for --cacert).
        self.tls = tls
        self.ca_file: str | None = None
        self._tls_dir: str | None = None
        self._tls_key = ""
        # 'Name: value' that stream requests must carry (else 401): for auth header tests.
        self.require_header = require_header
        self.faults = faults or FaultConfig()
        self.channel_prefix = channel_prefix
        self.keepalive_s = keepalive_s
        self._redis: RedisServer | None = None
        self._adapter: subprocess.Popen[bytes] | None = None
        self._adapter_stderr: IO[bytes] | None = None
        self._sse_url: str | None = None
        self._nats: NatsServer | None = None
        self._bridge: subprocess.Popen[bytes] | None = None
        self._bridge_stderr: IO[bytes] | None = None
        self._bridge_url: str | None = None

    # --- addresses ---------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return self._require_redis().url

    @property
    def redis_address(self) -> str:
        return self._require_redis().address

    @property
    def sse_url(self) -> str:
        if self._sse_url is None:
            raise SandboxError("Sandbox is not started; call start() first")
        return self._sse_url

    @property
    def nats_url(self) -> str | None:
        """The sandbox's NATS server (full topology), else None."""
        return self._nats.url if self._nats is not None else None

    @property
    def adapter_pid(self) -> int | None:
        return self._adapter.pid if self._adapter else None

    @property
    def redis_pid(self) -> int | None:
        return self._redis.pid if self._redis else None

    def _require_redis(self) -> RedisServer:
        if self._redis is None:
            raise SandboxError("Sandbox is not started; call start() first")
        return self._redis

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._adapter is not None:
            return self
        try:
            self._redis = RedisServer().start()
            if self.topology == "full":
                try:
                    self._nats = NatsServer().start()
                except NatsServerError as e:
                    raise SandboxError(str(e)) from None
                self._start_bridge(self._redis.url, self._nats.url)
            if self.tls:
                self._make_certificate()
            self._start_adapter(self._redis.url)
        except RedisServerError as e:
            self.stop()
            raise SandboxError(str(e)) from None
        except BaseException:
            self.stop()
            raise
        return self

    def _start_adapter(self, redis_url: str, port: int = 0) -> None:
        args = [
            sys.executable, "-m", "sse_tui.sandbox.adapter",
            "--redis", redis_url,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--channel-prefix", self.channel_prefix,
            "--keepalive", repr(self.keepalive_s),
            *(["--nats", self._nats.url] if self._nats is not None else []),
            *self.faults.to_args(),
            *self._tls_and_auth_args(),
        ]  # fmt: skip
        # stderr goes to a file, not a pipe: nobody reads it while things go well, and a full
        # pipe would block the adapter. On a crash its tail becomes the error message.
        self._adapter_stderr = tempfile.TemporaryFile(prefix="sse-tui-adapter-")  # noqa: SIM115 (closed in stop())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._adapter = spawn_child(
            args, stdout=subprocess.PIPE, stderr=self._adapter_stderr, env=env
        )
        assert self._adapter.stdout is not None
        line = _read_line(self._adapter.stdout, _ADAPTER_START_TIMEOUT_S)
        if not line.startswith(_LISTENING_PREFIX):
            raise SandboxError(
                f"the SSE adapter did not start ({_describe_exit(self._adapter)}): "
                f"{self._adapter_error_tail() or line.decode(errors='replace') or 'no output'}"
            )
        self._sse_url = line[len(_LISTENING_PREFIX) :].decode().strip()

    def _start_bridge(self, redis_url: str, nats_url: str) -> None:
        args = [
            sys.executable, "-m", "sse_tui.sandbox.bridge",
            "--redis", redis_url, "--nats", nats_url,
            "--channel-prefix", self.channel_prefix,
            *self.faults.bridge_args(),
        ]  # fmt: skip
        self._bridge_stderr = tempfile.TemporaryFile(prefix="sse-tui-bridge-")  # noqa: SIM115 (closed in stop())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._bridge = spawn_child(args, stdout=subprocess.PIPE, stderr=self._bridge_stderr,
                                   env=env)
        assert self._bridge.stdout is not None
        line = _read_line(self._bridge.stdout, _ADAPTER_START_TIMEOUT_S)
        if not line.startswith(_LISTENING_PREFIX):
            raise SandboxError(
                f"the bridge did not start ({_describe_exit(self._bridge)}): "
                f"{_tail(self._bridge_stderr) or line.decode(errors='replace') or 'no output'}")
        self._bridge_url = line[len(_LISTENING_PREFIX):].decode().strip()

    def _adapter_error_tail(self) -> str:
        if self._adapter_stderr is None:
            return ""
        self._adapter_stderr.seek(0)
        return self._adapter_stderr.read()[-2000:].decode(errors="replace").strip()

    def _make_certificate(self) -> None:
        self._tls_dir = tempfile.mkdtemp(prefix="sse-tui-tls-")
        try:
            cert, key = make_self_signed(self._tls_dir)
        except SandboxTLSError as e:
            raise SandboxError(str(e)) from None
        self.ca_file, self._tls_key = str(cert), str(key)

    def _tls_and_auth_args(self) -> list[str]:
        args: list[str] = []
        if self.ca_file is not None:
            args += ["--tls-cert", self.ca_file, "--tls-key", self._tls_key]
        if self.require_header:
            args += ["--require-header", self.require_header]
        return args

    def restart_adapter(self, down_s: float) -> None:
        """Kill the adapter, keep it down for `down_s` seconds, start it again on the same
        port (a pod restart): its streams break, connects are refused meanwhile, and its
        memory (the resume history) is gone. Blocks for the whole time."""
        if self._adapter is None or self._redis is None or self._sse_url is None:
            raise SandboxError("Sandbox is not started; call start() first")
        port = int(self._sse_url.rsplit(":", 1)[1].split("/", 1)[0])
        self._adapter.kill()  # no graceful close: the streams break as in a crash
        self._adapter.wait(timeout=10)
        if self._adapter.stdout is not None:
            self._adapter.stdout.close()
        if self._adapter_stderr is not None:
            self._adapter_stderr.close()
        self._adapter = self._adapter_stderr = None
        time.sleep(down_s)
        self._start_adapter(self._redis.url, port)

    def stop(self) -> None:
        self._stop_adapter()
        if self._bridge is not None:
            stop_child(self._bridge)
            if self._bridge.stdout is not None:
                self._bridge.stdout.close()
            self._bridge = None
        if self._bridge_stderr is not None:
            self._bridge_stderr.close()
            self._bridge_stderr = None
        self._bridge_url = None
        if self._nats is not None:
            self._nats.stop()
            self._nats = None
        self._stop_rest()

    def _stop_adapter(self) -> None:
        if self._adapter is not None:
            stop_child(self._adapter)
            if self._adapter.stdout is not None:
                self._adapter.stdout.close()
            self._adapter = None
        if self._adapter_stderr is not None:
            self._adapter_stderr.close()
            self._adapter_stderr = None

    def _stop_rest(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        self._sse_url = None
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = self.ca_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- introspection -----------------------------------------------------------------------

    def adapter_stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The adapter's ``/stats``: deliveries and every injected fault, overall and per id."""
        tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        with urllib.request.urlopen(f"{self.sse_url}/stats", timeout=timeout_s,
                                    context=tls) as response:
            stats: dict[str, Any] = orjson.loads(response.read())
        return stats

    def bridge_stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The bridge's ``/stats`` (full topology): tokens taken from Redis, published to
        NATS and dropped, overall and per conversation."""
        if self._bridge_url is None:
            raise SandboxError("no bridge: the sandbox is not started, or its topology is "
                               "direct")
        with urllib.request.urlopen(f"{self._bridge_url}/stats", timeout=timeout_s) as response:
            stats: dict[str, Any] = orjson.loads(response.read())
        return stats

    def check_alive(self) -> None:
        """Raise SandboxError with the adapter's stderr if a child has died."""
        if self._bridge is not None and self._bridge.poll() is not None:
            raise SandboxError(f"the bridge died ({_describe_exit(self._bridge)}): "
                               f"{_tail(self._bridge_stderr) or 'no stderr output'}")
        if self._nats is not None and not self._nats.running:
            raise SandboxError("the sandbox nats-server died")
        if self._adapter is not None and self._adapter.poll() is not None:
            raise SandboxError(
                f"the SSE adapter died ({_describe_exit(self._adapter)}): "
                f"{self._adapter_error_tail() or 'no stderr output'}"
            )
        if self._redis is not None and not self._redis.running:
            raise SandboxError("the sandbox redis-server died")


def _read_line(stream: IO[bytes], timeout_s: float) -> bytes:
    """One line from a child's pipe, or whatever arrived before EOF or the deadline."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                break
            chunk = os.read(fd, 4096)  # raw read: no buffered bytes hidden from select()
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n", 1)[0].strip()


def _tail(stderr: IO[bytes] | None) -> str:
    if stderr is None:
        return ""
    stderr.seek(0)
    return stderr.read()[-2000:].decode(errors="replace").strip()


def _describe_exit(proc: subprocess.Popen[bytes]) -> str:
    code = proc.poll()
    if code is None:
        return "still running, no LISTENING line in time"
    return f"exit code {code}"


# --- the `sse-tui sandbox` command -------------------------------------------------------------


def run_sandbox(channel_prefix: str = "llm:tokens:", faults: FaultConfig | None = None, *,
                tls: bool = False, topology: str = "direct") -> int:
    """Run the stack in the foreground until Ctrl-C or SIGTERM; returns the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Sandbox(faults=faults, channel_prefix=channel_prefix, tls=tls,
                     topology=topology) as sandbox:
            _print_banner(sandbox)
            while not stop.wait(0.5):
                sandbox.check_alive()
        print("sandbox stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_banner(sandbox: Sandbox) -> None:
    lines = [
        "sse-tui sandbox is running (Ctrl-C to stop)",
        f"  redis:    {sandbox.redis_address}   ({sandbox.redis_url})",
        f"  SSE:      {sandbox.sse_url}   (GET /stream/<id>, /healthz, /stats)",
        f"  channels: {sandbox.channel_prefix}<conversation_id>",
    ]
    if sandbox.nats_url is not None:
        lines.insert(2, f"  NATS:     {sandbox.nats_url}   (subjects chat.<conversation_id>.tokens,"
                        " fed by the bridge)")
    if sandbox.faults.any:
        lines.append(f"  faults:   {sandbox.faults}")
    lines += [
        "",
        "In another terminal:",
        f"  sse-tui --redis {sandbox.redis_address} --sse {sandbox.sse_url} -c 5 -t 50"
        + (f" --nats {sandbox.nats_url}" if sandbox.nats_url else "")
        + (f" --cacert {sandbox.ca_file}" if sandbox.ca_file else ""),
    ]
    print("\n".join(lines), flush=True)


__all__ = ["TOPOLOGIES", "FaultConfig", "Sandbox", "SandboxError", "run_sandbox"]
