"""A program on a pseudo-terminal, its screen read back through pyte (a VT emulator): how
the tests see what a user sees (tests/test_wheel.py, and `kubectl exec` in test_fleet.py)."""

from __future__ import annotations

import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from fcntl import ioctl
from pathlib import Path

import pyte


def clean_env() -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "NO_COLOR", "TEXTUAL", "SSE_TUI_BIN")
    return {k: v for k, v in os.environ.items() if k not in drop}



class Terminal:
    """A program on a pseudo-terminal, its screen kept by a VT emulator."""

    def __init__(self, argv: list[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None, *, size: tuple[int, int] = (120, 36),
                 size_in_env: bool = True) -> None:
        # size_in_env=False: the size is on the pty alone, as `kubectl exec -it` gives it.
        columns, lines = size
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        master, slave = pty.openpty()
        ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        if env is None:
            env = clean_env()
            env["TERM"] = "xterm-256color"
        if size_in_env:
            env = {**env, "COLUMNS": str(columns), "LINES": str(lines)}
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True, close_fds=True,
        )
        os.close(slave)
        self.master = master

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], min(left, 0.1))
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program closed the terminal
                return
            if not data:
                return
            self.raw += data
            self.stream.feed(data)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.2)
            if predicate(self.text()):
                return self.text()
            if self.proc.poll() is not None:
                self.pump(0.5)
                break
        raise AssertionError(f"timed out waiting for {what}; screen:\n{self.text()}\n"
                             f"exit status: {self.proc.poll()}; output tail: "
                             f"{bytes(self.raw[-2000:])!r}")

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def quit(self, timeout: float = 30) -> int:
        """Press q and wait for the program to exit; its status."""
        self.send("q")
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.2)
        self.pump(0.3)
        return self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        os.close(self.master)
