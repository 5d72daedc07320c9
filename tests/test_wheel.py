"""What users install is what runs: the built wheel, in a clean venv, on a real terminal.

An editable install reads the package from the checkout, so a file missing from the wheel (the
TUI's stylesheet once was) passes every other test and crashes every installed copy. Here the
wheel is built as `pip install .` builds it, installed into a fresh venv, and `sse-tui --demo`
runs from there on a pseudo-terminal whose screen is read back through a terminal emulator
(pyte), as a user would see it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.terminal import Terminal
from tests.terminal import clean_env as _clean_env

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "sse_tui"
PIP_OFFLINE_HINTS = ("Could not find a version", "No matching distribution", "Failed to establish")

pytestmark = pytest.mark.slow


def package_data_files() -> set[str]:
    """Every non-Python file of the package, as a path inside the wheel."""
    return {
        str(p.relative_to(REPO))
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy of what a clean checkout holds: a working tree's stale build/ or *.egg-info
    # would hand setuptools files the project no longer declares.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(PACKAGE, source / "sse_tui",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0 and any(h in build.stderr for h in PIP_OFFLINE_HINTS):
        pytest.skip(f"pip cannot reach a package index: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (built,) = out.glob("sse_tui-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the wheel and its dependencies, nothing from the checkout."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if pip.returncode != 0 and any(h in pip.stderr for h in PIP_OFFLINE_HINTS):
        pytest.skip(f"pip cannot reach a package index: {pip.stderr.strip().splitlines()[-1]}")
    assert pip.returncode == 0, pip.stderr
    return venv


def test_every_non_python_file_of_the_package_is_in_the_wheel(wheel: Path) -> None:
    wanted = package_data_files()
    assert "sse_tui/tui/app.tcss" in wanted  # the file whose absence broke the installed TUI
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert wanted <= names, f"missing from the wheel: {sorted(wanted - names)}"


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path,
                                                            tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import sse_tui; print(sse_tui.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert where.returncode == 0, where.stderr
    assert str(installed) in where.stdout and str(REPO) not in where.stdout


def _published(screen: str) -> int:
    """The producer panel's published count, 0 until it shows one."""
    for line in screen.splitlines():
        if "published" in line.lower():
            digits = "".join(ch for ch in line.split("published", 1)[-1][:20] if ch.isdigit())
            if digits:
                return int(digits)
    return 0


@pytest.mark.timeout(900)
def test_demo_shows_the_live_monitor_from_the_installed_wheel(installed: Path,
                                                              tmp_path: Path) -> None:
    check_demo_on_a_terminal([str(installed / "bin" / "sse-tui")], tmp_path)


def check_demo_on_a_terminal(command: list[str], cwd: Path,
                             env: dict[str, str] | None = None) -> None:
    """`COMMAND --demo` on a terminal shows the live monitor with tokens flowing, quits on
    `q` with status 0 and prints the summary to the normal screen."""
    term = Terminal([*command, "--demo", "-c", "3", "-t", "1000", "-d", "10",
                     "--duration", "60s"], cwd=cwd, env=env)
    try:
        screen = term.wait_for(
            lambda s: all(t in s for t in ("Producer", "Latency", "Consumers")),
            timeout=60, what="the live monitor's panels")
        assert "StylesheetError" not in screen
        term.wait_for(lambda s: _published(s) > 0, timeout=30, what="tokens published on screen")
        term.send("q")
        deadline = time.monotonic() + 30
        while term.proc.poll() is None and time.monotonic() < deadline:
            term.pump(0.2)
        term.pump(0.5)
        assert term.proc.poll() == 0, bytes(term.raw[-3000:])
        # The summary is printed to the normal screen after the app has left.
        assert b"Tokens Published:" in term.raw, bytes(term.raw[-3000:])
        assert b"Traceback" not in term.raw
    finally:
        term.close()
