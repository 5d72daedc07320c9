"""What the benchmark measures against: a redis-server and an SSE adapter on loopback.

The adapter is the fast Go one (standard library only) when Go and its source are at hand,
else the project's Python sandbox adapter. The Go adapter keeps the adapter's own CPU from
crowding the generator off the 2 cores; the figures say which one ran.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from sse_tui.sandbox import RedisServer, Sandbox
from sse_tui.sandbox.redis_server import free_port, spawn_child, stop_child

REPO = Path(__file__).resolve().parent.parent
# Where the shared Go adapter's source sits beside this repository, unless told otherwise.
GO_ADAPTER_DEFAULT = REPO.parent / "shared" / "goadapter"
GO_BUILD_TIMEOUT_S = 120.0
GO_START_TIMEOUT_S = 10.0


class StackError(Exception):
    """The stack could not be set up; the message says why."""


def go_adapter_source(path: str | None) -> Path | None:
    """The Go adapter's source directory (or built binary), if there is one to use."""
    candidate = Path(path or os.environ.get("SSE_TUI_GOADAPTER") or GO_ADAPTER_DEFAULT)
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    if (candidate / "main.go").is_file():
        return candidate
    return None


def choose_adapter(wanted: str, go_path: str | None) -> tuple[str, Path | None, str]:
    """(adapter, Go source or binary, why): `auto` takes Go when it can be built here."""
    src = go_adapter_source(go_path)
    go = shutil.which("go")
    if wanted == "python":
        return "python", None, "asked for"
    usable = src is not None and (src.is_file() or go is not None)
    if wanted == "go" and not usable:
        raise StackError("--adapter go: need the Go adapter's source (--go-adapter DIR, with "
                         "main.go) and a Go toolchain (apt-get install golang-go), or a built "
                         "binary (--go-adapter FILE)")
    if usable:
        return "go", src, "asked for" if wanted == "go" else "Go and its source found"
    why = "no Go toolchain (apt-get install golang-go)" if src else "no Go adapter source"
    return "python", None, f"{why}: falling back to the Python sandbox adapter"


def build_go_adapter(src: Path, out_dir: Path) -> tuple[Path, str]:
    """Build the adapter (standard library only, no network); returns (binary, go version)."""
    if src.is_file():
        return src, "prebuilt"
    build = out_dir / "src"
    shutil.copytree(src, build, ignore=shutil.ignore_patterns("goadapter", "a.out"))
    for f in build.iterdir():  # the shared copy may be read-only
        f.chmod(0o644)
    binary = out_dir / "goadapter"
    env = dict(os.environ, GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    try:
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=build, env=env,
                       check=True, capture_output=True, timeout=GO_BUILD_TIMEOUT_S)
        version = subprocess.run(["go", "version"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()[2]
    except subprocess.CalledProcessError as e:
        raise StackError(f"go build failed: {e.stderr.decode(errors='replace')[-500:]}") from None
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StackError(f"go build failed: {e}") from None
    return binary, version


class BenchStack:
    """redis-server + an SSE adapter on free loopback ports; a context manager."""

    def __init__(self, adapter: str, go_binary: Path | None = None) -> None:
        self.adapter = adapter
        self._go_binary = go_binary
        self._sandbox: Sandbox | None = None
        self._redis: RedisServer | None = None
        self._go: subprocess.Popen[bytes] | None = None
        self._go_log: IO[bytes] | None = None
        self.sse_url = ""

    @property
    def redis_address(self) -> str:
        if self._sandbox is not None:
            return self._sandbox.redis_address
        assert self._redis is not None
        return self._redis.address

    @property
    def redis_pid(self) -> int | None:
        return self._sandbox.redis_pid if self._sandbox else (
            self._redis.pid if self._redis else None)

    @property
    def adapter_pid(self) -> int | None:
        return self._sandbox.adapter_pid if self._sandbox else (
            self._go.pid if self._go else None)

    def __enter__(self) -> Self:
        try:
            if self.adapter == "python":
                self._sandbox = Sandbox().start()
                self.sse_url = self._sandbox.sse_url
            else:
                self._start_go()
        except BaseException:
            self.close()
            raise
        return self

    def _start_go(self) -> None:
        assert self._go_binary is not None
        self._redis = RedisServer().start()
        port = free_port()
        self._go_log = tempfile.TemporaryFile(prefix="bench-goadapter-")  # noqa: SIM115 (closed in close())
        self._go = spawn_child(
            [str(self._go_binary), "--redis", self._redis.address,
             "--listen", f"127.0.0.1:{port}", "--prefix", "llm:tokens:"],
            stdout=self._go_log, stderr=self._go_log)
        self.sse_url = f"http://127.0.0.1:{port}"
        # Ready when /healthz answers 200: its Redis subscription is live. (No proxy: loopback.)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + GO_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._go.poll() is not None:
                break
            with contextlib.suppress(OSError), opener.open(self.sse_url + "/healthz",
                                                           timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.05)
        self._go_log.seek(0)
        tail = self._go_log.read()[-500:].decode(errors="replace").strip()
        raise StackError(f"the Go adapter did not become healthy in {GO_START_TIMEOUT_S:g} s: "
                         f"{tail or 'no output'}")

    def close(self) -> None:
        if self._go is not None:
            stop_child(self._go)
            self._go = None
        if self._go_log is not None:
            self._go_log.close()
            self._go_log = None
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
