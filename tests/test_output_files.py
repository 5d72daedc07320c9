"""--json and every file sse-tui writes: checked before the run, written atomically and
privately, FIFOs and devices written through (never replaced), write errors one line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sse_tui.files import WriteError, check_writable, write_private_atomically

RUN = ["--demo", "--no-tui", "-c", "2", "-t", "5", "-d", "1", "-duration", "0"]


def sse_tui(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sse_tui", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def full_device(tmp_path: Path) -> Iterator[Path]:
    """A device that answers every write with ENOSPC: our own node of /dev/full when we may
    make one (so a regression replaces a file in tmp_path, not the machine's /dev/full)."""
    if os.geteuid() == 0:
        node = tmp_path / "full"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        yield node
    else:
        yield Path("/dev/full")


class FifoReader(threading.Thread):
    """Reads a FIFO to its end in the background, as `cat fifo` would."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.data = b""

    def run(self) -> None:
        with open(self.path, "rb") as f:  # blocks until the writer opens it
            self.data = f.read()


# -- the writer ----------------------------------------------------------------------------

def test_a_regular_file_is_replaced_atomically_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    target.write_text("old")
    target.chmod(0o644)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert write_private_atomically(link, "new") == target
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert link.is_symlink()  # the link still points at the file, which was replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "s.json"]  # no temp left


def test_a_fifo_is_written_through_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    reader.start()
    write_private_atomically(fifo, '{"a": 1}\n')
    reader.join(timeout=10)
    assert not reader.is_alive() and reader.data == b'{"a": 1}\n'
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_fifo_nobody_reads_is_an_error_not_a_hang(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import sse_tui.files

    monkeypatch.setattr(sse_tui.files, "FIFO_READER_WAIT_S", 0.3)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    check_writable(fifo)  # a reader may still come: not an error before the run
    with pytest.raises(WriteError, match="no process is reading it"):
        write_private_atomically(fifo, "x")


def test_a_pipe_given_as_dev_fd_is_written_through() -> None:
    r, w = os.pipe()
    try:
        write_private_atomically(f"/dev/fd/{w}", "through the pipe\n")
        assert os.read(r, 100) == b"through the pipe\n"
    finally:
        os.close(r)
        os.close(w)


def test_a_device_is_written_through_and_its_error_is_one_line(full_device: Path) -> None:
    check_writable(full_device)
    with pytest.raises(WriteError) as e:
        write_private_atomically(full_device, "x" * 10)
    assert str(e.value) == f"cannot write {str(full_device)!r}: No space left on device"
    assert stat.S_ISCHR(full_device.stat().st_mode)  # still the device, not a file


@pytest.mark.parametrize(("path", "needle"), [
    ("/proc/x.json", "cannot write '/proc/x.json'"),
    ("/nonexistent-dir/x.json", "directory '/nonexistent-dir' does not exist"),
    ("/", "'/' is a directory"),
])
def test_check_writable_refuses_what_cannot_be_written(path: str, needle: str) -> None:
    with pytest.raises(WriteError, match=needle):
        check_writable(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_check_writable_refuses_a_read_only_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="Permission denied"):
            check_writable(tmp_path / "x.json")
    finally:
        tmp_path.chmod(0o755)


# -- the command ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/proc/x.json", "/nonexistent-dir/x.json", "/tmp"])
def test_an_unwritable_json_path_is_exit_2_before_the_run(path: str) -> None:
    r = sse_tui(*RUN, "--json", path, timeout=20)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sse-tui: invalid value for --json: ")
    assert "Traceback" not in r.stderr and r.stdout == ""  # no run: no header, no summary


def test_a_write_error_at_the_end_is_one_line_after_the_summary(full_device: Path) -> None:
    r = sse_tui(*RUN, "--json", str(full_device))
    assert r.returncode == 1
    assert "=== Load Test Results ===" in r.stdout and "Tokens Received:      10" in r.stdout
    assert r.stderr.strip().splitlines() == [
        f"sse-tui: the JSON summary was not written: cannot write {str(full_device)!r}: "
        "No space left on device"]
    assert stat.S_ISCHR(full_device.stat().st_mode)


def test_json_through_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "summary.fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    reader.start()
    r = sse_tui(*RUN, "--json", str(fifo))
    reader.join(timeout=10)
    assert r.returncode == 0, r.stderr
    assert json.loads(reader.data)["tokens_received"] == 10
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_json_to_dev_stdout_is_like_dash() -> None:
    # /proc/self/fd/1 is what /dev/stdout links to; a regression cannot rename over it.
    r = sse_tui(*RUN, "--json", "/proc/self/fd/1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tokens_received"] == 10  # stdout carries the JSON alone
    assert "=== Load Test Results ===" in r.stderr


def test_the_json_file_is_private(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    r = sse_tui(*RUN, "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["tokens_received"] == 10
