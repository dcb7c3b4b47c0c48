"""The local control plane is real: pinned version, garbage collection, CRDs, kubectl, helm, skaffold."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from k2.stack import tools
from k2.stack.base import pid_alive
from k2.stack.kube import PROCESSES, KubeService

pytestmark = pytest.mark.k8s


def eventually(check: Callable[[], bool], timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s")


def gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


@pytest.fixture
def namespace(kube_client: Any) -> str:
    name = f"k2-test-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(kube_client).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))
    )
    return name


def test_version_is_pinned(kube: dict[str, Any], kube_client: Any) -> None:
    info = k8s.VersionApi(kube_client).get_code()
    major, minor = tools.KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    assert info.git_version == tools.KUBERNETES_VERSION
    assert (info.major, info.minor) == (major, minor)
    assert kube["version"] == tools.KUBERNETES_VERSION
    assert kube["server"].startswith("https://127.0.0.1:")


def test_owner_deletion_garbage_collects_dependents(kube_client: Any, namespace: str) -> None:
    core = k8s.CoreV1Api(kube_client)
    owner = core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owner"), data={"a": "1"})
    )
    assert owner.metadata is not None and owner.metadata.uid
    ref = k8s.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name="owned", owner_references=[ref]), data={"b": "2"}
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)
    eventually(
        lambda: gone(lambda: core.read_namespaced_config_map("owned", namespace)),
        what="garbage collection of the owned ConfigMap",
    )

    # The namespace controller empties and removes a deleted namespace.
    core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="left"))
    )
    core.delete_namespace(namespace)
    eventually(lambda: gone(lambda: core.read_namespace(namespace)), what="namespace deletion")


def test_spark_application_crd(kube_client: Any, spark_crds: list[str], namespace: str) -> None:
    assert "sparkapplications.sparkoperator.k8s.io" in spark_crds
    assert "scheduledsparkapplications.sparkoperator.k8s.io" in spark_crds
    api = k8s.CustomObjectsApi(kube_client)
    app: dict[str, Any] = {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": "pi"},
        "spec": {
            "type": "Python",
            "mode": "cluster",
            "sparkVersion": "4.0.0",
            "image": "spark:4.0.0",
            "mainApplicationFile": "local:///opt/spark/examples/src/main/python/pi.py",
            "driver": {"cores": 1, "memory": "512m"},
            "executor": {"instances": 1, "cores": 1, "memory": "512m"},
        },
    }
    api.create_namespaced_custom_object(
        "sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications", app
    )
    got: Any = api.get_namespaced_custom_object(
        "sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications", "pi"
    )
    assert got["spec"]["mainApplicationFile"].endswith("pi.py")

    # The schema is enforced: a missing required field is rejected.
    bad = {
        **app,
        "metadata": {"name": "bad"},
        "spec": {k: v for k, v in app["spec"].items() if k != "driver"},
    }
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(
            "sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications", bad
        )
    assert err.value.status == 422

    # status is a subresource; the operator writes driverInfo there.
    api.patch_namespaced_custom_object_status(
        "sparkoperator.k8s.io",
        "v1beta2",
        namespace,
        "sparkapplications",
        "pi",
        {"status": {"driverInfo": {}, "applicationState": {"state": "SUBMITTED"}}},
    )
    got = api.get_namespaced_custom_object(
        "sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications", "pi"
    )
    assert got["status"]["applicationState"]["state"] == "SUBMITTED"


def run_tool(tool: str, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(tools.tool_path(tool)), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert proc.returncode == 0, f"{tool} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_kubectl_get_namespaces(kube: dict[str, Any]) -> None:
    out = run_tool("kubectl", "--kubeconfig", kube["kubeconfig"], "get", "ns", "-o", "name")
    assert "namespace/default" in out.split()
    assert "namespace/kube-system" in out.split()
    version = json.loads(
        run_tool("kubectl", "--kubeconfig", kube["kubeconfig"], "version", "-o", "json")
    )
    assert version["clientVersion"]["gitVersion"] == tools.KUBERNETES_VERSION
    assert version["serverVersion"]["gitVersion"] == tools.KUBERNETES_VERSION


def test_helm_version(tmp_path: Path) -> None:
    out = run_tool(
        "helm",
        "version",
        "--short",
        env={"HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path)},
    )
    assert out.strip().startswith(tools.HELM_VERSION)


def test_skaffold_version() -> None:
    out = run_tool("skaffold", "version", env={"SKAFFOLD_UPDATE_CHECK": "false"})
    assert out.strip() == tools.SKAFFOLD_VERSION


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    service = KubeService()
    run_dir = tmp_path / "kube"
    endpoints = service.start(run_dir, {})
    try:
        pids = {name: int((run_dir / f"{name}.pid").read_text()) for name in PROCESSES}
        assert all(pid_alive(pid) for pid in pids.values())
        assert Path(endpoints["kubeconfig"]).exists()
        assert service.healthy(run_dir, endpoints)
    finally:
        service.stop(run_dir)
    assert not service.healthy(run_dir, endpoints)
    assert not any(pid_alive(pid) for pid in pids.values()), pids
    assert not list(run_dir.glob("*.pid"))
    leftovers = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(run_dir).encode() in (proc / "cmdline").read_bytes():
                    leftovers.append(proc.name)
            except OSError:
                pass
    assert not leftovers, f"processes still running from {run_dir}: {leftovers}"


@pytest.mark.parametrize("module", sorted(tools.MODULES))
def test_wrapper_modules_are_pinned(module: str) -> None:
    """build/kube/<module>/go.mod was regenerated (`python -m k2.stack.tools pin`) for the versions
    in tools.py, and every staging module of k8s.io/kubernetes is replaced by its release."""
    spec = tools.MODULES[module]
    gomod = (spec.dir / "go.mod").read_text()
    assert f"{spec.require} {spec.version}" in gomod
    assert (spec.dir / "go.sum").stat().st_size > 0
    if spec.staging_version:
        for staged in ("k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go", "k8s.io/kubectl"):
            assert f"{staged} => {staged} {spec.staging_version}" in gomod
        assert "./staging" not in gomod
