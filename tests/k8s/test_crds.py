"""The K2 CRDs on a real kube-apiserver: they install, the samples are accepted, and every
file in examples/invalid is rejected with a readable message (OpenAPI schema + CEL rules)."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from k2.contracts.tables import ALL_TABLES
from k2.stack.kube import install_crds
from k2_operator import crd_paths
from k2_operator.render import pipeline_tables, render_pipeline
from k2_operator.testing import load_docs

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
INVALID = ROOT / "examples" / "invalid"
SAMPLE = ROOT / "examples" / "pipeline.yaml"
PLURALS = {
    "ExchangeFeed": "exchangefeeds",
    "MedallionPipeline": "medallionpipelines",
    "IcebergTable": "icebergtables",
}


@pytest.fixture(scope="module")
def k2_crds(kube_client: Any) -> list[str]:
    return install_crds(kube_client, crd_paths(), field_manager="k2-tests")


@pytest.fixture
def ns(kube_client: Any, k2_crds: list[str]) -> Iterator[str]:
    name = f"k2-crds-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(kube_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def api(kube_client: Any) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube_client)


def create(kube_client: Any, ns: str, doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = api(kube_client).create_namespaced_custom_object(
        "k2.io", "v1alpha1", ns, PLURALS[doc["kind"]], doc, field_validation="Strict"
    )
    return result


def replace(kube_client: Any, ns: str, doc: dict[str, Any]) -> dict[str, Any]:
    plural = PLURALS[doc["kind"]]
    name = doc["metadata"]["name"]
    current = api(kube_client).get_namespaced_custom_object("k2.io", "v1alpha1", ns, plural, name)
    doc = copy.deepcopy(doc)
    doc["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    result: dict[str, Any] = api(kube_client).replace_namespaced_custom_object(
        "k2.io", "v1alpha1", ns, plural, name, doc, field_validation="Strict"
    )
    return result


def rejection(exc: ApiException) -> str:
    return str(json.loads(exc.body or "{}").get("message", ""))


def test_crds_install_and_are_established(k2_crds: list[str], kube_client: Any) -> None:
    assert sorted(k2_crds) == [
        "exchangefeeds.k2.io",
        "icebergtables.k2.io",
        "medallionpipelines.k2.io",
    ]
    # Discovery serves them with their short names and the k2 category.
    resources = k8s.CustomObjectsApi(kube_client).get_api_resources("k2.io", "v1alpha1").resources
    by_kind = {r.kind: r for r in resources if "/" not in r.name}
    assert {k: r.short_names for k, r in by_kind.items()} == {
        "ExchangeFeed": ["xf"],
        "MedallionPipeline": ["mp"],
        "IcebergTable": ["ict"],
    }
    assert all(r.categories == ["k2"] for r in by_kind.values())
    assert {r.name for r in resources if r.name.endswith("/status")} == {
        f"{p}/status" for p in PLURALS.values()
    }


def test_sample_declaration_is_accepted_with_defaults(kube_client: Any, ns: str) -> None:
    for doc in load_docs(SAMPLE):
        create(kube_client, ns, doc)
    feed = api(kube_client).get_namespaced_custom_object(
        "k2.io", "v1alpha1", ns, "exchangefeeds", "binance"
    )
    assert feed["spec"]["replicas"] == 1 and feed["spec"]["metricsPort"] == 9100
    assert feed["spec"]["topicConfig"] == {"partitions": 3, "replicationFactor": 1}
    pipe = api(kube_client).get_namespaced_custom_object(
        "k2.io", "v1alpha1", ns, "medallionpipelines", "crypto"
    )
    assert pipe["spec"]["tables"] == {"deletionPolicy": "Retain"}
    assert pipe["spec"]["resetCheckpoints"] is False
    assert pipe["spec"]["spark"]["image"] == "k2/spark-jobs:0.1.0"


def test_contract_tables_and_rendered_children_are_accepted(kube_client: Any, ns: str) -> None:
    for t in ALL_TABLES:
        name = t.name.replace("_", "-")
        create(kube_client, ns, {"apiVersion": "k2.io/v1alpha1", "kind": "IcebergTable",
                                 "metadata": {"name": name}, "spec": t.to_cr_spec()})  # fmt: skip
    got = api(kube_client).get_namespaced_custom_object(
        "k2.io", "v1alpha1", ns, "icebergtables", "gold-crypto-trades"
    )
    assert got["spec"]["deletionPolicy"] == "Retain"
    assert got["spec"]["catalog"] == {
        "uri": "http://iceberg-rest:8181",
        "warehouse": "s3://k2-warehouse/",
    }
    # exactly what the operator renders, with ownerReferences stripped (no owner here)
    docs = {d["metadata"]["name"]: d for d in load_docs(SAMPLE)}
    for d in docs.values():
        d["metadata"].update(uid=str(uuid.uuid4()), namespace=ns)
    children = render_pipeline(docs["crypto"], [docs["binance"], docs["kraken"]])
    assert len(children.tables) == len(pipeline_tables(children.pipeline)) == 5
    for t in children.tables:
        t = copy.deepcopy(t)
        del t["metadata"]["ownerReferences"]
        t["metadata"]["name"] = "rendered-" + t["metadata"]["name"]
        create(kube_client, ns, t)


def _invalid_examples() -> list[Path]:
    return sorted(INVALID.glob("*.yaml"))


def _header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line.lstrip("# ").partition(":")
        out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("path", _invalid_examples(), ids=lambda p: p.stem)
def test_invalid_resource_is_rejected_with_a_readable_message(
    kube_client: Any, ns: str, path: Path
) -> None:
    expect = _header(path)["expect"]
    docs = load_docs(path)
    with pytest.raises(ApiException) as err:
        if len(docs) == 1:
            create(kube_client, ns, docs[0])
        else:
            create(kube_client, ns, docs[0])  # the valid original
            replace(kube_client, ns, docs[1])  # the change that must be refused
    assert err.value.status in (400, 422), rejection(err.value)
    message = rejection(err.value)
    assert expect in message, f"{path.name}: {message}"
    # names the object and the field, not a stack of internals
    assert docs[0]["metadata"]["name"] in message or "unknown field" in message


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"name": "n", "type": "int"}, {"name": "n", "type": "long"}),
        ({"name": "n", "type": "float"}, {"name": "n", "type": "double"}),
        ({"name": "n", "type": "decimal(18,8)"}, {"name": "n", "type": "decimal(38,8)"}),
        (
            {"name": "n", "type": "string", "required": True},
            {"name": "n", "type": "string", "required": False},
        ),
    ],
)
def test_allowed_table_evolution_is_accepted(
    kube_client: Any, ns: str, before: dict[str, Any], after: dict[str, Any]
) -> None:
    doc = {"apiVersion": "k2.io/v1alpha1", "kind": "IcebergTable", "metadata": {"name": "evolving"},
           "spec": {"name": "evolving", "schema": {"columns": [{"name": "id", "type": "string"}, before]}}}  # fmt: skip
    create(kube_client, ns, doc)
    doc["spec"]["schema"]["columns"] = [
        doc["spec"]["schema"]["columns"][0],
        after,
        {"name": "venue", "type": "string"},
    ]
    got = replace(kube_client, ns, doc)
    assert [c["name"] for c in got["spec"]["schema"]["columns"]] == ["id", "n", "venue"]


def test_printer_columns(kube_client: Any, ns: str) -> None:
    for doc in load_docs(SAMPLE):
        create(kube_client, ns, doc)
    # what `kubectl get xf` prints: the server renders the Table
    table = kube_client.call_api(
        *kube_client.param_serialize(
            "GET",
            f"/apis/k2.io/v1alpha1/namespaces/{ns}/exchangefeeds",
            header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
            auth_settings=["BearerToken"],
        )
    )
    table.read()
    body = json.loads(table.data)
    assert [c["name"] for c in body["columnDefinitions"]][:5] == [
        "Name",
        "Exchange",
        "Symbols",
        "Topic",
        "Ready",
    ]
    rows = {r["cells"][0]: r["cells"] for r in body["rows"]}
    assert rows["binance"][1] == "binance"
