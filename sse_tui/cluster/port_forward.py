"""--port-forward: kubectl port-forward tunnels on free local ports, sse-tui between them.

The lifecycle, in order: check kubectl, open each tunnel and wait (bounded) until the
service answers through it, run sse-tui as a child against the tunnels, and close the
tunnels when sse-tui is done, whatever ended the run.

Why sse-tui runs as a child here rather than in this process: the tunnels must outlive
sse-tui's own shutdown (a stop lets it drain in-flight tokens and write its summary, which
needs Redis and the adapter), and something must still be there to close them when it is
gone, or to kill it when it does not stop within STOP_GRACE. A child also owns the
terminal as the original tool did: it is in the foreground process group, so a Ctrl-C
reaches it directly, while the tunnels sit in sessions of their own where it does not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

from sse_tui.cluster.kube import (
    NATS,
    REDIS,
    SSE_ADAPTER,
    KubeSettings,
    Seconds,
    choose_kubeconfig,
)
from sse_tui.cluster.log import Log

POLL_S = 0.1  # how often the waits below look again
_PROBE_TIMEOUT_S = 2.0
_TUNNEL_STOP_S = 3.0  # kubectl gets this long to go after SIGTERM


class Stopped(Exception):
    """A stop signal came before sse-tui was running."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TunnelError(Exception):
    """A tunnel did not come up; `details` is kubectl's own output."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class StopSignals:
    """Records the first SIGINT/SIGTERM/SIGHUP instead of dying on it: the run decides
    what a stop means (before sse-tui: give up; during: let it drain, then close)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.first: int | None = None
        self._saved: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        for signum in self.SIGNALS:
            self._saved[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.first is None:
            self.first = signum  # a second one (an impatient operator) changes nothing

    def check(self) -> None:
        if self.first is not None:
            raise Stopped(self.first)


# --- probes: is it the service that answers? ----------------------------------------------

def _first_bytes(port: int, request: bytes, want: int) -> bytes:
    deadline = time.monotonic() + _PROBE_TIMEOUT_S
    got = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=_PROBE_TIMEOUT_S) as s:
            s.sendall(request)
            while len(got) < want and b"\n" not in got and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
    except OSError:
        pass
    return got


def probe_redis(port: int) -> bool:
    """Something answering like Redis (+PONG, or an -ERR such as NOAUTH) listens there."""
    return _first_bytes(port, b"PING\r\n", 1)[:1] in (b"+", b"-")


def probe_http(port: int) -> bool:
    """An HTTP server answers there, with any status."""
    return _first_bytes(port, b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", 5).startswith(
        b"HTTP/"
    )


def probe_nats(port: int) -> bool:
    """A NATS server greets every client with `INFO {...}` before it says anything."""
    return _first_bytes(port, b"", 4).startswith(b"INFO")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- one tunnel -------------------------------------------------------------------------

@dataclass
class Tunnel:
    namespace: str
    service: str
    port: int
    proc: subprocess.Popen[bytes]
    output: IO[bytes]  # kubectl's stdout and stderr, quoted when it fails

    @property
    def name(self) -> str:
        return f"{self.namespace}/svc/{self.service}"

    def output_text(self) -> str:
        self.output.flush()
        self.output.seek(0)
        return self.output.read().decode(errors="replace")

    def wait_ready(self, probe: Callable[[int], bool], timeout: Seconds, stop: StopSignals,
                   log: Log) -> None:
        deadline = time.monotonic() + timeout.value
        while True:
            stop.check()
            if self.proc.poll() is not None:
                raise TunnelError(f"kubectl port-forward for {self.name} exited:",
                                  self.output_text())
            if probe(self.port):
                log.info(f"127.0.0.1:{self.port} answers for {self.name}")
                return
            if time.monotonic() >= deadline:
                raise TunnelError(
                    f"{self.name} did not answer on 127.0.0.1:{self.port} within "
                    f"{timeout.text}s.",
                    self.output_text(),
                )
            time.sleep(POLL_S)

    def signal(self, signum: int) -> None:
        if self.proc.returncode is None:  # not reaped: its process group is still its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)


def start_tunnel(kube: KubeSettings, env: Mapping[str, str], namespace: str, service: str,
                 remote: int, log: Log) -> Tunnel:
    port = free_port()
    log.info(f"Port-forwarding {namespace}/svc/{service}:{remote} to 127.0.0.1:{port} ...")
    output = tempfile.TemporaryFile()  # noqa: SIM115 (the Tunnel owns it; closed by close_tunnels)
    try:
        # Its own session: a Ctrl-C on the terminal must not cut the tunnel while sse-tui
        # is still draining in-flight tokens; close_tunnels stops it afterwards.
        proc = subprocess.Popen(
            [kube.kubectl, "port-forward", "--address", "127.0.0.1", "-n", namespace,
             f"svc/{service}", f"{port}:{remote}"],
            env=dict(env), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        output.close()
        raise TunnelError(f"could not start {kube.kubectl} port-forward: {e}") from None
    return Tunnel(namespace, service, port, proc, output)


def close_tunnels(tunnels: Sequence[Tunnel]) -> None:
    for tunnel in tunnels:
        tunnel.signal(signal.SIGTERM)
    deadline = time.monotonic() + _TUNNEL_STOP_S
    for tunnel in tunnels:
        try:
            tunnel.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            tunnel.signal(signal.SIGKILL)
            # Unkillable (stuck in the kernel): nothing more we can do.
            with contextlib.suppress(subprocess.TimeoutExpired):
                tunnel.proc.wait(2)
        tunnel.output.close()


# --- the run ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Needs:
    """The tunnels to open: what the mode needs and -r/-s did not give."""

    redis: bool
    sse: bool
    nats: bool = False  # --nats without a value: the per-hop tap (docs/topology.md)


def run_with_port_forward(
    kube: KubeSettings,
    env: Mapping[str, str],
    needs: Needs,
    command_for: Callable[[dict[str, str]], list[str]],
    stdin: int | None,
    log: Log,
    *,
    cwd: Path,
    script_dir: Path | None,
) -> int:
    """Open the tunnels, run `command_for(endpoints)` as a child, close the tunnels.
    Returns the exit status: sse-tui's, 1 when a tunnel fails, 128+N for signal N before
    sse-tui started."""
    if not kube.kubectl_found(env):
        log.error(f"--port-forward needs kubectl, and '{kube.kubectl}' is not on PATH "
                  f"(install kubectl, or set KUBECTL=/path/to/kubectl)")
        return 1
    tunnels: list[Tunnel] = []
    child: subprocess.Popen[bytes] | None = None
    with StopSignals() as stop:
        try:
            kube_env = choose_kubeconfig(env, cwd, script_dir, log)
            if kube_env is None:
                log.warn("No kubeconfig found; kubectl uses its defaults.")
                kube_env = dict(env)
            endpoints: dict[str, str] = {}
            wanted = [(needs.redis, REDIS, 6379, probe_redis, "redis", "{}"),
                      (needs.sse, SSE_ADAPTER, 80, probe_http, "sse", "http://{}"),
                      (needs.nats, NATS, 4222, probe_nats, "nats", "nats://{}")]
            for needed, (namespace, service), remote, probe, dest, form in wanted:
                if not needed:
                    continue
                stop.check()
                tunnel = start_tunnel(kube, kube_env, namespace, service, remote, log)
                tunnels.append(tunnel)
                tunnel.wait_ready(probe, kube.port_forward_timeout, stop, log)
                endpoints[dest] = form.format(f"127.0.0.1:{tunnel.port}")
            if not tunnels:
                log.warn("--port-forward: -r/-s given for everything this mode needs; "
                         "nothing to forward.")
            stop.check()
            child = subprocess.Popen(command_for(endpoints), stdin=stdin, env=kube_env)
            return _wait_for_sse_tui(child, stop, kube.stop_grace, log)
        except Stopped as e:
            return 128 + e.signum
        except TunnelError as e:
            log.error(str(e))
            log.indented(e.details)
            return 1
        finally:
            if child is not None and child.poll() is None:  # only on an unexpected error
                child.kill()
                child.wait()
            if tunnels:
                close_tunnels(tunnels)
                log.info("Stopped the port-forwards.")


def _wait_for_sse_tui(child: subprocess.Popen[bytes], stop: StopSignals, grace: Seconds,
                      log: Log) -> int:
    """Wait for sse-tui. After a stop signal it gets `grace` to drain and write its summary
    (asked with SIGTERM unless the terminal's Ctrl-C reached it already), then it is killed."""
    deadline: float | None = None
    while True:
        try:
            return _exit_status(child.wait(POLL_S))
        except subprocess.TimeoutExpired:
            pass
        if stop.first is not None and deadline is None:
            if not (stop.first == signal.SIGINT and _caught_terminal_sigint(child.pid)):
                child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace.value
        if deadline is not None and time.monotonic() >= deadline:
            name = signal.Signals(stop.first or signal.SIGTERM).name
            log.warn(f"sse-tui did not stop within {grace.text}s after {name}; killing it.")
            child.kill()
            return _exit_status(child.wait())


def _caught_terminal_sigint(pid: int) -> bool:
    """True when we sit on a terminal and sse-tui catches SIGINT itself: a Ctrl-C there
    reached it too (same process group), and one more stop signal would make it stop twice,
    skipping the drain."""
    try:
        if not os.isatty(0):
            return False
        with open(f"/proc/{pid}/status") as f:
            caught = next((line.split()[1] for line in f if line.startswith("SigCgt:")), "")
    except (OSError, IndexError):
        return False
    return bool(caught) and bool(int(caught, 16) & (1 << (signal.SIGINT - 1)))


def _exit_status(returncode: int) -> int:
    """As a shell reports it: 128+N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode
