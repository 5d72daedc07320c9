"""kubectl, bounded: which kubeconfig, and the LoadBalancer address of a service.

The original script read `svc/redis` (redis-system) and `svc/sse-adapter` (sse-system) with
kubectl; so do we, with every call bounded in time even when a credential plugin hangs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sse_tui.cluster.log import Log
from sse_tui.settings import UsageError

REDIS = ("redis-system", "redis")
SSE_ADAPTER = ("sse-system", "sse-adapter")
NATS = ("nats-system", "nats")  # for the per-hop tap, --nats (docs/topology.md)
_JSONPATH = "{.status.loadBalancer.ingress[0].ip} {.status.loadBalancer.ingress[0].hostname}"
# kubectl's words for "the API server is not there" (as opposed to "no such service").
_UNREACHABLE = re.compile(
    r"unable to connect|timeout|timed out|connection refused|no such host|dial tcp", re.I
)


@dataclass(frozen=True)
class Seconds:
    """A time limit from the environment, kept as typed for the messages ("within 5s")."""

    text: str
    value: float

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str, default: str) -> Seconds:
        text = env.get(name) or default
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 <= value < 86400:
            raise UsageError(f"{name}={text!r} is not a number of seconds; e.g. {name}={default}")
        return cls(text, value)


@dataclass(frozen=True)
class KubeSettings:
    """The environment overrides of run-loadtest.sh that concern kubectl."""

    kubectl: str  # KUBECTL
    timeout: Seconds  # KUBECTL_TIMEOUT: each lookup
    port_forward_timeout: Seconds  # PORT_FORWARD_TIMEOUT: the tunnels to answer
    stop_grace: Seconds  # STOP_GRACE: sse-tui to write its summary after a stop signal

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KubeSettings:
        return cls(
            kubectl=env.get("KUBECTL") or "kubectl",
            timeout=Seconds.from_env(env, "KUBECTL_TIMEOUT", "5"),
            port_forward_timeout=Seconds.from_env(env, "PORT_FORWARD_TIMEOUT", "20"),
            stop_grace=Seconds.from_env(env, "STOP_GRACE", "15"),
        )

    def kubectl_found(self, env: Mapping[str, str]) -> bool:
        return shutil.which(self.kubectl, path=env.get("PATH", os.defpath)) is not None


def choose_kubeconfig(
    env: Mapping[str, str], cwd: Path, script_dir: Path | None, log: Log
) -> dict[str, str] | None:
    """kubectl's environment: kubeconfigs/origin.yaml (here, or next to the script) when it
    exists, else $KUBECONFIG, else ~/.kube/config. None when there is none of them."""
    out = dict(env)
    candidates = [cwd / "kubeconfigs" / "origin.yaml"]
    if script_dir is not None:
        candidates.append(script_dir / "kubeconfigs" / "origin.yaml")
    for candidate in candidates:
        if candidate.is_file():
            out["KUBECONFIG"] = str(candidate)
            log.info(f"Using kubeconfig: {candidate}")
            return out
    if env.get("KUBECONFIG"):
        log.info(f"Using kubeconfig: $KUBECONFIG ({env['KUBECONFIG']})")
        return out
    if (Path(env.get("HOME") or "/nonexistent") / ".kube" / "config").is_file():
        log.info("Using kubeconfig: ~/.kube/config (current context)")
        return out
    return None


@dataclass(frozen=True)
class KubectlResult:
    status: int  # negative: killed (-1: at our deadline)
    stdout: str
    stderr: str


def run_kubectl(kube: KubeSettings, env: Mapping[str, str], *args: str) -> KubectlResult:
    """kubectl with --request-timeout, and a hard deadline a little after it: a hanging
    credential plugin is killed with its whole process group."""
    cmd = [kube.kubectl, f"--request-timeout={kube.timeout.text}s", *args]
    # Its own process group (as `timeout` did): a Ctrl-C meant for us does not reach it
    # half-way, and the group can be killed as one.
    try:
        proc = subprocess.Popen(
            cmd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, process_group=0,
        )
    except OSError as e:  # found on PATH but not runnable
        return KubectlResult(127, "", f"cannot run {kube.kubectl}: {e.strerror or e}")
    try:
        out, err = proc.communicate(timeout=kube.timeout.value + 3)
        return KubectlResult(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipes
            out, err = "", ""
        return KubectlResult(-1, out or "", err or "")
    finally:
        if proc.returncode is None:  # interrupted: leave nothing behind
            _kill_group(proc)
            proc.wait(2)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class LoadBalancers:
    """Looks up LoadBalancer addresses; after one lookup the cluster did not answer, the
    next ones are skipped: the operator should not wait for the same timeout twice."""

    def __init__(self, kube: KubeSettings, env: Mapping[str, str], log: Log) -> None:
        self.kube, self.env, self.log = kube, env, log
        self.unreachable = False

    def address(self, namespace: str, service: str) -> str | None:
        """The LoadBalancer IP of the service, else its hostname, else None."""
        if self.unreachable:
            return None
        result = run_kubectl(self.kube, self.env, "get", "svc", service, "-n", namespace,
                             "-o", f"jsonpath={_JSONPATH}")
        reason = next((line for line in result.stderr.splitlines() if line.strip()), "")
        if result.status != 0:
            if result.status < 0 or _UNREACHABLE.search(result.stderr):
                self.unreachable = True
                self.log.warn(
                    f"The cluster did not answer within {self.kube.timeout.text}s"
                    + (f" ({reason})" if reason else "")
                )
            else:
                self.log.warn(
                    f"kubectl could not read svc/{service} in {namespace}"
                    + (f": {reason}" if reason else "")
                )
            return None
        words = result.stdout.split()  # the IP when there is one, else the hostname
        return words[0] if words else None
