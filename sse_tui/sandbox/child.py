"""Servers the sandbox owns as child processes that never outlive us.

A child is started with ``PR_SET_PDEATHSIG`` (Linux) so the kernel kills it if we die
without calling ``stop()``. `ChildServer` is what redis-server and nats-server have in common:
a free loopback port (retried if someone takes it first), a private tmpdir and log, a
readiness probe, and stop/cleanup; the subclasses say which binary, which arguments and how
to tell it is up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (callers retry if it is taken by the time they bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --- spawning children that die with us -------------------------------------------------------


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: ask the kernel to SIGKILL the child when its parent thread goes away."""

    if not sys.platform.startswith("linux"):
        return lambda: None
    # Resolved before fork: dlopen in the child could wait on a lock another thread held.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody would signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


class _Spawner:
    """Runs Popen on one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process.
    The load engine and the TUI start sandboxes from worker threads that come and go, so
    children are always forked from this thread, which lives as long as the process.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="sse-tui-spawner", daemon=True
                )
                self._thread.start()
        reply: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._jobs.put((fn, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def _loop(self) -> None:
        while True:
            fn, reply = self._jobs.get()
            try:
                reply.put(fn())
            except BaseException as exc:  # handed back to the caller's thread
                reply.put(exc)


_spawner = _Spawner()


def spawn_child(
    args: Sequence[str],
    *,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Popen a child that is killed by the kernel if this process dies."""
    parent_pid = os.getpid()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            preexec_fn=_die_with_parent(parent_pid),
            close_fds=True,
        )

    return _spawner.run(start)


def stop_child(proc: subprocess.Popen[bytes], timeout: float = _STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, SIGKILL if it does not go."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=timeout)


# --- the server --------------------------------------------------------------------------------


class ChildServer:
    """A server on 127.0.0.1:<free port>, persisting nothing; use as a context manager."""

    NAME: ClassVar[str]  # the binary's name, for messages and the tmpdir
    ERROR: ClassVar[type[RuntimeError]]
    NOT_READY: ClassVar[str]  # what "not up in time" means for it

    def __init__(self, binary: str | None = None, start_timeout_s: float = _START_TIMEOUT_S):
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._port: int | None = None

    # What each server says for itself.
    def find_binary(self) -> str:
        raise NotImplementedError

    def command(self, binary: str, port: int, tmpdir: str) -> list[str]:
        raise NotImplementedError

    def ready(self, port: int) -> bool:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None:
            raise self.ERROR(f"{type(self).__name__} is not started; call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self._proc is not None:
            return self
        binary = self._binary or self.find_binary()
        self._tmpdir = tempfile.mkdtemp(prefix=f"sse-tui-{self.NAME}-")
        last_error = ""
        try:
            # The free port can be taken by someone else before the server binds it: retry.
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
        raise self.ERROR(f"{self.NAME} ({binary}) did not start: {last_error}")

    def _try_start(self, binary: str, port: int) -> str:
        """Start on `port`; return "" once it is ready, else why it failed."""
        assert self._tmpdir is not None
        log_path = Path(self._tmpdir) / f"{self.NAME}.log"
        with open(log_path, "wb") as log:
            self._proc = spawn_child(self.command(binary, port, self._tmpdir), stdout=log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self.ready(port):
                return ""
            time.sleep(0.02)
        stop_child(self._proc)
        self._proc = None
        tail = log_path.read_text(errors="replace")[-800:].strip()
        return tail or f"{self.NOT_READY} within {self._start_timeout_s:.0f} s"

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
        state = f"127.0.0.1:{self.port}" if self.running else "stopped"
        return f"{type(self).__name__}({state})"
