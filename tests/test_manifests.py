"""deploy/k8s: valid against the Kubernetes schemas, aimed at the services of
docs/protocol.md, safe to run (non-root, bounded resources), and with arguments the
real CLI accepts. An Indexed Job's pods get distinct run ids."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
# The oldest Kubernetes the manifests claim to work on, and the newest the schemas know.
K8S_VERSIONS = ["1.27.0", None]

REDIS_IN_CLUSTER = "redis.redis-system:6379"
SSE_IN_CLUSTER = "http://sse-adapter.sse-system:80"
INDEX_VAR = "$(JOB_COMPLETION_INDEX)"
UID_VAR = "$(JOB_UID)"
# What the pods of two runs of the Indexed Job would be given.
RUN_ENV = [{"JOB_COMPLETION_INDEX": str(i), "JOB_UID": uid}
           for uid in ("0d7c6a8e-5b1f-4f7e-9a51-3c2b8e1d4f60",
                       "8f3e2b1a-9c4d-4e5f-8a7b-6c5d4e3f2a10") for i in range(4)]


def documents() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        out += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def jobs() -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == "Job"]


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args, for the variables given."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def test_there_are_a_job_an_indexed_job_and_a_toolbox() -> None:
    kinds = sorted(doc["kind"] for _, doc in documents())
    assert kinds == ["Deployment", "Job", "Job", "Namespace"]
    assert [j["spec"].get("completionMode", "NonIndexed") for j in jobs()].count("Indexed") == 1


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "latest")
def test_manifests_validate_against_the_kubernetes_schemas(version: str | None) -> None:
    assert MANIFESTS
    exe = Path(sys.executable).parent / "kubernetes-validate"
    cmd = [str(exe), "--strict", "--quiet"]
    if version:
        cmd += ["-k", version]
    result = subprocess.run(
        [*cmd, *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("job", jobs(), ids=lambda j: j["metadata"]["name"])
def test_jobs_are_non_root_bounded_and_aimed_at_the_protocol_services(job: dict[str, Any]) -> None:
    namespaces = {doc["metadata"]["name"] for _, doc in documents() if doc["kind"] == "Namespace"}
    assert job["metadata"]["namespace"] in namespaces
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] > 5 * 60  # longer than the --duration it runs
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    c = container(job)
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}
    args = c["args"]
    assert f"--redis={REDIS_IN_CLUSTER}" in args
    assert f"--sse={SSE_IN_CLUSTER}" in args
    assert "--no-tui" in args and "--json=-" in args  # results as JSON in the pod's log
    assert "command" not in c  # the image's ENTRYPOINT (sse-tui) runs


def test_dockerfile_user_matches_the_manifests() -> None:
    users = re.findall(r"^USER\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert users and users[-1].split(":")[0] == "10001"


def test_indexed_job_gives_every_pod_its_own_run_id() -> None:
    (job,) = [j for j in jobs() if j["spec"].get("completionMode") == "Indexed"]
    n = job["spec"]["completions"]
    assert n >= 2
    assert job["spec"]["parallelism"] == n  # all generators at once
    c = container(job)
    # Kubernetes expands $(VAR) in args only for variables declared in env.
    declared = {e["name"]: e for e in c.get("env", [])}
    assert "JOB_COMPLETION_INDEX" in declared
    ref = declared["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert ref == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # The Job's uid: new for each run of the manifest, so a second run's ids are new too.
    ref = declared["JOB_UID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert ref == "metadata.labels['batch.kubernetes.io/controller-uid']"
    run_id_args = [a for a in c["args"] if a.startswith("--run-id=")]
    assert len(run_id_args) == 1 and INDEX_VAR in run_id_args[0] and UID_VAR in run_id_args[0]
    ids = {expand(run_id_args, env)[0].split("=", 1)[1] for env in RUN_ENV}
    assert len(ids) == len(RUN_ENV) == 2 * n
    # One fleet per run (docs/fleet.md): the same name for a run's pods, a new one per run.
    fleet_args = [a for a in c["args"] if a.startswith("--fleet=")]
    assert len(fleet_args) == 1
    fleets = [expand(fleet_args, env)[0] for env in RUN_ENV]
    assert len(set(fleets[:n])) == 1 and len(set(fleets)) == 2


@pytest.mark.parametrize("job", jobs(), ids=lambda j: j["metadata"]["name"])
def test_job_args_are_accepted_by_the_cli(job: dict[str, Any]) -> None:
    cli_args = pytest.importorskip("sse_tui.cli_args", reason="the CLI has not landed yet")
    args = expand(container(job)["args"], RUN_ENV[3])
    options = cli_args.parse_args(args)
    assert options.json_path == "-"
    assert options.no_tui
    assert options.settings.mode == "both"
    assert options.settings.duration_s == 300
    if any(a.startswith("--run-id=") for a in args):
        assert options.settings.run_id == f"{RUN_ENV[3]['JOB_UID']}-3"
        assert options.settings.fleet == RUN_ENV[3]["JOB_UID"]


def test_the_toolbox_idles_in_the_jobs_image_and_security_context() -> None:
    (toolbox,) = [doc for _, doc in documents() if doc["kind"] == "Deployment"]
    (job,) = [j for j in jobs() if j["spec"].get("completionMode") == "Indexed"]
    assert toolbox["metadata"]["name"] == "sse-tui"  # kubectl exec -it deploy/sse-tui
    assert toolbox["metadata"]["namespace"] == job["metadata"]["namespace"]
    pod, job_pod = toolbox["spec"]["template"]["spec"], job["spec"]["template"]["spec"]
    assert pod["securityContext"] == job_pod["securityContext"]
    (c,) = pod["containers"]
    assert c["image"] == container(job)["image"]
    assert c["securityContext"] == container(job)["securityContext"]
    assert c["command"] == ["sleep", "infinity"]  # idle until used
    # The Job's pods are not the toolbox's: its selector does not pick them up.
    labels = job_pod.get("metadata", job["spec"]["template"]["metadata"])["labels"]
    selector = toolbox["spec"]["selector"]["matchLabels"]
    assert any(labels.get(k) != v for k, v in selector.items())
