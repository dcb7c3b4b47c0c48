"""End to end on a real cluster: kind + the K2 images + charts/k2 + the sample pipeline, until
trades of both exchanges are in gold.

Needs a Docker engine and kind (`make kind-bin`, or KIND=/path/to/kind), network access to pull
the base images and the spark-operator chart, and about 4 CPUs / 8 GB for the cluster. Marked
`kind`: skipped unless asked for (`make kind-test`, `pytest --run-kind tests/kind`, K2_KIND=1),
and skipped with the reason when Docker or kind is missing.

    make kind-up && make kind-test     # reuse the cluster kind-up made (K2_KIND_CLUSTER=k2)
    pytest --run-kind tests/kind       # create cluster k2-e2e, build, load, install, test, delete

The sample pipeline's feeds read the chart's replay servers (samplePipeline.replay: synthetic
Binance and Kraken markets speaking the real protocols), so the run needs no exchange access.
Environment: K2_KIND_CLUSTER, K2_KIND_NAMESPACE (k2), K2_KIND_TAG (image tag, dev),
K2_KIND_KEEP=1 (keep a cluster this test created), K2_KIND_GOLD_TIMEOUT (seconds, 1200).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from k2.paths import REPO_ROOT, cache_dir

pytestmark = pytest.mark.kind

CHART = REPO_ROOT / "charts" / "k2"
IMAGES = {
    "k2-operator": ("images/k2/Dockerfile", "operator"),
    "k2-ingestor": ("images/k2/Dockerfile", "ingestor"),
    "k2-spark": ("images/spark/Dockerfile", None),
}
KIND_VERSION = "v0.32.0"
RELEASE = "k2"


def run(
    argv: list[str], *, timeout: float = 1800, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(argv), flush=True)
    proc = subprocess.run(
        argv, text=True, capture_output=True, timeout=timeout, cwd=REPO_ROOT, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def eventually(
    check: Callable[[], Any], *, timeout: float, what: str, interval: float = 10.0
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # not there yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout:.0f}s (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- prerequisites


def kind_binary() -> str | None:
    for candidate in (
        os.environ.get("KIND"),
        shutil.which("kind"),
        str(cache_dir() / "bin" / f"kind-{KIND_VERSION}" / "kind"),
    ):
        if candidate and Path(candidate).exists() and os.access(candidate, os.X_OK):
            return candidate
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def docker_engine() -> str | None:
    """None when a Docker engine answers, else why not."""
    docker = shutil.which("docker")
    if not docker:
        return "no docker CLI on PATH"
    proc = subprocess.run(
        [docker, "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"no Docker engine ({lines[-1] if lines else 'docker info failed'})"
    return None


def tool(name: str) -> str:
    override = os.environ.get(name.upper().replace("-", "_"))
    if override:
        return override
    from k2.stack import tools

    return str(tools.tool_path(name))


@dataclass
class Cluster:
    name: str
    namespace: str
    kind: str
    kubectl: str
    helm: str
    created: bool

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    def k(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [self.kubectl, "--context", self.context, "-n", self.namespace, *args],
            timeout=timeout,
            check=check,
        )

    def get_json(self, *args: str) -> Any:
        return json.loads(self.k("get", *args, "-o", "json").stdout)


# ---------------------------------------------------------------- the cluster


def build_and_load(cluster: Cluster, tag: str) -> None:
    for image, (dockerfile, target) in IMAGES.items():
        argv = ["docker", "build", "-f", dockerfile, "-t", f"{image}:{tag}"]
        if target:
            argv += ["--target", target]
        run([*argv, "."], timeout=3600, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    run(
        [
            cluster.kind,
            "load",
            "docker-image",
            "--name",
            cluster.name,
            *(f"{i}:{tag}" for i in IMAGES),
        ],
        timeout=1800,
    )


def install_chart(cluster: Cluster, tag: str) -> None:
    if not list((CHART / "charts").glob("spark-operator-*.tgz")):
        run([cluster.helm, "dependency", "build", str(CHART)], timeout=600)
    run(
        [
            cluster.helm,
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "--kube-context",
            cluster.context,
            "-n",
            cluster.namespace,
            "--create-namespace",
            "-f",
            str(CHART / "environments" / "kind.yaml"),
            "--set",
            f"images.operator.tag={tag},images.ingestor.tag={tag},images.spark.tag={tag}",
            "--wait",
            "--timeout",
            "20m",
        ],
        timeout=1500,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = docker_engine()
    if reason:
        pytest.skip(f"kind tests need a Docker engine: {reason}")
    kind = kind_binary()
    if not kind:
        pytest.skip(
            f"kind tests need kind: `make kind-bin` (go install sigs.k8s.io/kind@{KIND_VERSION}) or KIND=..."
        )
    name = os.environ.get("K2_KIND_CLUSTER", "k2-e2e")
    tag = os.environ.get("K2_KIND_TAG", "dev")
    existing = run([kind, "get", "clusters"]).stdout.split()
    c = Cluster(
        name=name,
        namespace=os.environ.get("K2_KIND_NAMESPACE", "k2"),
        kind=kind,
        kubectl=tool("kubectl"),
        helm=tool("helm"),
        created=name not in existing,
    )
    if c.created:
        run([kind, "create", "cluster", "--name", name, "--wait", "180s"], timeout=900)
    try:
        released = run(
            [c.helm, "status", RELEASE, "--kube-context", c.context, "-n", c.namespace], check=False
        )
        if c.created or released.returncode != 0:
            build_and_load(c, tag)
            install_chart(c, tag)
        yield c
    finally:
        if c.created and not os.environ.get("K2_KIND_KEEP"):
            run([kind, "delete", "cluster", "--name", name], check=False, timeout=600)


@contextlib.contextmanager
def port_forward(cluster: Cluster, target: str, remote: int) -> Iterator[int]:
    local = free_port()
    proc = subprocess.Popen(
        [
            cluster.kubectl,
            "--context",
            cluster.context,
            "-n",
            cluster.namespace,
            "port-forward",
            "--address",
            "127.0.0.1",
            target,
            f"{local}:{remote}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                s.settimeout(0.5)
                return s.connect_ex(("127.0.0.1", local)) == 0

        eventually(listening, timeout=60, what=f"port-forward {target}", interval=0.5)
        yield local
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


# ---------------------------------------------------------------- tests


def test_release_is_deployed_with_every_component(cluster: Cluster) -> None:
    status = json.loads(
        run(
            [
                cluster.helm,
                "status",
                RELEASE,
                "--kube-context",
                cluster.context,
                "-n",
                cluster.namespace,
                "-o",
                "json",
            ]
        ).stdout
    )
    assert status["info"]["status"] == "deployed"
    deployments = {d["metadata"]["name"] for d in cluster.get_json("deployments")["items"]}
    assert {"k2-operator", "k2-schema-registry", "k2-iceberg-rest"} <= deployments
    statefulsets = {s["metadata"]["name"] for s in cluster.get_json("statefulsets")["items"]}
    assert {"k2-kafka", "k2-minio"} <= statefulsets


def test_feeds_become_ready(cluster: Cluster) -> None:
    def ready() -> bool:
        feeds = cluster.get_json("exchangefeeds")["items"]
        conditions = [
            {c["type"]: c["status"] for c in (f.get("status") or {}).get("conditions", [])}
            for f in feeds
        ]
        return len(feeds) == 2 and all(c.get("Ready") == "True" for c in conditions)

    eventually(ready, timeout=600, what="both ExchangeFeeds Ready")


def test_spark_applications_run(cluster: Cluster) -> None:
    def running() -> bool:
        apps = cluster.get_json("sparkapplications")["items"]
        states = {
            a["metadata"]["name"]: (a.get("status") or {}).get("applicationState", {}).get("state")
            for a in apps
        }
        return len(states) == 3 and all(s == "RUNNING" for s in states.values())

    eventually(running, timeout=900, what="bronze, silver and gold SparkApplications RUNNING")


def test_gold_has_trades_of_both_exchanges(cluster: Cluster) -> None:
    """Read gold through the cluster's Iceberg REST catalog and MinIO (port-forwarded)."""
    from pyiceberg.catalog import load_catalog

    secret = cluster.get_json("secret", "k2-minio")["data"]
    user = base64.b64decode(secret["rootUser"]).decode()
    password = base64.b64decode(secret["rootPassword"]).decode()
    timeout = float(os.environ.get("K2_KIND_GOLD_TIMEOUT", "1200"))
    with (
        port_forward(cluster, "svc/k2-iceberg-rest", 8181) as rest,
        port_forward(cluster, "svc/k2-minio", 9000) as s3,
    ):
        catalog = load_catalog(
            "k2",
            type="rest",
            uri=f"http://127.0.0.1:{rest}",
            **{
                "s3.endpoint": f"http://127.0.0.1:{s3}",
                "s3.access-key-id": user,
                "s3.secret-access-key": password,
                "s3.path-style-access": "true",
                "s3.region": "us-east-1",
            },
        )

        def exchanges_in_gold() -> dict[str, int] | None:
            table = catalog.load_table("market_data.gold_crypto_trades")
            table.refresh()
            rows = (
                table.scan(selected_fields=("exchange",)).to_arrow().column("exchange").to_pylist()
            )
            counts = {e: rows.count(e) for e in set(rows)}
            print("gold rows by exchange:", counts, flush=True)
            return counts if counts.get("BINANCE", 0) > 0 and counts.get("KRAKEN", 0) > 0 else None

        counts = eventually(
            exchanges_in_gold, timeout=timeout, what="gold rows for BINANCE and KRAKEN", interval=20
        )
    assert counts["BINANCE"] > 0 and counts["KRAKEN"] > 0
