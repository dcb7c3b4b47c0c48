"""Fixtures for tests against a real local Kubernetes control plane (etcd + kube-apiserver +
kube-controller-manager from `k2.stack.kube`), started once per session.

    kube         the endpoints dict of KubeService.start (kubeconfig path, server URL, ...),
                 started once in the session's stack (stopped with it)
    kube_client  a kubernetes.client.ApiClient authenticated as cluster admin
    spark_crds   installs the spark-operator v2.5.2 CRDs from the shared folder (create, or
                 server-side apply when present) and returns their names

Every test collected under tests/k8s gets the `k8s` marker (`pytest -m "not k8s"` skips them).
The first run builds the binaries from source (minutes, cached under $K2_CACHE/bin).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from k2.stack.stack import Stack

SPARK_OPERATOR_CRDS = "crds/spark-operator-v2.5.2"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.k8s)


@pytest.fixture(scope="session")
def kube(stack: Stack) -> dict[str, Any]:
    """Started in the session's stack (tests/conftest.py), so K2_TEST_STACK_DIR can point the
    tests at a control plane already running from `k2 stack up --services kube --dir DIR`."""
    endpoints: dict[str, Any] = stack.up(["kube"])["kube"]
    return endpoints


@pytest.fixture(scope="session")
def kube_client(kube: dict[str, Any]) -> Iterator[Any]:
    from kubernetes import config

    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kube["kubeconfig"]
    )
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture(scope="session")
def spark_crds(kube_client: Any) -> list[str]:
    from k2.paths import shared_dir
    from k2.stack.kube import install_crds

    crd_dir = shared_dir() / SPARK_OPERATOR_CRDS
    paths = sorted(crd_dir.glob("*.yaml"))
    if not paths:
        pytest.fail(f"no spark-operator CRDs under {crd_dir} (set K2_SHARED to the shared folder)")
    return install_crds(kube_client, paths, field_manager="k2-tests")
