"""The K2 operator against a real kube-apiserver + kube-controller-manager (garbage collection,
Deployments -> ReplicaSets) and a real Iceberg REST catalog.

Each test runs its own operator (kopf's KopfRunner, in a thread, watching only the test's
namespace) and its own Iceberg namespace. There is no kubelet and no spark-operator: pods stay
Pending, so ingestors never become available, and a test plays spark-operator's part by
writing SparkApplication status itself.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from k2.stack.kube import install_crds
from k2_operator import crd_paths
from k2_operator.testing import condition, eventually, load_docs, running_operator

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "pipeline.yaml"
G, V = "k2.io", "v1alpha1"
SPARK = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
PLURALS = {
    "ExchangeFeed": "exchangefeeds",
    "MedallionPipeline": "medallionpipelines",
    "IcebergTable": "icebergtables",
}
TABLE_RESOURCES = {
    "crypto-bronze-crypto-trades",
    "crypto-silver-binance-trades",
    "crypto-silver-kraken-trades",
    "crypto-silver-dlq-trades",
    "crypto-gold-crypto-trades",
}
APPS = {"crypto-bronze", "crypto-silver", "crypto-gold"}
RESYNC = 5.0  # K2_OPERATOR_RESYNC_SECONDS the operator runs with (k2_operator.testing)


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def crds(kube_client: Any, spark_crds: list[str]) -> list[str]:
    return install_crds(kube_client, crd_paths(), field_manager="k2-tests")


@pytest.fixture
def ns(kube_client: Any, crds: list[str]) -> Iterator[str]:
    name = f"k2-op-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(kube_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    # No operator runs any more: release its finalizers so the namespace can go.
    co = k8s.CustomObjectsApi(kube_client)
    for plural in PLURALS.values():
        for obj in co.list_namespaced_custom_object(G, V, name, plural)["items"]:
            try:
                co.patch_namespaced_custom_object(
                    G, V, name, plural, obj["metadata"]["name"], {"metadata": {"finalizers": None}}
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
    core.delete_namespace(name)


@pytest.fixture
def iceberg_ns() -> str:
    return f"k8s_{uuid.uuid4().hex[:8]}"


class Cluster:
    """Short reads and writes for one test namespace."""

    def __init__(self, api_client: Any, ns: str):
        self.ns = ns
        self.co = k8s.CustomObjectsApi(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.create_namespaced_custom_object(
            G, V, self.ns, PLURALS[doc["kind"]], doc
        )
        return result

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.co.get_namespaced_custom_object(
                G, V, self.ns, PLURALS[kind], name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def patch(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.patch_namespaced_custom_object(
            G, V, self.ns, PLURALS[kind], name, patch
        )
        return result

    def delete(self, kind: str, name: str) -> None:
        self.co.delete_namespaced_custom_object(G, V, self.ns, PLURALS[kind], name)

    def list(self, kind: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.co.list_namespaced_custom_object(
            G, V, self.ns, PLURALS[kind]
        )["items"]
        return items

    def spark_apps(self) -> dict[str, dict[str, Any]]:
        items = self.co.list_namespaced_custom_object(*SPARK[:2], self.ns, SPARK[2])["items"]
        return {a["metadata"]["name"]: a for a in items}

    def spark_app(self, name: str) -> dict[str, Any] | None:
        return self.spark_apps().get(name)

    def deployments(self) -> dict[str, Any]:
        return {d.metadata.name: d for d in self.apps.list_namespaced_deployment(self.ns).items}

    def services(self) -> dict[str, Any]:
        return {s.metadata.name: s for s in self.core.list_namespaced_service(self.ns).items}

    def configmaps(self) -> dict[str, Any]:
        return {
            c.metadata.name: c
            for c in self.core.list_namespaced_config_map(self.ns).items
            if c.metadata.name != "kube-root-ca.crt"
        }

    def events(self, name: str) -> list[Any]:
        return [
            e
            for e in self.core.list_namespaced_event(self.ns).items
            if e.involved_object.name == name
        ]

    def set_app_state(self, name: str, state: str) -> None:
        self.co.patch_namespaced_custom_object_status(
            *SPARK[:2],
            self.ns,
            SPARK[2],
            name,
            {"status": {"driverInfo": {}, "applicationState": {"state": state}}},
        )


@pytest.fixture
def cluster(kube_client: Any, ns: str) -> Cluster:
    return Cluster(kube_client, ns)


def sample(
    catalog: dict[str, Any] | None, iceberg_ns: str, **pipeline_spec: Any
) -> list[dict[str, Any]]:
    """The sample declaration, pointed at the test's catalog and Iceberg namespace."""
    docs = load_docs(SAMPLE)
    for d in docs:
        if d["kind"] == "MedallionPipeline":
            d["spec"]["namespace"] = iceberg_ns
            if catalog is not None:
                d["spec"]["catalog"] = {"uri": catalog["uri"], "warehouse": catalog["warehouse"]}
            d["spec"].update(pipeline_spec)
    return docs


def apply_all(cluster: Cluster, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: cluster.create(copy.deepcopy(d)) for d in docs}


def is_true(obj: dict[str, Any] | None, type_: str) -> bool:
    c = condition(obj, type_)
    return bool(c and c["status"] == "True")


def all_children(cluster: Cluster) -> bool:
    return (
        {"binance-ingestor", "kraken-ingestor"} <= set(cluster.deployments())
        and {t["metadata"]["name"] for t in cluster.list("IcebergTable")} >= TABLE_RESOURCES
        and set(cluster.spark_apps()) >= APPS
        and "crypto-declaration" in cluster.configmaps()
    )


def tables_ready(cluster: Cluster) -> bool:
    tables = [t for t in cluster.list("IcebergTable") if t["metadata"]["name"] in TABLE_RESOURCES]
    return len(tables) == 5 and all(is_true(t, "Ready") for t in tables)


def load_table(catalog: dict[str, Any], ident: str) -> Any:
    from k2.catalog import load_catalog

    return load_catalog(catalog["uri"], catalog["warehouse"]).load_table(ident)


def table_exists(catalog: dict[str, Any], ident: str) -> bool:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        load_table(catalog, ident)
    except NoSuchTableError:
        return False
    return True


def uid(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj["metadata"]["uid"])
    return str(obj.metadata.uid)


def container_args(cluster: Cluster, name: str) -> list[str]:
    dep = cluster.deployments()[name]
    return list(dep.spec.template.spec.containers[0].args)


# ------------------------------------------------------------------ the sample pipeline


def test_sample_pipeline_produces_its_children_and_status(
    kube: dict[str, Any], cluster: Cluster, catalog: dict[str, Any], iceberg_ns: str
) -> None:
    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        created = apply_all(cluster, sample(catalog, iceberg_ns))
        eventually(lambda: all_children(cluster), what="the pipeline's children")

        # Exactly these children, each controlled by its resource.
        deployments, services = cluster.deployments(), cluster.services()
        assert set(deployments) == {"binance-ingestor", "kraken-ingestor"}
        assert set(services) == {"binance-ingestor", "kraken-ingestor"}
        assert {t["metadata"]["name"] for t in cluster.list("IcebergTable")} == TABLE_RESOURCES
        assert set(cluster.spark_apps()) == APPS
        assert set(cluster.configmaps()) == {"crypto-declaration"}
        for feed in ("binance", "kraken"):
            for obj in (deployments[f"{feed}-ingestor"], services[f"{feed}-ingestor"]):
                (ref,) = obj.metadata.owner_references
                assert (ref.kind, ref.name, ref.uid, ref.controller) == (
                    "ExchangeFeed",
                    feed,
                    uid(created[feed]),
                    True,
                )
            c = deployments[f"{feed}-ingestor"].spec.template.spec.containers[0]
            assert c.args[:2] == ["ingest", feed] and c.readiness_probe.http_get.path == "/readyz"
        owned = [*cluster.list("IcebergTable"), *cluster.spark_apps().values()]
        for obj in owned:
            (ref,) = obj["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["uid"], ref["controller"]) == (
                "MedallionPipeline",
                uid(created["crypto"]),
                True,
            )
        for app in cluster.spark_apps().values():
            spec = app["spec"]
            assert (
                spec["executor"]["instances"],
                spec["executor"]["cores"],
                spec["executor"]["memory"],
            ) == (2, 2, "3g")
            assert spec["driver"]["cores"] == 1 and spec["mainApplicationFile"].endswith(
                f"/{app['metadata']['labels']['k2.io/layer']}.py"
            )

        # The tables are real: same UUID in the catalog as in the status.
        eventually(lambda: tables_ready(cluster), timeout=90, what="all IcebergTables Ready")
        for t in cluster.list("IcebergTable"):
            table = load_table(catalog, f"{iceberg_ns}.{t['spec']['name']}")
            assert t["status"]["tableUUID"] == str(table.metadata.table_uuid)
            assert (t["status"]["schemaId"], t["status"]["snapshotCount"]) == (0, 0)
            assert t["status"]["observedGeneration"] == t["metadata"]["generation"]
        gold = load_table(catalog, f"{iceberg_ns}.gold_crypto_trades")
        assert len(gold.schema().fields) == 14

        # Pipeline: tables ready, applications not running yet.
        def waiting() -> dict[str, Any] | None:
            p = cluster.get("MedallionPipeline", "crypto")
            ok = p and p["status"].get("tablesReady") == "5/5" and is_true(p, "Progressing")
            return p if ok else None

        p = eventually(waiting, what="pipeline waiting for applications")
        ready = condition(p, "Ready")
        assert ready and (ready["status"], ready["reason"]) == ("False", "ApplicationsNotRunning")
        assert condition(p, "Progressing")["reason"] == "WaitingForApplications"  # type: ignore[index]
        assert p["status"]["observedGeneration"] == p["metadata"]["generation"] == 1
        assert p["status"]["checkpointEpochs"] == {"bronze": 0, "silver": 0, "gold": 0}

        # Feeds: no kubelet, so the ingestor never becomes available; the topic is skipped.
        feed = eventually(
            lambda: (f := cluster.get("ExchangeFeed", "binance")) and f.get("status") and f,
            what="feed status",
        )
        assert condition(feed, "Ready")["reason"] == "IngestorUnavailable"  # type: ignore[index]
        assert is_true(feed, "Progressing") and not is_true(feed, "Degraded")
        assert feed["status"]["observedGeneration"] == 1
        assert feed["status"]["topic"]["state"] == "Skipped"  # k2-kafka:9092 does not resolve here

        # Play spark-operator: the applications run -> the pipeline is Ready.
        for name in APPS:
            cluster.set_app_state(name, "RUNNING")

        def running() -> dict[str, Any] | None:
            p = cluster.get("MedallionPipeline", "crypto")
            return p if is_true(p, "Ready") else None

        p = eventually(running, what="pipeline Ready")
        assert condition(p, "Ready")["reason"] == "PipelineRunning"  # type: ignore[index]
        assert condition(p, "Ready")["lastTransitionTime"] >= ready["lastTransitionTime"]  # type: ignore[index]
        assert p["status"]["applicationsRunning"] == "3/3"
        assert {a["state"] for a in p["status"]["applications"]} == {"RUNNING"}

        # A failing application degrades the pipeline.
        cluster.set_app_state("crypto-silver", "FAILED")
        p = eventually(
            lambda: (x := cluster.get("MedallionPipeline", "crypto"))
            and is_true(x, "Degraded")
            and x,
            what="pipeline Degraded",
        )
        assert condition(p, "Degraded")["reason"] == "ApplicationFailed"  # type: ignore[index]

        # What the operator did is in Events.
        reasons = {e.reason for e in cluster.events("crypto")}
        assert "Created" in reasons
        assert any(
            e.reason == "Created" and "create table" in e.message
            for t in TABLE_RESOURCES
            for e in cluster.events(t)
        )


# ------------------------------------------------------------------ changes


def test_spec_changes_propagate(
    kube: dict[str, Any], cluster: Cluster, catalog: dict[str, Any], iceberg_ns: str
) -> None:
    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        apply_all(cluster, sample(catalog, iceberg_ns))
        eventually(lambda: all_children(cluster), what="the pipeline's children")
        apps_before = {n: uid(a) for n, a in cluster.spark_apps().items()}

        # A new symbol reaches the ingestor's arguments (and restarts no Spark job).
        cluster.patch(
            "ExchangeFeed", "binance", {"spec": {"symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"]}}
        )
        eventually(
            lambda: "BTC/USDT,ETH/USDT,SOL/USDT" in container_args(cluster, "binance-ingestor"),
            what="the new symbol in the Deployment",
        )
        eventually(
            lambda: (f := cluster.get("ExchangeFeed", "binance"))
            and f["status"].get("observedGeneration") == 2
            and f["status"]["symbols"][-1] == "SOL/USDT",
            what="feed status at generation 2",
        )

        # A gold-only change restarts gold only; the checkpoint stays.
        cluster.patch(
            "MedallionPipeline", "crypto", {"spec": {"jobs": {"gold": {"trigger": "30 seconds"}}}}
        )
        eventually(
            lambda: (a := cluster.spark_app("crypto-gold"))
            and uid(a) != apps_before["crypto-gold"],
            what="gold restarted",
        )
        gold = cluster.spark_app("crypto-gold")
        assert gold and gold["spec"]["arguments"][-1] == "s3a://k2-checkpoints/"
        time.sleep(2)
        apps_now = cluster.spark_apps()
        assert uid(apps_now["crypto-bronze"]) == apps_before["crypto-bronze"]
        assert uid(apps_now["crypto-silver"]) == apps_before["crypto-silver"]
        assert any(
            e.reason == "Restarted" and "crypto-gold" in e.message for e in cluster.events("crypto")
        )
        cm = cluster.configmaps()["crypto-declaration"]
        assert "30 seconds" in cm.data["pipeline.yaml"] and "SOL/USDT" in cm.data["pipeline.yaml"]

        # resetCheckpoints: the restarted job gets a new checkpoint generation.
        cluster.patch(
            "MedallionPipeline",
            "crypto",
            {"spec": {"resetCheckpoints": True, "jobs": {"silver": {"trigger": "7 seconds"}}}},
        )
        silver = eventually(
            lambda: (a := cluster.spark_app("crypto-silver"))
            and a["spec"]["arguments"][-1] == "s3a://k2-checkpoints/g1/"
            and a,
            what="silver restarted on checkpoint generation 1",
        )
        assert silver["metadata"]["annotations"]["k2.io/checkpoint-epoch"] == "1"
        p = eventually(
            lambda: (x := cluster.get("MedallionPipeline", "crypto"))
            and x["status"].get("observedGeneration") == x["metadata"]["generation"]
            and x["status"]["checkpointEpochs"]["silver"] == 1
            and x,
            what="pipeline status with the new epoch",
        )
        locations = {a["layer"]: a["checkpointLocation"] for a in p["status"]["applications"]}
        assert locations["silver"] == "s3a://k2-checkpoints/g1/crypto/silver"
        assert locations["bronze"] == "s3a://k2-checkpoints/crypto/bronze"


def test_new_column_reaches_the_iceberg_table(
    kube: dict[str, Any], cluster: Cluster, catalog: dict[str, Any], iceberg_ns: str
) -> None:
    doc = {
        "apiVersion": f"{G}/{V}",
        "kind": "IcebergTable",
        "metadata": {"name": "lab-trades"},
        "spec": {
            "catalog": {"uri": catalog["uri"], "warehouse": catalog["warehouse"]},
            "namespace": iceberg_ns,
            "name": "lab_trades",
            "schema": {
                "columns": [{"name": "trade_id", "type": "string"}, {"name": "size", "type": "int"}]
            },
            "partitionSpec": [],
            "properties": {"format-version": "2", "k2.owner": "tests"},
        },
    }
    ident = f"{iceberg_ns}.lab_trades"
    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        cluster.create(doc)
        t = eventually(
            lambda: (x := cluster.get("IcebergTable", "lab-trades")) and is_true(x, "Ready") and x,
            what="table Ready",
        )
        assert t["status"]["schemaId"] == 0 and t["status"]["identifier"] == ident
        cluster.patch(
            "IcebergTable",
            "lab-trades",
            {
                "spec": {
                    "schema": {
                        "columns": [
                            {"name": "trade_id", "type": "string"},
                            {"name": "price", "type": "decimal(18,8)"},
                            {"name": "size", "type": "long"},
                            {"name": "venue", "type": "string", "doc": "where it traded"},
                        ]
                    },
                    "partitionSpec": [{"source": "venue", "transform": "identity"}],
                    "properties": {"format-version": "2", "k2.owner": "tests-v2"},
                }
            },
        )
        t = eventually(
            lambda: (x := cluster.get("IcebergTable", "lab-trades"))
            and x["status"].get("observedGeneration") == 2
            and is_true(x, "Ready")
            and x,
            what="table evolved",
        )
        table = load_table(catalog, ident)
        fields = {f.name: str(f.field_type) for f in table.schema().fields}
        assert fields == {
            "trade_id": "string",
            "price": "decimal(18, 8)",
            "size": "long",
            "venue": "string",
        }
        assert table.properties["k2.owner"] == "tests-v2"
        assert [f.name for f in table.spec().fields] == ["venue"]
        assert t["status"]["schemaId"] == table.schema().schema_id > 0
        assert any("add column venue" in c for c in t["status"]["lastChanges"])
        assert any(e.reason == "Evolved" for e in cluster.events("lab-trades"))

        # A change the CRD lets through but Iceberg cannot make in place (narrowing a
        # decimal) is reported, not applied.
        cluster.co.patch_namespaced_custom_object(
            G,
            V,
            cluster.ns,
            "icebergtables",
            "lab-trades",
            [{"op": "replace", "path": "/spec/schema/columns/1/type", "value": "decimal(10,8)"}],
            _content_type="application/json-patch+json",
        )
        t = eventually(
            lambda: (x := cluster.get("IcebergTable", "lab-trades"))
            and is_true(x, "Degraded")
            and x,
            what="table Degraded",
        )
        degraded = condition(t, "Degraded") or {}
        assert degraded["reason"] == "IncompatibleChange"
        assert "price" in degraded["message"]
        assert (
            str(load_table(catalog, ident).schema().find_field("price").field_type)
            == "decimal(18, 8)"
        )


# ------------------------------------------------------------------ drift, pause


def test_drift_is_repaired(kube: dict[str, Any], cluster: Cluster, iceberg_ns: str) -> None:
    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        apply_all(cluster, sample(None, iceberg_ns))
        eventually(lambda: all_children(cluster), what="the pipeline's children")
        before = uid(cluster.deployments()["binance-ingestor"])

        # A child deleted by hand comes back.
        cluster.apps.delete_namespaced_deployment("binance-ingestor", cluster.ns)
        eventually(
            lambda: (d := cluster.deployments().get("binance-ingestor")) and uid(d) != before,
            timeout=30,
            what="Deployment recreated",
        )
        app_uid = uid(cluster.spark_apps()["crypto-silver"])
        cluster.co.delete_namespaced_custom_object(
            *SPARK[:2], cluster.ns, SPARK[2], "crypto-silver"
        )
        eventually(
            lambda: (a := cluster.spark_app("crypto-silver")) and uid(a) != app_uid,
            timeout=30,
            what="SparkApplication recreated",
        )
        cluster.core.delete_namespaced_config_map("crypto-declaration", cluster.ns)
        eventually(
            lambda: "crypto-declaration" in cluster.configmaps(),
            timeout=30,
            what="ConfigMap recreated",
        )
        table_uid = uid(cluster.get("IcebergTable", "crypto-silver-dlq-trades"))
        cluster.delete("IcebergTable", "crypto-silver-dlq-trades")
        eventually(
            lambda: (t := cluster.get("IcebergTable", "crypto-silver-dlq-trades"))
            and uid(t) != table_uid,
            timeout=30,
            what="IcebergTable recreated",
        )

        # A field edited by hand (another field manager) is put back.
        cluster.apps.patch_namespaced_deployment(
            "kraken-ingestor",
            cluster.ns,
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "ingestor", "args": ["ingest", "kraken"]}]}
                    }
                }
            },
            field_manager="someone",
        )
        eventually(
            lambda: "--symbols" in container_args(cluster, "kraken-ingestor"),
            timeout=30,
            what="Deployment args restored",
        )


def test_paused_resources_are_left_alone(
    kube: dict[str, Any], cluster: Cluster, iceberg_ns: str
) -> None:
    paused = {"metadata": {"annotations": {"k2.io/paused": "true"}}}
    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        apply_all(cluster, sample(None, iceberg_ns))
        eventually(lambda: all_children(cluster), what="the pipeline's children")
        bronze = uid(cluster.spark_apps()["crypto-bronze"])

        cluster.patch("MedallionPipeline", "crypto", paused)
        cluster.patch("ExchangeFeed", "kraken", paused)
        for kind, name in (("MedallionPipeline", "crypto"), ("ExchangeFeed", "kraken")):
            eventually(
                lambda k=kind, n=name: (condition(cluster.get(k, n), "Progressing") or {}).get(
                    "reason"
                )
                == "Paused",
                what=f"{kind} Paused",
            )
        cluster.co.delete_namespaced_custom_object(*SPARK[:2], cluster.ns, SPARK[2], "crypto-gold")
        cluster.apps.delete_namespaced_deployment("kraken-ingestor", cluster.ns)
        cluster.patch(
            "MedallionPipeline", "crypto", {"spec": {"jobs": {"bronze": {"trigger": "3 seconds"}}}}
        )
        cluster.patch("ExchangeFeed", "kraken", {"spec": {"symbols": ["BTC/USD"]}})
        time.sleep(2 * RESYNC + 2)  # timers and child events came and went
        assert "crypto-gold" not in cluster.spark_apps()
        assert uid(cluster.spark_apps()["crypto-bronze"]) == bronze
        assert "kraken-ingestor" not in cluster.deployments()
        assert "binance-ingestor" in cluster.deployments()  # nothing was deleted

        unpause = {"metadata": {"annotations": {"k2.io/paused": None}}}
        cluster.patch("MedallionPipeline", "crypto", unpause)
        cluster.patch("ExchangeFeed", "kraken", unpause)
        eventually(
            lambda: "crypto-gold" in cluster.spark_apps(), what="gold recreated after unpause"
        )
        eventually(
            lambda: uid(cluster.spark_apps()["crypto-bronze"]) != bronze, what="bronze restarted"
        )
        eventually(
            lambda: container_args(cluster, "kraken-ingestor")[3] == "BTC/USD",
            what="kraken Deployment recreated with the new symbols",
        )


# ------------------------------------------------------------------ deletion


def test_deletion_garbage_collects_children_and_honours_the_deletion_policy(
    kube: dict[str, Any], cluster: Cluster, catalog: dict[str, Any], iceberg_ns: str
) -> None:
    kept = {
        "apiVersion": f"{G}/{V}",
        "kind": "IcebergTable",
        "metadata": {"name": "kept"},
        "spec": {
            "catalog": {"uri": catalog["uri"], "warehouse": catalog["warehouse"]},
            "namespace": iceberg_ns,
            "name": "kept",
            "schema": {"columns": [{"name": "id", "type": "long"}]},
        },
    }
    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        apply_all(cluster, sample(catalog, iceberg_ns, tables={"deletionPolicy": "Delete"}))
        cluster.create(kept)
        eventually(lambda: all_children(cluster), what="the pipeline's children")
        eventually(lambda: tables_ready(cluster), timeout=90, what="tables Ready")
        eventually(lambda: is_true(cluster.get("IcebergTable", "kept"), "Ready"), what="kept Ready")
        bronze = load_table(catalog, f"{iceberg_ns}.bronze_crypto_trades")
        location = Path(urlparse(bronze.location()).path)
        assert location.is_dir()

        # Delete policy: the pipeline's tables are dropped and purged once GC deletes them.
        cluster.delete("MedallionPipeline", "crypto")

        def tables_left() -> object:
            return [(t["metadata"]["name"], t["metadata"].get("deletionTimestamp"), t["metadata"].get("finalizers"),
                     t.get("status", {}).get("conditions")) for t in cluster.list("IcebergTable")]  # fmt: skip

        eventually(
            lambda: {t["metadata"]["name"] for t in cluster.list("IcebergTable")} == {"kept"},
            timeout=120,
            what="child IcebergTables gone",
            describe=tables_left,
        )
        eventually(
            lambda: not cluster.spark_apps(),
            timeout=120,
            what="SparkApplications garbage-collected",
        )
        eventually(
            lambda: not cluster.configmaps(), timeout=120, what="ConfigMap garbage-collected"
        )
        for name in ("bronze_crypto_trades", "silver_binance_trades", "gold_crypto_trades"):
            assert not table_exists(catalog, f"{iceberg_ns}.{name}")
        assert not location.exists()
        assert {t["metadata"]["name"] for t in cluster.list("IcebergTable")} == {"kept"}

        # Retain (the default): the resource goes, the table stays.
        cluster.delete("IcebergTable", "kept")
        eventually(
            lambda: cluster.get("IcebergTable", "kept") is None, what="kept resource deleted"
        )
        assert table_exists(catalog, f"{iceberg_ns}.kept")

        # A feed's Deployment and Service go with it.
        cluster.delete("ExchangeFeed", "kraken")
        # 120 s like the waits above: the feed's finalizer is released by the operator first,
        # then the controller-manager's GC deletes the children (slow on a loaded machine).
        eventually(
            lambda: "kraken-ingestor" not in cluster.deployments(),
            timeout=120,
            what="Deployment garbage-collected",
            describe=lambda: cluster.get("ExchangeFeed", "kraken"),
        )
        eventually(
            lambda: "kraken-ingestor" not in cluster.services(),
            timeout=120,
            what="Service garbage-collected",
        )
        assert "binance-ingestor" in cluster.deployments()


# ------------------------------------------------------------------ restarts


def test_operator_restart_mid_reconcile_converges(
    kube: dict[str, Any], cluster: Cluster, catalog: dict[str, Any], iceberg_ns: str
) -> None:
    apply_all(cluster, sample(catalog, iceberg_ns))
    # Stop the operator as soon as it has started creating children.
    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        eventually(
            lambda: cluster.deployments() or cluster.spark_apps() or cluster.list("IcebergTable"),
            what="a child",
        )
    partial = (
        len(cluster.deployments()),
        len(cluster.spark_apps()),
        len(cluster.list("IcebergTable")),
    )

    # While it is down, the declaration changes.
    cluster.patch(
        "ExchangeFeed", "kraken", {"spec": {"symbols": ["BTC/USD", "ETH/USD", "SOL/USD"]}}
    )
    cluster.patch(
        "MedallionPipeline", "crypto", {"spec": {"jobs": {"gold": {"trigger": "20 seconds"}}}}
    )

    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        eventually(lambda: all_children(cluster), what="all children after the restart")
        eventually(lambda: tables_ready(cluster), timeout=90, what="tables Ready after the restart")
        eventually(
            lambda: "BTC/USD,ETH/USD,SOL/USD" in container_args(cluster, "kraken-ingestor"),
            what="the change made while down",
        )
        eventually(
            lambda: (p := cluster.get("MedallionPipeline", "crypto"))
            and p["status"].get("observedGeneration") == 2
            and p["status"].get("tablesReady") == "5/5",
            what="pipeline status at generation 2",
        )
        gold = cluster.spark_app("crypto-gold")
        assert (
            gold
            and "20 seconds" in cluster.configmaps()["crypto-declaration"].data["pipeline.yaml"]
        )
    print(f"first run stopped after (deployments, applications, tables) = {partial}")


def test_feed_topic_is_created_when_kafka_is_reachable(
    kube: dict[str, Any], cluster: Cluster, kafka: dict[str, Any]
) -> None:
    from confluent_kafka.admin import AdminClient

    topic = f"k8s.trades.{uuid.uuid4().hex[:8]}"
    feed = {
        "apiVersion": f"{G}/{V}",
        "kind": "ExchangeFeed",
        "metadata": {"name": "binance"},
        "spec": {
            "exchange": "binance",
            "symbols": ["BTC/USDT"],
            "topic": topic,
            "kafka": {"bootstrapServers": kafka["bootstrap_servers"]},
            "topicConfig": {"partitions": 2},
        },
    }
    with running_operator(kube["kubeconfig"], namespaces=[cluster.ns]):
        cluster.create(feed)
        f = eventually(
            lambda: (x := cluster.get("ExchangeFeed", "binance"))
            and (x.get("status") or {}).get("topic", {}).get("state") in ("Created", "Exists")
            and x,
            what="topic created",
        )
        assert f["status"]["topic"]["partitions"] == 2
        assert any(e.reason == "TopicCreated" for e in cluster.events("binance"))
    md = AdminClient({"bootstrap.servers": kafka["bootstrap_servers"]}).list_topics(timeout=10)
    assert len(md.topics[topic].partitions) == 2
