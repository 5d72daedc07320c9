"""run-loadtest.sh: the shell part only. Find Python >= 3.11, keep .venv current, and exec
`sse-tui cluster "$@"`. What happens after that (options, kubectl, --port-forward) is
sse_tui/cluster/, tested in tests/test_cluster.py.

A recorder stands in for sse-tui (SSE_TUI_BIN, or bin/sse-tui in a stand-in venv), and a
fake interpreter for too old a Python. The one slow test (first-run bootstrap, ~30-60 s of
pip) is at the end and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "run-loadtest.sh"
SSE_TUI = Path(sys.executable).parent / "sse-tui"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

RECORDER = r"""
import json, os, sys
with open(os.environ["RECORD_FILE"], "w") as f:
    json.dump({"argv": sys.argv[1:], "pid": os.getpid(), "stdin": sys.stdin.read(),
               "env": {k: v for k, v in os.environ.items() if k.startswith("RUN_LOADTEST_")}}, f)
print("recorder stdout")
sys.exit(int(os.environ.get("RECORDER_EXIT", "0")))
"""

# Answers like a Python 3.8 would, for the version check.
OLD_PYTHON = """\
#!/bin/sh
case "$1" in
    -V) echo "Python 3.8.18" ;;
    -c) exit 1 ;;
    *) echo "old python: unexpected $*" >&2; exit 3 ;;
esac
"""


def write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSE_TUI_BIN", "SSE_TUI_VENV", "PYTHON", "VIRTUAL_ENV")
        and not k.startswith("RUN_LOADTEST_")
    }
    out["RECORD_FILE"] = str(tmp_path / "record.json")
    return out


def run(*args: str, env: dict[str, str], cwd: Path, stdin: str = "",
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def record(env: dict[str, str]) -> dict:
    return json.loads(Path(env["RECORD_FILE"]).read_text())


def recorder(tmp_path: Path) -> Path:
    return write_exe(tmp_path / "bin" / "sse-tui-recorder", f"#!{sys.executable}\n{RECORDER}")


# --- exec pass-through ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-c", "0", "--port-forward", "--json", "-"],
        ["sandbox", "--help"],
        ["merge", "a b.json", ""],
        ["--", "-h", "*"],
    ],
)
def test_every_argument_goes_to_sse_tui_cluster_untouched(
    tmp_path: Path, env: dict[str, str], args: list[str]
) -> None:
    env["SSE_TUI_BIN"] = str(recorder(tmp_path))
    result = run(*args, env=env, cwd=tmp_path, stdin="typed\n")
    assert result.returncode == 0, result.stderr
    got = record(env)
    assert got["argv"] == ["cluster", *args]
    assert got["stdin"] == "typed\n"
    assert result.stdout == "recorder stdout\n"  # stdout is sse-tui's alone
    assert result.stderr == ""


def test_the_script_execs_and_says_who_called_it(tmp_path: Path, env: dict[str, str]) -> None:
    env["SSE_TUI_BIN"] = str(recorder(tmp_path))
    env["RECORDER_EXIT"] = "3"
    proc = subprocess.Popen([str(SCRIPT), "-c", "2"], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert proc.wait(30) == 3  # sse-tui's exit status is the script's
    got = record(env)
    assert got["pid"] == proc.pid  # exec: no shell left waiting in between
    assert got["env"] == {
        "RUN_LOADTEST_PROG": str(SCRIPT),
        "RUN_LOADTEST_DIR": str(REPO),
        "RUN_LOADTEST_SSE_TUI": env["SSE_TUI_BIN"],
    }


def test_the_real_cli_speaks_as_the_script(tmp_path: Path, env: dict[str, str]) -> None:
    """Through the real `sse-tui cluster`: messages name the script, as they always did."""
    if not SSE_TUI.exists():
        pytest.skip("sse-tui is not installed next to this interpreter")
    env["SSE_TUI_BIN"] = str(SSE_TUI)
    bad = run("-c", "0", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0] == (
        f"{SCRIPT}: invalid value for -c: must be at least 1, got 0"
    )
    assert f"Usage: {SCRIPT} [OPTIONS]" in bad.stderr
    installed = run("--install-only", env=env, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert f"sse-tui is installed: {SSE_TUI}" in installed.stderr
    helped = run("--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0
    assert helped.stdout.startswith(f"Usage: {SCRIPT} [OPTIONS]")


# --- .venv: current, stale, and the interpreter that makes it ------------------------------


def stand_in_venv(tmp_path: Path, stamp: str) -> Path:
    """A venv whose bin/sse-tui is the recorder, installed `stamp`: .installed-*."""
    venv = tmp_path / "venv"
    write_exe(venv / "bin" / "sse-tui", f"#!{sys.executable}\n{RECORDER}")
    (venv / f".installed-{stamp}").touch()
    return venv


@pytest.mark.parametrize("stamp", ["run-loadtest", "test"])
def test_a_current_venv_is_used_without_installing(
    tmp_path: Path, env: dict[str, str], stamp: str
) -> None:
    env["SSE_TUI_VENV"] = str(stand_in_venv(tmp_path, stamp))
    env["PYTHON"] = str(tmp_path / "no-python-needed")
    result = run("--demo", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert record(env)["argv"] == ["cluster", "--demo"]
    assert "Installing" not in result.stderr


def test_a_venv_older_than_pyproject_is_refreshed(tmp_path: Path, env: dict[str, str]) -> None:
    venv = stand_in_venv(tmp_path, "run-loadtest")
    old = (SCRIPT.parent / "pyproject.toml").stat().st_mtime - 100
    os.utime(venv / ".installed-run-loadtest", (old, old))
    env["SSE_TUI_VENV"] = str(venv)
    # The refresh starts with the interpreter check: a too-old one stops it right there,
    # which shows the refresh was attempted without running pip.
    env["PYTHON"] = str(write_exe(tmp_path / "python3.8", OLD_PYTHON))
    result = run("--demo", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert not Path(env["RECORD_FILE"]).exists()
    assert "needs Python >= 3.11" in result.stderr


def test_too_old_a_python_is_refused_with_what_to_do(tmp_path: Path, env: dict[str, str]) -> None:
    env["SSE_TUI_VENV"] = str(tmp_path / "venv")
    env["PYTHON"] = str(write_exe(tmp_path / "python3.8", OLD_PYTHON))
    result = run("--demo", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"[ERROR] sse-tui needs Python >= 3.11 but {env['PYTHON']} is Python 3.8.18; "
        "set PYTHON=python3.11"
    )
    assert not (tmp_path / "venv").exists()


def test_a_missing_python_is_refused_with_what_to_do(tmp_path: Path, env: dict[str, str]) -> None:
    env["SSE_TUI_VENV"] = str(tmp_path / "venv")
    env["PYTHON"] = "python-that-does-not-exist"
    result = run(env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "[ERROR] python-that-does-not-exist not found: install Python 3.11 or newer, "
        "or set PYTHON=/path/to/python3.11"
    )


def test_the_script_stays_small() -> None:
    """The issue's bound: shell only for what must be shell."""
    assert len(SCRIPT.read_text().splitlines()) <= 100


# --- bootstrap (slow) -----------------------------------------------------------------------

PIP_OFFLINE_HINTS = ("Could not find a version", "No matching distribution", "Failed to establish")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_first_run_bootstrap_creates_venv_and_installs_slow(tmp_path: Path) -> None:
    """SLOW (~30-60 s): a fresh copy of the project, no .venv: the script makes one."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("run-loadtest.sh", "pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, project / name)
    if not (project / "README.md").exists():  # pyproject names it; the lead's README may lag
        (project / "README.md").write_text("# sse-tui\n")
    shutil.copytree(
        REPO / "sse_tui",
        project / "sse_tui",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSE_TUI_BIN", "SSE_TUI_VENV", "VIRTUAL_ENV")
        and not k.startswith("RUN_LOADTEST_")
    }
    env["PYTHON"] = sys.executable  # the interpreter running the suite: >= 3.11 by definition

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(project / "run-loadtest.sh"), *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )

    first = run("--install-only")
    if first.returncode != 0 and any(h in first.stderr for h in PIP_OFFLINE_HINTS):
        pytest.skip(f"pip cannot reach a package index: {first.stderr.strip().splitlines()[-1]}")
    assert first.returncode == 0, first.stderr
    assert "Creating virtualenv" in first.stderr
    assert "Installing sse-tui" in first.stderr
    venv = project / ".venv"
    assert (venv / "bin" / "sse-tui").exists()
    assert (venv / ".installed-run-loadtest").exists()
    assert f"sse-tui is installed: {venv / 'bin' / 'sse-tui'}" in first.stderr
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sse_tui, sys; print(sse_tui.__file__)"],
        cwd=tmp_path,  # not the checkout: `python -c` would import ./sse_tui from there
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert str(project / "sse_tui") in check.stdout  # editable: source edits apply at once

    second = run("--install-only")
    assert second.returncode == 0, second.stderr
    assert "Installing" not in second.stderr  # up to date: no pip on the second run

    stamp = venv / ".installed-run-loadtest"
    old = time.time() - 100
    os.utime(stamp, (old, old))
    os.utime(project / "pyproject.toml")  # pyproject.toml is now newer than the last install
    third = run("--install-only")
    assert third.returncode == 0, third.stderr
    assert "Installing sse-tui" in third.stderr
    assert "Creating virtualenv" not in third.stderr

    # The installed CLI behind the script: its own help (`--` passes --help through to
    # sse-tui), and the script's options judged by sse-tui's parser.
    helped = run("--", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--duration" in helped.stdout
    bad = run("-d", "fast")
    assert bad.returncode == 2
    assert "invalid value for -d: 'fast' is not a number of milliseconds" in bad.stderr


