"""run-loadtest.sh, driven with a fake `kubectl` on PATH and a fake `sse-tui` that records argv.

These tests do not depend on the real CLI: SSE_TUI_BIN points the script at a recorder.
Every network touch is 127.0.0.1, every wait is bounded (`wait_for`).
The one slow test (first-run bootstrap, ~30-60 s of pip) is at the end and says so.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "run-loadtest.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


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
        print({"redis": "10.1.2.3", "sse-adapter": "10.4.5.6"}[svc] + " ", end="")
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
    while True:
        conn, _ = srv.accept()
        conn.settimeout(2)
        try:
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
    return argv[argv.index(flag) + 1] if flag in argv else None

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


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """The one bounded wait of this module."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def alive(pid: int) -> bool:
    """True while pid is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return False


@dataclass
class Harness:
    tmp: Path
    env: dict[str, str]
    workdir: Path
    started: list[subprocess.Popen] = field(default_factory=list)

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
            [str(SCRIPT), *args],
            cwd=self.workdir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(SCRIPT), *args],
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
        wait_for(
            lambda: not any(alive(p) for p in self.all_children()),
            10,
            f"children {self.all_children()} to be gone",
        )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, source in (("kubectl", FAKE_KUBECTL), ("sse-tui-recorder", FAKE_SSE_TUI)):
        exe = bin_dir / name
        exe.write_text(f"#!{sys.executable}\n{textwrap.dedent(source)}")
        exe.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "KUBECTL", "SSE_TUI_VENV", "PYTHON")
        and not k.startswith("FAKE_")
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        HOME=str(home),
        SSE_TUI_BIN=str(bin_dir / "sse-tui-recorder"),
        RECORD_FILE=str(tmp_path / "record.json"),
        FAKE_KUBECTL_LOG=str(tmp_path / "kubectl.log"),
        FAKE_PF_PIDS=str(tmp_path / "pf.pids"),
        KUBECTL_TIMEOUT="2",
        PORT_FORWARD_TIMEOUT="10",
    )
    h = Harness(tmp=tmp_path, env=env, workdir=workdir)
    yield h
    # Whatever a failing test left behind: stop it, by pid.
    for proc in h.started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    for pid in h.all_children():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def with_origin_kubeconfig(h: Harness) -> Path:
    kubeconfig = h.workdir / "kubeconfigs" / "origin.yaml"
    kubeconfig.parent.mkdir()
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    return kubeconfig


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# --- help and bad options ----------------------------------------------------------------


@pytest.mark.parametrize("option", ["-h", "--help"])
def test_help_lists_the_original_options_and_defaults(harness: Harness, option: str) -> None:
    result = harness.run(option)
    assert result.returncode == 0
    out = result.stdout
    for line in (
        "-m, --mode MODE",
        "(default: both)",
        "-r, --redis ADDR",
        "-s, --sse URL",
        "-c, --conversations N",
        "(default: 5)",
        "-t, --tokens N",
        "-d, --delay MS",
        "--duration DURATION",
        "(default: 30s)",
        "-h, --help",
        "--port-forward",
        "--demo",
    ):
        assert line in out, line
    assert "(default: 50)" in out
    assert not harness.record_file.exists(), "--help must not start sse-tui"


@pytest.mark.parametrize(
    "args",
    [
        ["-c"],
        ["--conversations", "many"],
        ["-t", "-5"],
        ["-d", "fast"],
        ["-m", "sideways"],
        ["--mode=upside"],
        ["--duration", "forever"],
        ["-r"],
        ["--sse="],
        ["--port-forward", "--demo"],
        ["--port-forward=yes"],
    ],
)
def test_bad_options_exit_nonzero_with_usage(harness: Harness, args: list[str]) -> None:
    result = harness.run(*args)
    assert result.returncode == 2
    first_line = result.stderr.splitlines()[0]
    assert first_line.startswith(str(SCRIPT)) or "run-loadtest.sh" in first_line
    assert "Usage:" in result.stderr
    assert not harness.record_file.exists()


# --- options reach sse-tui -----------------------------------------------------------------


def test_explicit_options_and_passthrough_reach_sse_tui(harness: Harness) -> None:
    result = harness.run(
        "-m",
        "both",
        "-r",
        "redis.example:6379",
        "-s",
        "http://sse.example:80",
        "-c",
        "3",
        "-t",
        "7",
        "-d",
        "20",
        "--duration",
        "1m30s",
        "--no-tui",
        "--json",
        "-",
        "--run-id",
        "abc",
    )
    assert result.returncode == 0, result.stderr
    assert harness.record()["argv"] == [
        "--mode",
        "both",
        "--conversations",
        "3",
        "--tokens",
        "7",
        "--delay",
        "20",
        "--duration",
        "1m30s",
        "--redis",
        "redis.example:6379",
        "--sse",
        "http://sse.example:80",
        "--no-tui",
        "--json",
        "-",
        "--run-id",
        "abc",
    ]
    assert harness.kubectl_calls() == []  # nothing left to detect


def test_go_style_and_equals_spellings_are_understood(harness: Harness) -> None:
    result = harness.run(
        "-mode",
        "consumer",
        "-sse=http://sse.example:8080",
        "-conversations=4",
        "-tokens",
        "9",
        "-token-delay",
        "0",
        "-duration=5s",
        "--delay=1",
    )
    assert result.returncode == 0, result.stderr
    argv = harness.record()["argv"]
    assert flag(argv, "--mode") == "consumer"
    assert flag(argv, "--sse") == "http://sse.example:8080"
    assert flag(argv, "--conversations") == "4"
    assert flag(argv, "--tokens") == "9"
    assert flag(argv, "--delay") == "1"  # the last one wins, as with any flag parser
    assert flag(argv, "--duration") == "5s"
    assert "--redis" not in argv  # consumer mode needs no Redis: none detected or invented


def test_defaults_are_left_to_sse_tui_so_a_config_file_is_not_overridden(harness: Harness) -> None:
    result = harness.run("--config", "config/smoke.toml")
    assert result.returncode == 0, result.stderr
    assert harness.record()["argv"] == ["--config", "config/smoke.toml"]
    assert harness.kubectl_calls() == []


def test_everything_after_double_dash_goes_through(harness: Harness) -> None:
    result = harness.run("-r", "h:1", "-s", "http://h:2", "--", "-c", "oops", "--help")
    assert result.returncode == 0, result.stderr
    assert harness.record()["argv"] == [
        "--redis",
        "h:1",
        "--sse",
        "http://h:2",
        "-c",
        "oops",
        "--help",
    ]


def test_demo_and_subcommands_skip_detection(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    assert harness.run("--demo", "-c", "2").returncode == 0
    assert harness.record()["argv"] == ["--conversations", "2", "--demo"]
    assert harness.run("sandbox", "--help").returncode == 0
    assert harness.record()["argv"] == ["sandbox", "--help"]
    assert harness.run("merge", "a.json", "-c", "b.json").returncode == 0
    assert harness.record()["argv"] == ["merge", "a.json", "-c", "b.json"]
    assert harness.kubectl_calls() == []


def test_exit_status_of_sse_tui_is_the_scripts(harness: Harness) -> None:
    result = harness.run("-r", "h:1", "-s", "http://h:2", RECORDER_EXIT="3")
    assert result.returncode == 3


# --- endpoint detection ---------------------------------------------------------------------


def test_detected_load_balancer_ips_reach_sse_tui(harness: Harness) -> None:
    kubeconfig = with_origin_kubeconfig(harness)
    result = harness.run("-c", "2", FAKE_GET="ip")
    assert result.returncode == 0, result.stderr
    argv = harness.record()["argv"]
    assert flag(argv, "--redis") == "10.1.2.3:6379"
    assert flag(argv, "--sse") == "http://10.4.5.6:80"
    calls = harness.kubectl_calls()
    assert [c["argv"][c["argv"].index("get") : c["argv"].index("get") + 5] for c in calls] == [
        ["get", "svc", "redis", "-n", "redis-system"],
        ["get", "svc", "sse-adapter", "-n", "sse-system"],
    ]
    for call in calls:
        assert call["kubeconfig"] == str(kubeconfig)
        assert any(a.startswith("--request-timeout=") for a in call["argv"])
        assert any("{.status.loadBalancer.ingress[0].ip}" in a for a in call["argv"])
    assert "Found Redis at 10.1.2.3:6379" in result.stderr
    assert result.stdout == ""  # stdout belongs to sse-tui (--json -)


def test_kubeconfig_env_is_used_without_origin_yaml(harness: Harness) -> None:
    custom = harness.tmp / "elsewhere.yaml"
    custom.write_text("apiVersion: v1\nkind: Config\n")
    result = harness.run(KUBECONFIG=str(custom), FAKE_GET="ip")
    assert result.returncode == 0, result.stderr
    assert {c["kubeconfig"] for c in harness.kubectl_calls()} == {str(custom)}
    assert flag(harness.record()["argv"], "--redis") == "10.1.2.3:6379"


def test_load_balancer_hostname_is_used_when_there_is_no_ip(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    assert harness.run(FAKE_GET="hostname").returncode == 0
    argv = harness.record()["argv"]
    assert flag(argv, "--redis") == "redis.lb.example.test:6379"
    assert flag(argv, "--sse") == "http://sse-adapter.lb.example.test:80"


def test_producer_mode_only_looks_up_redis(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    assert harness.run("-m", "producer", FAKE_GET="ip").returncode == 0
    argv = harness.record()["argv"]
    assert flag(argv, "--redis") == "10.1.2.3:6379"
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
    argv = harness.record()["argv"]
    assert flag(argv, "--redis") == "localhost:6379"
    assert flag(argv, "--sse") == "http://localhost:8080"
    assert HINT_REDIS in result.stderr
    assert HINT_SSE in result.stderr
    assert "--port-forward" in result.stderr
    if answer == "notfound":
        assert 'services "redis" not found' in result.stderr


def test_unreachable_cluster_is_reported_once_and_falls_back(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run(FAKE_GET="unreachable")
    assert result.returncode == 0, result.stderr
    assert "did not answer" in result.stderr
    assert "Unable to connect to the server" in result.stderr
    assert len(harness.kubectl_calls()) == 1  # no second wait for a cluster that is down
    assert flag(harness.record()["argv"], "--redis") == "localhost:6379"
    assert HINT_SSE in result.stderr


def test_hanging_cluster_is_bounded_by_the_timeout(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    started = time.monotonic()
    result = harness.run(FAKE_GET="hang", KUBECTL_TIMEOUT="1", timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 15, elapsed
    assert "did not answer within 1s" in result.stderr
    assert flag(harness.record()["argv"], "--sse") == "http://localhost:8080"


def test_no_kubeconfig_means_localhost_without_asking_kubectl(harness: Harness) -> None:
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert harness.kubectl_calls() == []
    assert "No kubeconfig found" in result.stderr
    assert HINT_REDIS in result.stderr
    assert flag(harness.record()["argv"], "--redis") == "localhost:6379"


def test_missing_kubectl_falls_back_with_a_clear_message(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run(KUBECTL=str(harness.tmp / "no-such-kubectl"))
    assert result.returncode == 0, result.stderr
    assert "kubectl not found" in result.stderr
    assert flag(harness.record()["argv"], "--sse") == "http://localhost:8080"


# --- --port-forward -------------------------------------------------------------------------


def forwarded_ports(h: Harness) -> dict[str, tuple[str, int, int]]:
    """service -> (namespace, local port, remote port), from the fake kubectl's log."""
    out = {}
    for call in h.kubectl_calls():
        argv = call["argv"]
        if argv[:1] != ["port-forward"]:
            continue
        assert flag(argv, "--address") == "127.0.0.1"
        local, remote = argv[-1].split(":")
        out[argv[-2].removeprefix("svc/")] = (flag(argv, "-n"), int(local), int(remote))
    return out


def test_port_forward_runs_sse_tui_through_its_tunnels_and_stops_them(harness: Harness) -> None:
    with_origin_kubeconfig(harness)
    result = harness.run("--port-forward", "-c", "2", "--no-tui", RECORDER_PROBE="1")
    assert result.returncode == 0, result.stderr
    forwards = forwarded_ports(harness)
    assert set(forwards) == {"redis", "sse-adapter"}
    ns, redis_port, remote = forwards["redis"]
    assert (ns, remote) == ("redis-system", 6379)
    ns, sse_port, remote = forwards["sse-adapter"]
    assert (ns, remote) == ("sse-system", 80)
    record = harness.record()
    assert flag(record["argv"], "--redis") == f"127.0.0.1:{redis_port}"
    assert flag(record["argv"], "--sse") == f"http://127.0.0.1:{sse_port}"
    assert record["argv"][:5] == [
        "--conversations",
        "2",
        "--no-tui",
        "--redis",
        f"127.0.0.1:{redis_port}",
    ]
    # The tunnels answered while sse-tui ran...
    assert record["answers"]["redis"].startswith("+PONG")
    assert record["answers"]["sse"].startswith("HTTP/1.0")
    # ...and are gone now.
    assert len(harness.pf_pids()) == 2
    harness.assert_no_child_survives()
    assert "Stopped the port-forwards" in result.stderr


def test_port_forward_only_forwards_what_the_run_needs(harness: Harness) -> None:
    result = harness.run("--port-forward", "-m", "consumer")
    assert result.returncode == 0, result.stderr
    assert set(forwarded_ports(harness)) == {"sse-adapter"}
    assert "--redis" not in harness.record()["argv"]
    harness.assert_no_child_survives()


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
    assert argv[: len(args)] == args
    assert "--mode" not in argv  # the file's mode stands
    assert ("--redis" in argv) == ("redis" in forwarded)
    harness.assert_no_child_survives()


def test_port_forward_keeps_stdin_for_sse_tui(harness: Harness) -> None:
    result = subprocess.run(
        [str(SCRIPT), "--port-forward", "-m", "producer"],
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
        ["bash", "-c", 'exec "$0" --port-forward <&-', str(SCRIPT)],
        cwd=harness.workdir,
        env=harness.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert harness.record()["argv"][:1] == ["--redis"]
    harness.assert_no_child_survives()


def test_port_forward_passes_on_the_exit_status(harness: Harness) -> None:
    result = harness.run("--port-forward", RECORDER_EXIT="4")
    assert result.returncode == 4
    harness.assert_no_child_survives()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_script_stops_sse_tui_and_the_port_forwards(
    harness: Harness, sig: signal.Signals
) -> None:
    proc = harness.start("--port-forward", RECORDER_LINGER="60")
    wait_for(harness.record_file.exists, 20, "sse-tui to start")
    sse_tui_pid = harness.record()["pid"]
    assert alive(sse_tui_pid)
    assert all(alive(p) for p in harness.pf_pids())
    proc.send_signal(sig)
    proc.wait(20)
    # sse-tui was asked to stop (SIGTERM: it writes its summary), not killed outright.
    assert harness.record()["signals"] == ["SIGTERM"]
    assert proc.returncode == 0  # the recorder exits 0 after its summary, like sse-tui
    harness.assert_no_child_survives()


def test_sse_tui_that_ignores_the_stop_is_killed_after_the_grace(harness: Harness) -> None:
    proc = harness.start(
        "--port-forward", RECORDER_LINGER="60", RECORDER_IGNORE_TERM="1", STOP_GRACE="1"
    )
    wait_for(harness.record_file.exists, 20, "sse-tui to start")
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    assert proc.returncode != 0
    assert "did not stop within 1s" in proc.stderr.read()
    harness.assert_no_child_survives()


def test_signal_while_waiting_for_the_tunnels_stops_them(harness: Harness) -> None:
    proc = harness.start("--port-forward", FAKE_PF="dead", PORT_FORWARD_TIMEOUT="30")
    wait_for(lambda: len(harness.pf_pids()) == 1, 20, "the first port-forward")
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    assert proc.returncode == 143
    assert not harness.record_file.exists()
    harness.assert_no_child_survives()


def test_port_forward_that_fails_is_reported_and_nothing_runs(harness: Harness) -> None:
    result = harness.run("--port-forward", FAKE_PF="fail")
    assert result.returncode == 1
    assert "kubectl port-forward for redis-system/svc/redis exited" in result.stderr
    assert 'services "redis" not found' in result.stderr
    assert not harness.record_file.exists()
    harness.assert_no_child_survives()


def test_port_forward_that_never_answers_times_out(harness: Harness) -> None:
    started = time.monotonic()
    result = harness.run("--port-forward", FAKE_PF="dead", PORT_FORWARD_TIMEOUT="1")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert "did not answer on 127.0.0.1:" in result.stderr
    assert not harness.record_file.exists()
    harness.assert_no_child_survives()


def test_port_forward_without_kubectl_is_a_clear_error(harness: Harness) -> None:
    result = harness.run("--port-forward", KUBECTL=str(harness.tmp / "no-such-kubectl"))
    assert result.returncode == 1
    assert "--port-forward needs kubectl" in result.stderr
    assert not harness.record_file.exists()


def test_port_forward_leaves_the_terminal_to_sse_tui_and_ctrl_c_stops_it_once(
    harness: Harness,
) -> None:
    """On a terminal, Ctrl-C signals the whole foreground process group. sse-tui catches it
    itself (a second stop signal would make it skip the drain), so the script must not
    forward another one; the tunnels, in their own sessions, stay up until sse-tui is done."""
    try:
        controller, terminal = pty.openpty()
    except OSError as e:
        pytest.skip(f"no pseudo-terminal available here: {e}")
    try:
        proc = subprocess.Popen(
            [str(SCRIPT), "--port-forward"],
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
        wait_for(harness.record_file.exists, 20, "sse-tui to start")
        assert harness.record()["stdin_is_tty"] is True
        pf_pids = harness.pf_pids()
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        proc.wait(20)
    finally:
        os.close(controller)
        os.close(terminal)
    assert harness.record()["signals"] == ["SIGINT"]
    assert len(pf_pids) == 2
    harness.assert_no_child_survives()


@pytest.mark.timeout(120)
def test_port_forward_end_to_end_with_the_real_cli_through_tunnels(harness: Harness) -> None:
    """The real sse-tui against the real sandbox, through `kubectl port-forward` stand-ins
    that relay bytes: published == received, nothing missing, JSON alone on stdout."""
    sse_tui = Path(sys.executable).parent / "sse-tui"
    if not (REPO / "sse_tui" / "__main__.py").exists() or not sse_tui.exists():
        pytest.skip("the CLI has not landed yet")
    sandbox = subprocess.Popen(
        [str(sse_tui), "sandbox"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        addresses: dict[str, str] = {}
        deadline = time.monotonic() + 30
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
            "--port-forward",
            "-c",
            "2",
            "-t",
            "5",
            "-d",
            "5",
            "--duration",
            "0",
            "--no-tui",
            "--json",
            "-",
            timeout=90,
            SSE_TUI_BIN=str(sse_tui),
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


# --- bootstrap (slow) -----------------------------------------------------------------------

PIP_OFFLINE_HINTS = ("Could not find a version", "No matching distribution", "Failed to establish")


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

    if (project / "sse_tui" / "__main__.py").exists():
        # The real CLI has landed: the script execs it (`--` passes --help through to it).
        helped = run("--", "--help")
        assert helped.returncode == 0, helped.stderr
        assert "--duration" in helped.stdout
