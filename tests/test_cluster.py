"""`sse-tui cluster` (sse_tui/cluster/): run-loadtest.sh's options, endpoint detection and
--port-forward, driven with a fake `kubectl` on PATH and a fake sse-tui that records argv.

The command runs in a process of its own (a launcher written by the test that calls
`sse_tui.cluster.main` with the recorder as sse-tui), so that signals, exit statuses and
stdout are the real ones. A few tests run the real CLI: the value checks, the plain run
against the sandbox, and the end-to-end run through relaying tunnels.
Every network touch is 127.0.0.1, every wait is bounded (`wait_until` from conftest).
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sse_tui.cli_args import CliOptions, parse_args
from sse_tui.cluster import Launch, main
from sse_tui.cluster.options import parse_script_args
from sse_tui.sandbox import Sandbox
from sse_tui.settings import UsageError
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parent.parent
PROG = "/opt/loadtest/run-loadtest.sh"  # what the script passes as RUN_LOADTEST_PROG
SSE_TUI = Path(sys.executable).parent / "sse-tui"


# A stand-in for kubectl: `get svc` answers per FAKE_GET, `port-forward` listens on the
# requested local port and answers a Redis PING or an HTTP request, per FAKE_PF.
FAKE_KUBECTL = r"""
import json, os, signal, socket, sys, time

args = sys.argv[1:]
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as f:
    f.write(json.dumps({"argv": args, "kubeconfig": os.environ.get("KUBECONFIG")}) + "\n")
plain = [a for a in args if not a.startswith("--request-timeout")]

if plain[:2] == ["get", "svc"]:
    svc = plain[2]
    how = os.environ.get("FAKE_GET", "ip")
    if how == "ip":
        print({"redis": "10.1.2.3", "sse-adapter": "10.4.5.6", "nats": "10.7.8.9"}[svc] + " ",
              end="")
    elif how == "hostname":
        print(" " + svc + ".lb.example.test", end="")
    elif how == "empty":
        print(" ", end="")
    elif how == "unreachable":
        print("Unable to connect to the server: dial tcp 10.9.9.9:6443: i/o timeout",
              file=sys.stderr)
        sys.exit(1)
    elif how == "notfound":
        print(f'Error from server (NotFound): services "{svc}" not found', file=sys.stderr)
        sys.exit(1)
    elif how == "hang":
        time.sleep(60)
    sys.exit(0)

if plain[:1] == ["port-forward"]:
    with open(os.environ["FAKE_PF_PIDS"], "a") as f:
        f.write(f"{os.getpid()}\n")
    local_port = int([a for a in plain if ":" in a][-1].split(":")[0])
    how = os.environ.get("FAKE_PF", "serve")
    if how == "fail":
        print('error: services "redis" not found', file=sys.stderr)
        sys.exit(1)
    if how == "dead":  # alive, but nothing listens
        time.sleep(60)
        sys.exit(0)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", local_port))
    srv.listen(16)
    print(f"Forwarding from 127.0.0.1:{local_port}", flush=True)
    if how == "proxy":  # a real tunnel, to FAKE_PF_TARGET_<service> (a loopback host:port)
        import threading
        service = [a for a in plain if a.startswith("svc/")][0][4:].replace("-", "_")
        host, port = os.environ["FAKE_PF_TARGET_" + service].rsplit(":", 1)

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        while True:
            conn, _ = srv.accept()
            upstream = socket.create_connection((host, int(port)), 5)
            threading.Thread(target=pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
    nats = "svc/nats" in plain
    while True:
        conn, _ = srv.accept()
        conn.settimeout(2)
        try:
            if nats and how == "serve":  # a NATS server speaks first
                conn.sendall(b'INFO {"server_name":"fake"}\r\n')
                continue
            first = conn.recv(1024)
            if how == "serve":
                if first.startswith(b"PING"):
                    conn.sendall(b"+PONG\r\n")
                elif first.startswith(b"GET"):
                    conn.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass
        finally:
            conn.close()

print("fake kubectl: unexpected " + " ".join(args), file=sys.stderr)
sys.exit(3)
"""

# A stand-in for sse-tui: writes what it got to RECORD_FILE, then optionally lingers.
FAKE_SSE_TUI = r"""
import json, os, signal, socket, sys, time

argv = sys.argv[1:]
record = {"argv": argv, "pid": os.getpid(), "signals": [], "answers": {}}

def value(flag):
    for i, a in enumerate(argv):
        if a == flag:
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None

# From sse-tui's side of things: do the endpoints it was given answer?
redis, sse = value("--redis"), value("--sse")
if os.environ.get("RECORDER_PROBE") and redis:
    with socket.create_connection(("127.0.0.1", int(redis.rsplit(":", 1)[1])), 2) as s:
        s.sendall(b"PING\r\n")
        record["answers"]["redis"] = s.recv(64).decode()
if os.environ.get("RECORDER_PROBE") and sse:
    with socket.create_connection(("127.0.0.1", int(sse.rsplit(":", 1)[1])), 2) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        record["answers"]["sse"] = s.recv(64).decode()
nats = value("--nats")
if os.environ.get("RECORDER_PROBE") and nats:
    with socket.create_connection(("127.0.0.1", int(nats.rsplit(":", 1)[1])), 2) as s:
        record["answers"]["nats"] = s.recv(64).decode()
if os.environ.get("RECORDER_READ_STDIN"):
    record["stdin"] = sys.stdin.readline()

path = os.environ["RECORD_FILE"]

def save():
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)

drain = {"until": None}

def on_signal(signum, frame):
    record["signals"].append(signal.Signals(signum).name)
    save()
    if os.environ.get("RECORDER_IGNORE_TERM"):
        return
    if os.environ.get("RECORDER_DRAIN"):  # like sse-tui: keep going a moment, then exit
        drain["until"] = drain["until"] or time.monotonic() + float(os.environ["RECORDER_DRAIN"])
        return
    sys.exit(0)

signal.signal(signal.SIGTERM, on_signal)
if os.environ.get("RECORDER_CATCH_INT"):  # like sse-tui's headless mode does
    signal.signal(signal.SIGINT, on_signal)
record["stdin_is_tty"] = os.isatty(0)
save()
linger = float(os.environ.get("RECORDER_LINGER", "0"))
deadline = time.monotonic() + linger
while time.monotonic() < deadline:
    if drain["until"] and time.monotonic() > drain["until"]:
        break
    time.sleep(0.05)
sys.exit(int(os.environ.get("RECORDER_EXIT", "0")))
"""

# `sse-tui cluster` with the recorder as sse-tui (TEST_SSE_TUI), or the real package.
LAUNCHER = r"""
import dataclasses, os, sys
from sse_tui.cluster import Launch, main

launch = Launch.from_env(os.environ)
if os.environ.get("TEST_SSE_TUI"):
    launch = dataclasses.replace(launch, sse_tui=(os.environ["TEST_SSE_TUI"],))
sys.exit(main(sys.argv[1:], launch=launch))
"""


def alive(pid: int) -> bool:
    """True while pid is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Harness:
    tmp: Path
    env: dict[str, str]
    workdir: Path
    launcher: Path
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def record_file(self) -> Path:
        return self.tmp / "record.json"

    def record(self) -> dict:
        return json.loads(self.record_file.read_text())

    def kubectl_calls(self) -> list[dict]:
        log = self.tmp / "kubectl.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def pf_pids(self) -> list[int]:
        pids = self.tmp / "pf.pids"
        return [int(x) for x in pids.read_text().split()] if pids.exists() else []

    def run(self, *args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.launcher), *args],
            cwd=self.workdir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(self.launcher), *args],
            cwd=self.workdir,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def all_children(self) -> list[int]:
        pids = self.pf_pids()
        if self.record_file.exists():
            pids.append(self.record()["pid"])
        return pids

    def assert_no_child_survives(self) -> None:
        wait_until(
            lambda: not any(alive(p) for p in self.all_children()),
            timeout=10,
            what=f"children {self.all_children()} to be gone",
        )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, source in (
        ("kubectl", FAKE_KUBECTL),
        ("sse-tui-recorder", FAKE_SSE_TUI),
        ("cluster", LAUNCHER),
    ):
        exe = bin_dir / name
        exe.write_text(f"#!{sys.executable}\n{textwrap.dedent(source)}")
        exe.chmod(0o755)
    for name in ("home", "work", "script"):
        (tmp_path / name).mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "KUBECTL", "SSE_TUI_VENV", "PYTHON", "STOP_GRACE")
        and not k.startswith(("FAKE_", "RUN_LOADTEST_", "RECORDER_"))
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        HOME=str(tmp_path / "home"),
        TEST_SSE_TUI=str(bin_dir / "sse-tui-recorder"),
        RUN_LOADTEST_PROG=PROG,
        RUN_LOADTEST_DIR=str(tmp_path / "script"),
        RUN_LOADTEST_SSE_TUI="/opt/loadtest/.venv/bin/sse-tui",
        RECORD_FILE=str(tmp_path / "record.json"),
        FAKE_KUBECTL_LOG=str(tmp_path / "kubectl.log"),
        FAKE_PF_PIDS=str(tmp_path / "pf.pids"),
        KUBECTL_TIMEOUT="2",
        PORT_FORWARD_TIMEOUT="10",
    )
    h = Harness(tmp=tmp_path, env=env, workdir=tmp_path / "work", launcher=bin_dir / "cluster")
    yield h
    # Whatever a failing test left behind: stop it, by pid.
    for proc in h.started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    for pid in h.all_children():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def with_origin_kubeconfig(h: Harness, where: Path | None = None) -> Path:
    kubeconfig = (where or h.workdir) / "kubeconfigs" / "origin.yaml"
    kubeconfig.parent.mkdir()
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    return kubeconfig


def understood(argv: list[str]) -> CliOptions:
    """What sse-tui makes of the argv it got: the same parser judges the script's argv."""
    return parse_args(argv)


def cli_message(args: list[str]) -> str:
    with pytest.raises(UsageError) as e:
        parse_args(args)
    return str(e.value)


def in_process(*args: str) -> int:
    """main() in this process, for the paths that end before sse-tui would run; a bug that
    gets that far fails on a missing executable instead of replacing pytest."""
    launch = Launch(prog=PROG, sse_tui=("/nonexistent/sse-tui-must-not-run",))
    return main(list(args), launch=launch, env={"PATH": os.defpath})


# --- help and bad options ----------------------------------------------------------------


@pytest.mark.parametrize("option", ["-h", "--help", "-help"])
def test_help_lists_the_original_options_and_defaults(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert in_process("-c", "0", option) == 0  # help stops the parse where it stands
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: {PROG} [OPTIONS]")
    for line in (
        "-m, --mode MODE",
        "(default: both)",
        "-r, --redis ADDR",
        "-s, --sse URL",
        "-c, --conversations N",
        "(default: 5)",
        "-t, --tokens N",
        "-d, --delay MS",
        "(default: 50)",
        "--duration DURATION",
        "(default: 30s)",
        "-h, --help",
        "--port-forward",
        "--install-only",
        "--demo",
        f"{PROG} -c 50 -t 100 --duration 5m",
    ):
        assert line in out, line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c"], "option -c needs a value"),
        (["-r"], "option -r needs a value"),
        (["--sse="], "option --sse needs a non-empty value"),
        (["-mode", ""], "option -mode needs a non-empty value"),
        (["--port-forward=yes"], "--port-forward takes no value"),
        (["--port-forward", "--demo"], "--port-forward and --demo exclude each other"),
        (["--port-forward", "-demo=true"], "--port-forward and --demo exclude each other"),
    ],
)
def test_malformed_options_exit_2_with_usage(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert in_process(*args) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(f"{PROG}: {message}")
    assert "Usage:" in err


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "0"],  # the script used to accept it, and sse-tui then refused it
        ["--conversations", "many"],
        ["-t", "-5"],
        ["-d", "fast"],
        ["-m", "sideways"],
        ["--mode=upside"],
        ["-conversations=0"],
        ["--duration", "forever"],
        ["-r", "h:1", "--json", "/nonexistent-dir/summary.json"],  # sse-tui's own flags too
        ["--config", "/nonexistent-dir/profile.toml"],
        ["--bogus"],
    ],
)
def test_values_are_judged_by_the_cli_with_its_own_message(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert in_process(*args) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"{PROG}: {cli_message(args)}"
    assert "Usage:" in err


def test_a_bad_value_starts_no_port_forward(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run("--port-forward", "-c", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"{PROG}: {cli_message(['-c', '0'])}"
    assert harness.kubectl_calls() == []
    assert not harness.record_file.exists()


def test_a_delay_with_a_unit_is_accepted_as_by_the_cli(harness: Harness) -> None:
    result = harness.run("-d", "20ms", "-r", "h:1", "-s", "http://h:2")
    assert result.returncode == 0, result.stderr
    assert understood(harness.record()["argv"]).settings.delay_ms == 20


@pytest.mark.parametrize("name", ["KUBECTL_TIMEOUT", "PORT_FORWARD_TIMEOUT", "STOP_GRACE"])
def test_a_bad_time_limit_in_the_environment_is_one_line(harness: Harness, name: str) -> None:
    result = harness.run("-r", "h:1", "-s", "http://h:2", **{name: "soon"})
    assert result.returncode == 2
    default = {"KUBECTL_TIMEOUT": 5, "PORT_FORWARD_TIMEOUT": 20, "STOP_GRACE": 15}[name]
    assert result.stderr == (
        f"{PROG}: {name}='soon' is not a number of seconds; e.g. {name}={default}\n"
    )
    assert not harness.record_file.exists()


def test_install_only_reports_and_runs_nothing(harness: Harness) -> None:
    result = harness.run("--install-only", "-c", "2")
    assert result.returncode == 0, result.stderr
    assert "sse-tui is installed: /opt/loadtest/.venv/bin/sse-tui" in result.stderr
    assert result.stdout == ""
    assert not harness.record_file.exists()


def test_the_split_of_the_command_line() -> None:
    opts = parse_script_args(
        ["-c", "3", "--no-tui", "-token-delay=-1", "--port-forward", "-c", "4", "--", "-c", "x"]
    )
    assert opts.port_forward and not opts.install_only and not opts.help
    assert opts.given == {"conversations": ("-c", "4"), "delay": ("-token-delay", "-1")}
    assert opts.passthrough == ["--no-tui", "-c", "x"]
    assert opts.sse_tui_argv({"redis": "a:1", "sse": "http://b:2"}) == [
        "-c=4", "-token-delay=-1", "--redis", "a:1", "--sse", "http://b:2", "--no-tui", "-c", "x"
    ]


def test_launch_from_the_scripts_environment() -> None:
    launch = Launch.from_env(
        {"RUN_LOADTEST_PROG": "./run-loadtest.sh", "RUN_LOADTEST_DIR": "/opt/x",
         "RUN_LOADTEST_SSE_TUI": "/opt/x/.venv/bin/sse-tui"}
    )
    assert (launch.prog, launch.script_dir, launch.installed, launch.who) == (
        "./run-loadtest.sh", Path("/opt/x"), "/opt/x/.venv/bin/sse-tui", "this script"
    )
    alone = Launch.from_env({})
    assert (alone.prog, alone.script_dir, alone.who) == ("sse-tui cluster", None, "sse-tui")


# --- options reach sse-tui -----------------------------------------------------------------


def test_explicit_options_and_passthrough_reach_sse_tui(harness: Harness) -> None:
    result = harness.run(
        "-m", "both", "-r", "redis.example:6379", "-s", "http://sse.example:80",
        "-c", "3", "-t", "7", "-d", "20", "--duration", "1m30s",
        "--no-tui", "--json", "-", "--run-id", "abc",
    )
    assert result.returncode == 0, result.stderr
    argv = harness.record()["argv"]
    # Spelled as typed (so a message names the flag the way the operator wrote it), and
    # bound with `=` (so a value that starts with a dash stays a value).
    assert argv == [
        "-m=both", "-c=3", "-t=7", "-d=20", "--duration=1m30s",
        "-r=redis.example:6379", "-s=http://sse.example:80",
        "--no-tui", "--json", "-", "--run-id", "abc",
    ]
    s = understood(argv).settings
    assert (s.mode, s.redis, s.sse, s.conversations, s.tokens, s.delay_ms, s.duration_s) == (
        "both", "redis.example:6379", "http://sse.example:80", 3, 7, 20, 90
    )
    assert harness.kubectl_calls() == []  # nothing left to detect
    assert result.stdout == ""


def test_go_style_and_equals_spellings_are_understood(harness: Harness) -> None:
    result = harness.run(
        "-mode", "consumer", "-sse=http://sse.example:8080", "-conversations=4",
        "-tokens", "9", "-token-delay", "0", "-duration=5s", "--delay=1",
    )
    assert result.returncode == 0, result.stderr
    argv = harness.record()["argv"]
    s = understood(argv).settings
    assert (s.mode, s.sse, s.conversations, s.tokens, s.duration_s) == (
        "consumer", "http://sse.example:8080", 4, 9, 5
    )
    assert s.delay_ms == 1  # the last one wins, as with any flag parser
    assert not any(a.startswith(("--redis", "-r")) for a in argv)  # consumer: no Redis needed


def test_defaults_are_left_to_sse_tui_so_a_config_file_is_not_overridden(harness: Harness) -> None:
    profile = str(REPO / "config" / "smoke.toml")
    result = harness.run("--config", profile)
    assert result.returncode == 0, result.stderr
    assert harness.record()["argv"] == ["--config", profile]
    assert harness.kubectl_calls() == []


def test_everything_after_double_dash_goes_through_unread(harness: Harness) -> None:
    result = harness.run("-r", "h:1", "-s", "http://h:2", "--", "--no-tui", "-c", "7")
    assert result.returncode == 0, result.stderr
    assert harness.record()["argv"] == ["-r=h:1", "-s=http://h:2", "--no-tui", "-c", "7"]


def test_sse_tui_help_after_double_dash_is_sse_tuis(harness: Harness) -> None:
    result = harness.run("--", "--help")
    assert result.returncode == 0, result.stderr
    assert "--transport" in result.stdout  # a flag only sse-tui's own help lists
    assert not harness.record_file.exists()


def test_demo_and_subcommands_skip_detection(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    assert harness.run("--demo", "-c", "2").returncode == 0
    assert harness.record()["argv"] == ["-c=2", "--demo"]
    assert harness.run("sandbox", "--help").returncode == 0
    assert harness.record()["argv"] == ["sandbox", "--help"]
    assert harness.run("merge", "a.json", "-c", "b.json").returncode == 0
    assert harness.record()["argv"] == ["merge", "a.json", "-c", "b.json"]
    assert harness.kubectl_calls() == []


def test_exit_status_of_sse_tui_is_ours(harness: Harness) -> None:
    result = harness.run("-r", "h:1", "-s", "http://h:2", RECORDER_EXIT="3")
    assert result.returncode == 3


def test_plain_run_of_the_real_cli_keeps_stdout_for_the_json(sandbox: Sandbox) -> None:
    """The real entry point (`sse-tui cluster`), sse-tui in the same process."""
    result = subprocess.run(
        [str(SSE_TUI), "cluster", "-r", sandbox.redis_address, "-s", sandbox.sse_url,
         "-c", "2", "-t", "3", "-d", "1", "--duration", "0", "--no-tui", "--json", "-"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("RUN_LOADTEST_")},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tokens_published"] == summary["tokens_received"] == 6
    assert "[INFO] Starting load test: mode=both" in result.stderr
    assert "conversations=2 tokens=3 delay=1ms duration=0s" in result.stderr


# --- endpoint detection ---------------------------------------------------------------------


def test_detected_load_balancer_ips_reach_sse_tui(harness: Harness) -> None:
    kubeconfig = with_origin_kubeconfig(harness)
    result = harness.run("-c", "2", FAKE_GET="ip")
    assert result.returncode == 0, result.stderr
    s = understood(harness.record()["argv"]).settings
    assert (s.redis, s.sse, s.conversations) == ("10.1.2.3:6379", "http://10.4.5.6:80", 2)
    calls = harness.kubectl_calls()
    assert [c["argv"][c["argv"].index("get") : c["argv"].index("get") + 5] for c in calls] == [
        ["get", "svc", "redis", "-n", "redis-system"],
        ["get", "svc", "sse-adapter", "-n", "sse-system"],
    ]
    for call in calls:
        assert call["kubeconfig"] == str(kubeconfig)
        assert "--request-timeout=2s" in call["argv"]
        assert any("{.status.loadBalancer.ingress[0].ip}" in a for a in call["argv"])
    assert f"Using kubeconfig: {kubeconfig}" in result.stderr
    assert "Found Redis at 10.1.2.3:6379" in result.stderr
    assert "Found SSE adapter at http://10.4.5.6:80" in result.stderr
    assert (
        "Starting load test: mode=both redis=10.1.2.3:6379 sse=http://10.4.5.6:80 "
        "conversations=2 tokens=50 delay=50ms duration=30s"
    ) in result.stderr
    assert result.stdout == ""  # stdout belongs to sse-tui (--json -)


def test_bare_nats_is_detected_like_the_other_two(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run("-c", "2", "--nats", "--no-tui", FAKE_GET="ip")
    assert result.returncode == 0, result.stderr
    s = understood(harness.record()["argv"]).settings
    assert (s.redis, s.sse, s.nats) == ("10.1.2.3:6379", "http://10.4.5.6:80",
                                        "nats://10.7.8.9:4222")
    looked_up = [c["argv"][c["argv"].index("get") + 2 : c["argv"].index("get") + 5]
                 for c in harness.kubectl_calls()]
    assert ["nats", "-n", "nats-system"] in looked_up
    assert "Found NATS at nats://10.7.8.9:4222" in result.stderr
    assert "nats=nats://10.7.8.9:4222" in result.stderr


def test_nats_with_a_value_or_not_at_all_is_not_looked_up(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    assert harness.run("--nats", "nats://h:4222", FAKE_GET="ip").returncode == 0
    assert understood(harness.record()["argv"]).settings.nats == "nats://h:4222"
    assert harness.run("-c", "1", FAKE_GET="ip").returncode == 0
    assert understood(harness.record()["argv"]).settings.nats == ""
    assert not any("nats" in c["argv"] for c in harness.kubectl_calls())


def test_missing_nats_falls_back_with_its_port_forward_hint(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run("--nats", FAKE_GET="empty")
    assert result.returncode == 0, result.stderr
    assert understood(harness.record()["argv"]).settings.nats == "nats://localhost:4222"
    assert "kubectl port-forward -n nats-system svc/nats 4222:4222" in result.stderr


def test_the_split_of_a_bare_nats() -> None:
    assert parse_script_args(["--nats"]).nats_wanted
    bare = parse_script_args(["--nats", "-c", "3"])
    assert bare.nats_wanted and bare.given["conversations"] == ("-c", "3")
    given = parse_script_args(["-nats=nats://h:1"])
    assert not given.nats_wanted and given.sse_tui_argv() == ["-nats=nats://h:1"]


def test_origin_yaml_next_to_the_script_is_used_and_the_current_directorys_first(
    harness: Harness,
) -> None:
    beside = with_origin_kubeconfig(harness, harness.tmp / "script")
    assert harness.run(KUBECONFIG="/elsewhere.yaml").returncode == 0
    assert {c["kubeconfig"] for c in harness.kubectl_calls()} == {str(beside)}
    here = with_origin_kubeconfig(harness)
    (harness.tmp / "kubectl.log").unlink()
    assert harness.run().returncode == 0
    assert {c["kubeconfig"] for c in harness.kubectl_calls()} == {str(here)}


def test_kubeconfig_env_is_used_without_origin_yaml(harness: Harness) -> None:
    custom = harness.tmp / "elsewhere.yaml"
    custom.write_text("apiVersion: v1\nkind: Config\n")
    result = harness.run(KUBECONFIG=str(custom), FAKE_GET="ip")
    assert result.returncode == 0, result.stderr
    assert {c["kubeconfig"] for c in harness.kubectl_calls()} == {str(custom)}
    assert f"Using kubeconfig: $KUBECONFIG ({custom})" in result.stderr
    assert understood(harness.record()["argv"]).settings.redis == "10.1.2.3:6379"


def test_home_kube_config_is_the_last_resort(harness: Harness) -> None:
    (harness.tmp / "home" / ".kube").mkdir()
    (harness.tmp / "home" / ".kube" / "config").write_text("apiVersion: v1\n")
    result = harness.run(FAKE_GET="ip")
    assert result.returncode == 0, result.stderr
    assert "Using kubeconfig: ~/.kube/config (current context)" in result.stderr
    assert {c["kubeconfig"] for c in harness.kubectl_calls()} == {None}  # kubectl's default


def test_load_balancer_hostname_is_used_when_there_is_no_ip(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    assert harness.run(FAKE_GET="hostname").returncode == 0
    s = understood(harness.record()["argv"]).settings
    assert s.redis == "redis.lb.example.test:6379"
    assert s.sse == "http://sse-adapter.lb.example.test:80"


def test_producer_mode_only_looks_up_redis(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    assert harness.run("-m", "producer", FAKE_GET="ip").returncode == 0
    argv = harness.record()["argv"]
    assert understood(argv).settings.redis == "10.1.2.3:6379"
    assert "--sse" not in argv
    calls = harness.kubectl_calls()
    assert len(calls) == 1
    assert "redis" in calls[0]["argv"]


HINT_REDIS = "kubectl port-forward -n redis-system svc/redis 6379:6379"
HINT_SSE = "kubectl port-forward -n sse-system svc/sse-adapter 8080:80"


@pytest.mark.parametrize("answer", ["empty", "notfound"])
def test_missing_ips_fall_back_to_localhost_with_the_port_forward_hint(
    harness: Harness, answer: str
) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run(FAKE_GET=answer)
    assert result.returncode == 0, result.stderr
    s = understood(harness.record()["argv"]).settings
    assert (s.redis, s.sse) == ("localhost:6379", "http://localhost:8080")
    lines = result.stderr.splitlines()
    assert (
        "[WARN] Redis LoadBalancer address not available; using localhost:6379. Port-forward it:"
    ) in lines
    assert f"  {HINT_REDIS}" in lines
    assert f"  {HINT_SSE}" in lines
    assert f"  (or let this script do it: {PROG} --port-forward)" in lines
    if answer == "notfound":
        assert (
            '[WARN] kubectl could not read svc/redis in redis-system: Error from server '
            '(NotFound): services "redis" not found'
        ) in lines


def test_unreachable_cluster_is_reported_once_and_falls_back(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run(FAKE_GET="unreachable")
    assert result.returncode == 0, result.stderr
    assert (
        "The cluster did not answer within 2s (Unable to connect to the server: "
        "dial tcp 10.9.9.9:6443: i/o timeout)"
    ) in result.stderr
    assert len(harness.kubectl_calls()) == 1  # no second wait for a cluster that is down
    assert understood(harness.record()["argv"]).settings.redis == "localhost:6379"
    assert HINT_SSE in result.stderr


def test_hanging_cluster_is_bounded_by_the_timeout(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    started = time.monotonic()
    result = harness.run(FAKE_GET="hang", KUBECTL_TIMEOUT="1", timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 15, elapsed
    assert "did not answer within 1s" in result.stderr
    assert understood(harness.record()["argv"]).settings.sse == "http://localhost:8080"
    assert len(harness.kubectl_calls()) == 1
    harness.assert_no_child_survives()


def test_no_kubeconfig_means_localhost_without_asking_kubectl(harness: Harness) -> None:
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert harness.kubectl_calls() == []
    assert "No kubeconfig found" in result.stderr
    assert HINT_REDIS in result.stderr
    assert understood(harness.record()["argv"]).settings.redis == "localhost:6379"


def test_missing_kubectl_falls_back_with_a_clear_message(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    missing = str(harness.tmp / "no-such-kubectl")
    result = harness.run(KUBECTL=missing)
    assert result.returncode == 0, result.stderr
    assert f"kubectl not found ({missing}): cannot auto-detect cluster addresses." in (
        result.stderr
    )
    assert understood(harness.record()["argv"]).settings.sse == "http://localhost:8080"


def test_a_kubectl_that_cannot_run_is_a_warning_not_a_traceback(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    broken = harness.tmp / "broken-kubectl"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    result = harness.run("-m", "producer", KUBECTL=str(broken))
    assert result.returncode == 0, result.stderr
    assert f"kubectl could not read svc/redis in redis-system: cannot run {broken}" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert understood(harness.record()["argv"]).settings.redis == "localhost:6379"


# --- --port-forward -------------------------------------------------------------------------


def forwarded_ports(h: Harness) -> dict[str, tuple[str, int, int]]:
    """service -> (namespace, local port, remote port), from the fake kubectl's log."""
    out = {}
    for call in h.kubectl_calls():
        argv = call["argv"]
        if argv[:1] != ["port-forward"]:
            continue
        assert argv[argv.index("--address") + 1] == "127.0.0.1"
        local, remote = argv[-1].split(":")
        out[argv[-2].removeprefix("svc/")] = (argv[argv.index("-n") + 1], int(local), int(remote))
    return out


def test_port_forward_runs_sse_tui_through_its_tunnels_and_stops_them(harness: Harness) -> None:
    kubeconfig = with_origin_kubeconfig(harness)
    result = harness.run("--port-forward", "-c", "2", "--no-tui", RECORDER_PROBE="1")
    assert result.returncode == 0, result.stderr
    forwards = forwarded_ports(harness)
    assert set(forwards) == {"redis", "sse-adapter"}
    ns, redis_port, remote = forwards["redis"]
    assert (ns, remote) == ("redis-system", 6379)
    ns, sse_port, remote = forwards["sse-adapter"]
    assert (ns, remote) == ("sse-system", 80)
    assert {c["kubeconfig"] for c in harness.kubectl_calls()} == {str(kubeconfig)}
    record = harness.record()
    assert record["argv"] == [
        "-c=2",
        "--redis",
        f"127.0.0.1:{redis_port}",
        "--sse",
        f"http://127.0.0.1:{sse_port}",
        "--no-tui",
    ]
    # The tunnels answered while sse-tui ran...
    assert record["answers"]["redis"].startswith("+PONG")
    assert record["answers"]["sse"].startswith("HTTP/1.0")
    # ...and are gone now.
    assert len(harness.pf_pids()) == 2
    harness.assert_no_child_survives()
    assert f"127.0.0.1:{redis_port} answers for redis-system/svc/redis" in result.stderr
    assert "Stopped the port-forwards" in result.stderr
    assert result.stdout == ""


def test_port_forward_with_nats_forwards_it_too(harness: Harness) -> None:
    result = harness.run("--port-forward", "--nats", "-c", "1", RECORDER_PROBE="1")
    assert result.returncode == 0, result.stderr
    forwards = forwarded_ports(harness)
    assert set(forwards) == {"redis", "sse-adapter", "nats"}
    ns, nats_port, remote = forwards["nats"]
    assert (ns, remote) == ("nats-system", 4222)
    record = harness.record()
    assert understood(record["argv"]).settings.nats == f"nats://127.0.0.1:{nats_port}"
    assert record["answers"]["nats"].startswith("INFO")  # the tunnel answered as NATS does
    assert "answers for nats-system/svc/nats" in result.stderr
    harness.assert_no_child_survives()


def test_port_forward_only_forwards_what_the_run_needs(harness: Harness) -> None:
    result = harness.run("--port-forward", "-m", "consumer")
    assert result.returncode == 0, result.stderr
    assert set(forwarded_ports(harness)) == {"sse-adapter"}
    assert "--redis" not in harness.record()["argv"]
    assert "No kubeconfig found; kubectl uses its defaults." in result.stderr
    harness.assert_no_child_survives()


def test_port_forward_with_every_address_given_forwards_nothing(harness: Harness) -> None:
    result = harness.run("--port-forward", "-r", "h:1", "-s", "http://h:2")
    assert result.returncode == 0, result.stderr
    assert forwarded_ports(harness) == {}
    assert "nothing to forward" in result.stderr
    assert harness.record()["argv"] == ["-r=h:1", "-s=http://h:2"]


@pytest.mark.parametrize(
    ("option", "profile", "forwarded"),
    [
        ("--config", "consumer-only.toml", {"sse-adapter"}),
        ("--config=", "producer-only.toml", {"redis"}),
        ("--config", "smoke.toml", {"redis", "sse-adapter"}),
    ],
)
def test_port_forward_follows_the_mode_of_a_config_file(
    harness: Harness, option: str, profile: str, forwarded: set[str]
) -> None:
    path = str(REPO / "config" / profile)
    args = [option + path] if option.endswith("=") else [option, path]
    result = harness.run("--port-forward", *args)
    assert result.returncode == 0, result.stderr
    assert set(forwarded_ports(harness)) == forwarded
    argv = harness.record()["argv"]
    assert argv[-len(args) :] == args
    assert "--mode" not in argv  # the file's mode stands
    assert ("--redis" in argv) == ("redis" in forwarded)
    harness.assert_no_child_survives()


def test_port_forward_keeps_stdin_for_sse_tui(harness: Harness) -> None:
    result = subprocess.run(
        [str(harness.launcher), "--port-forward", "-m", "producer"],
        cwd=harness.workdir,
        env={**harness.env, "RECORDER_READ_STDIN": "1"},
        input="typed by the operator\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert harness.record()["stdin"] == "typed by the operator\n"
    harness.assert_no_child_survives()


def test_port_forward_with_stdin_closed(harness: Harness) -> None:
    result = subprocess.run(
        ["bash", "-c", 'exec "$0" --port-forward <&-', str(harness.launcher)],
        cwd=harness.workdir,
        env={**harness.env, "RECORDER_READ_STDIN": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    record = harness.record()
    assert record["argv"][:1] == ["--redis"]
    assert record["stdin"] == ""  # /dev/null: end of file at once
    harness.assert_no_child_survives()


def test_port_forward_passes_on_the_exit_status(harness: Harness) -> None:
    result = harness.run("--port-forward", RECORDER_EXIT="4")
    assert result.returncode == 4
    harness.assert_no_child_survives()


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name
)
def test_signal_stops_sse_tui_and_then_the_port_forwards(
    harness: Harness, sig: signal.Signals
) -> None:
    proc = harness.start("--port-forward", RECORDER_LINGER="60", RECORDER_DRAIN="1")
    wait_until(harness.record_file.exists, timeout=20, what="sse-tui to start")
    sse_tui_pid = harness.record()["pid"]
    assert alive(sse_tui_pid)
    pf_pids = harness.pf_pids()
    assert len(pf_pids) == 2
    proc.send_signal(sig)
    # sse-tui was asked to stop (SIGTERM: it drains and writes its summary), not killed...
    wait_until(lambda: harness.record()["signals"] == ["SIGTERM"], timeout=10,
               what="sse-tui to get SIGTERM")
    # ...and its tunnels stay up while it drains.
    assert all(alive(p) for p in pf_pids)
    proc.wait(20)
    assert proc.returncode == 0  # the recorder exits 0 after its summary, like sse-tui
    harness.assert_no_child_survives()


def test_sse_tui_that_ignores_the_stop_is_killed_after_the_grace(harness: Harness) -> None:
    proc = harness.start(
        "--port-forward", RECORDER_LINGER="60", RECORDER_IGNORE_TERM="1", STOP_GRACE="1"
    )
    wait_until(harness.record_file.exists, timeout=20, what="sse-tui to start")
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    assert proc.returncode == 128 + signal.SIGKILL
    assert proc.stderr is not None
    assert "sse-tui did not stop within 1s after SIGTERM; killing it." in proc.stderr.read()
    harness.assert_no_child_survives()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_while_waiting_for_the_tunnels_stops_them(
    harness: Harness, sig: signal.Signals
) -> None:
    proc = harness.start("--port-forward", FAKE_PF="dead", PORT_FORWARD_TIMEOUT="30")
    wait_until(lambda: len(harness.pf_pids()) == 1, timeout=20, what="the first port-forward")
    proc.send_signal(sig)
    proc.wait(20)
    assert proc.returncode == 128 + sig
    assert not harness.record_file.exists()
    harness.assert_no_child_survives()


def test_port_forward_that_fails_is_reported_and_nothing_runs(harness: Harness) -> None:
    result = harness.run("--port-forward", FAKE_PF="fail")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "[ERROR] kubectl port-forward for redis-system/svc/redis exited:" in lines
    assert '  error: services "redis" not found' in lines
    assert not harness.record_file.exists()
    harness.assert_no_child_survives()


def test_port_forward_that_never_answers_times_out(harness: Harness) -> None:
    started = time.monotonic()
    result = harness.run("--port-forward", FAKE_PF="dead", PORT_FORWARD_TIMEOUT="1")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert "redis-system/svc/redis did not answer on 127.0.0.1:" in result.stderr
    assert "within 1s." in result.stderr
    assert not harness.record_file.exists()
    harness.assert_no_child_survives()


def test_port_forward_without_kubectl_is_a_clear_error(harness: Harness) -> None:
    result = harness.run("--port-forward", KUBECTL=str(harness.tmp / "no-such-kubectl"))
    assert result.returncode == 1
    assert "--port-forward needs kubectl, and '" in result.stderr
    assert "' is not on PATH (install kubectl, or set KUBECTL=/path/to/kubectl)" in result.stderr
    assert not harness.record_file.exists()


def test_port_forward_leaves_the_terminal_to_sse_tui_and_ctrl_c_stops_it_once(
    harness: Harness,
) -> None:
    """On a terminal, Ctrl-C signals the whole foreground process group. sse-tui catches it
    itself (a second stop signal would make it skip the drain), so we must not forward
    another one; the tunnels, in their own sessions, stay up until sse-tui is done."""
    try:
        controller, terminal = pty.openpty()
    except OSError as e:
        pytest.skip(f"no pseudo-terminal available here: {e}")
    try:
        proc = subprocess.Popen(
            [str(harness.launcher), "--port-forward"],
            cwd=harness.workdir,
            env={
                **harness.env,
                "RECORDER_LINGER": "60",
                "RECORDER_CATCH_INT": "1",
                "RECORDER_DRAIN": "1",
            },
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        harness.started.append(proc)
        wait_until(harness.record_file.exists, timeout=20, what="sse-tui to start")
        assert harness.record()["stdin_is_tty"] is True
        pf_pids = harness.pf_pids()
        # The recorder catches SIGINT once it has written its record: the check below
        # looks at the same /proc field the command does.
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        wait_until(lambda: harness.record()["signals"] == ["SIGINT"], timeout=10,
                   what="sse-tui's SIGINT")
        assert all(alive(p) for p in pf_pids)  # draining: the tunnels are still there
        proc.wait(20)
    finally:
        os.close(controller)
        os.close(terminal)
    assert harness.record()["signals"] == ["SIGINT"]
    assert proc.returncode == 0
    assert len(pf_pids) == 2
    harness.assert_no_child_survives()


@pytest.mark.timeout(120)
def test_port_forward_end_to_end_with_the_real_cli_through_tunnels(harness: Harness) -> None:
    """The real sse-tui (a child: `python -P -m sse_tui`) against the real sandbox, through
    `kubectl port-forward` stand-ins that relay bytes: published == received, nothing
    missing, JSON alone on stdout."""
    sandbox = subprocess.Popen(
        [str(SSE_TUI), "sandbox"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        addresses: dict[str, str] = {}
        deadline = time.monotonic() + 30
        assert sandbox.stdout is not None
        while len(addresses) < 2 and time.monotonic() < deadline:
            line = sandbox.stdout.readline()
            if not line:
                break
            words = line.split()
            if words[:1] == ["redis:"]:
                addresses["redis"] = words[1]
            elif words[:1] == ["SSE:"]:
                addresses["sse_adapter"] = words[1].removeprefix("http://")
        assert len(addresses) == 2, f"sandbox addresses not printed: {addresses}"
        result = harness.run(
            "--port-forward", "-c", "2", "-t", "5", "-d", "5", "--duration", "0",
            "--no-tui", "--json", "-",
            timeout=90,
            TEST_SSE_TUI="",  # the real one
            FAKE_PF="proxy",
            FAKE_PF_TARGET_redis=addresses["redis"],
            FAKE_PF_TARGET_sse_adapter=addresses["sse_adapter"],
        )
    finally:
        os.killpg(sandbox.pid, signal.SIGTERM)
        try:
            sandbox.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(sandbox.pid, signal.SIGKILL)
            sandbox.wait(5)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tokens_published"] == summary["tokens_received"] == 10
    # docs/kubernetes.md pulls the JSON out of a pod's log, where stderr and stdout mix,
    # with sed -n '/^{$/,/^}$/p': the same cut here.
    lines = (result.stderr + result.stdout).splitlines()
    start = lines.index("{")
    assert json.loads("\n".join(lines[start : lines.index("}", start) + 1])) == summary
    assert summary["tokens_missing"] == 0
    forwards = forwarded_ports(harness)
    assert summary["settings"]["sse"] == f"http://127.0.0.1:{forwards['sse-adapter'][1]}"
    harness.assert_no_child_survives()




# --- fleet: `./run-loadtest.sh [--port-forward] fleet NAME` (docs/fleet.md) ----------------


def test_port_forward_fleet_forwards_redis_alone_to_the_monitor(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run("--port-forward", "fleet", "f1", "--expect", "3", "--no-tui",
                         RECORDER_PROBE="1")
    assert result.returncode == 0, result.stderr
    forwards = forwarded_ports(harness)
    assert set(forwards) == {"redis"}  # the monitor reads Redis and nothing else
    record = harness.record()
    assert record["argv"] == ["fleet", "f1", "--expect", "3", "--no-tui",
                              "--redis", f"127.0.0.1:{forwards['redis'][1]}"]
    assert record["answers"]["redis"].startswith("+PONG")  # through the tunnel
    harness.assert_no_child_survives()


def test_fleet_finds_the_clusters_redis_or_takes_the_one_given(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    assert harness.run("fleet", "f1", FAKE_GET="ip").returncode == 0
    assert harness.record()["argv"] == ["fleet", "f1", "--redis", "10.1.2.3:6379"]
    assert [c["argv"][c["argv"].index("get") + 2] for c in harness.kubectl_calls()] == ["redis"]
    calls = len(harness.kubectl_calls())
    assert harness.run("-r", "h:1", "fleet", "f1", FAKE_GET="ip").returncode == 0
    assert harness.record()["argv"] == ["fleet", "f1", "--redis", "h:1"]
    assert len(harness.kubectl_calls()) == calls  # given: nothing looked up


@pytest.mark.parametrize("args,says", [
    (["--port-forward", "-c", "3", "fleet", "f1"], "not -c"),
    (["--port-forward", "fleet", "bad name"], "invalid fleet name"),
    (["--port-forward", "fleet", "f1", "--expect", "0"], "--expect"),
])
def test_bad_fleet_options_start_nothing(harness: Harness, args: list[str], says: str) -> None:
    result = harness.run(*args)
    assert result.returncode == 2
    assert says in result.stderr
    assert harness.kubectl_calls() == [] and not harness.record_file.exists()
