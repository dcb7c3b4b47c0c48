"""The operator's RBAC (operator/manifests/rbac.yaml) is enough, and no more than it needs:
the operator runs as its ServiceAccount (a TokenRequest token), cluster-wide, through a
pipeline's whole life, and the API server is asked what that account may not do."""

from __future__ import annotations

import base64
import copy
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from k2.stack.kube import install_crds
from k2_operator import MANIFESTS_DIR, crd_paths
from k2_operator.testing import condition, eventually, load_docs, running_operator

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "pipeline.yaml"
SA, SA_NS = "k2-operator", "k2-system"
USER = f"system:serviceaccount:{SA_NS}:{SA}"


def _apply_rbac(api_client: Any) -> None:
    core, rbac = k8s.CoreV1Api(api_client), k8s.RbacAuthorizationV1Api(api_client)
    try:
        core.create_namespace({"metadata": {"name": SA_NS}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    for doc in load_docs(MANIFESTS_DIR / "rbac.yaml"):
        kind, name = doc["kind"], doc["metadata"]["name"]
        create, replace = {
            "ServiceAccount": (
                lambda d: core.create_namespaced_service_account(SA_NS, d),
                lambda d, n=name: core.replace_namespaced_service_account(n, SA_NS, d),
            ),
            "ClusterRole": (
                rbac.create_cluster_role,
                lambda d, n=name: rbac.replace_cluster_role(n, d),
            ),
            "ClusterRoleBinding": (
                rbac.create_cluster_role_binding,
                lambda d, n=name: rbac.replace_cluster_role_binding(n, d),
            ),
        }[kind]
        try:
            create(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            replace(doc)


@pytest.fixture(scope="module")
def operator_kubeconfig(
    kube: dict[str, Any],
    kube_client: Any,
    spark_crds: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount."""
    install_crds(kube_client, crd_paths(), field_manager="k2-tests")
    _apply_rbac(kube_client)
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    token = (
        k8s.CoreV1Api(kube_client)
        .create_namespaced_service_account_token(SA, SA_NS, request)
        .status.token
    )
    ca = base64.b64encode(Path(kube["ca_file"]).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "k2", "cluster": {"server": kube["server"], "certificate-authority-data": ca}}
        ],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": "k2", "context": {"cluster": "k2", "user": SA}}],
        "current-context": "k2",
    }
    path = tmp_path_factory.mktemp("sa") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def ns(kube_client: Any, operator_kubeconfig: Path) -> Iterator[str]:
    name = f"k2-rbac-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(kube_client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    co = k8s.CustomObjectsApi(kube_client)
    for plural in ("exchangefeeds", "medallionpipelines", "icebergtables"):
        for obj in co.list_namespaced_custom_object("k2.io", "v1alpha1", name, plural)["items"]:
            try:
                co.patch_namespaced_custom_object(
                    "k2.io",
                    "v1alpha1",
                    name,
                    plural,
                    obj["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
    core.delete_namespace(name)


def allowed(
    api_client: Any, verb: str, group: str, resource: str, namespace: str = "default"
) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": USER,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{SA_NS}",
                "system:authenticated",
            ],
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": resource,
                "namespace": namespace,
            },
        },
    }
    result = k8s.AuthorizationV1Api(api_client).create_subject_access_review(review)
    return bool(result.status.allowed)


@pytest.mark.parametrize(
    ("verb", "group", "resource"),
    [
        ("get", "", "secrets"),
        ("list", "", "secrets"),
        ("create", "", "pods"),
        ("delete", "apps", "deployments"),
        ("delete", "", "services"),
        ("delete", "", "configmaps"),
        ("update", "apps", "deployments"),
        ("create", "k2.io", "medallionpipelines"),
        ("delete", "k2.io", "exchangefeeds"),
        ("patch", "rbac.authorization.k8s.io", "clusterroles"),
        ("create", "apps", "statefulsets"),
        ("create", "batch", "jobs"),
        ("delete", "", "namespaces"),
    ],
)
def test_the_operator_may_not(
    kube_client: Any, operator_kubeconfig: Path, verb: str, group: str, resource: str
) -> None:
    assert not allowed(kube_client, verb, group, resource), f"{USER} may {verb} {group}/{resource}"


@pytest.mark.parametrize(
    ("verb", "group", "resource"),
    [
        ("patch", "apps", "deployments"),
        ("create", "sparkoperator.k8s.io", "sparkapplications"),
        ("delete", "sparkoperator.k8s.io", "sparkapplications"),
        ("watch", "batch", "cronjobs"),
        ("delete", "batch", "cronjobs"),
        ("patch", "k2.io", "icebergtables/status"),
        ("create", "", "events"),
    ],
)
def test_the_operator_may(
    kube_client: Any, operator_kubeconfig: Path, verb: str, group: str, resource: str
) -> None:
    assert allowed(kube_client, verb, group, resource)


def test_operator_runs_a_pipeline_lifecycle_as_its_service_account(
    kube_client: Any,
    operator_kubeconfig: Path,
    ns: str,
    catalog: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    co, apps, core, batch = (
        k8s.CustomObjectsApi(kube_client),
        k8s.AppsV1Api(kube_client),
        k8s.CoreV1Api(kube_client),
        k8s.BatchV1Api(kube_client),
    )
    iceberg_ns = f"rbac_{uuid.uuid4().hex[:8]}"
    plurals = {"ExchangeFeed": "exchangefeeds", "MedallionPipeline": "medallionpipelines"}

    def pipeline() -> dict[str, Any]:
        result: dict[str, Any] = co.get_namespaced_custom_object(
            "k2.io", "v1alpha1", ns, "medallionpipelines", "crypto"
        )
        return result

    def spark_apps() -> dict[str, Any]:
        items = co.list_namespaced_custom_object(
            "sparkoperator.k8s.io", "v1beta2", ns, "sparkapplications"
        )["items"]
        return {a["metadata"]["name"]: a for a in items}

    def patch_pipeline(patch: dict[str, Any]) -> None:
        co.patch_namespaced_custom_object(
            "k2.io", "v1alpha1", ns, "medallionpipelines", "crypto", patch
        )

    def feed() -> dict[str, Any]:
        result: dict[str, Any] = co.get_namespaced_custom_object(
            "k2.io", "v1alpha1", ns, "exchangefeeds", "binance"
        )
        return result

    def cron_jobs() -> dict[str, Any]:
        return {c.metadata.name: c for c in batch.list_namespaced_cron_job(ns).items}

    def compaction_schedule() -> str | None:
        cron = cron_jobs().get("crypto-compact-gold")
        return cron.spec.schedule if cron is not None else None

    def table_names() -> set[str]:
        items = co.list_namespaced_custom_object("k2.io", "v1alpha1", ns, "icebergtables")["items"]
        return {t["metadata"]["name"] for t in items}

    caplog.set_level(logging.INFO)
    with running_operator(operator_kubeconfig):  # cluster-wide, as the chart runs it by default
        from k2_operator.handlers import context

        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        me = context().kube.request(
            "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review
        )
        assert me["status"]["userInfo"]["username"] == USER
        for doc in load_docs(SAMPLE):
            doc = copy.deepcopy(doc)
            if doc["kind"] == "MedallionPipeline":
                doc["spec"].update(
                    namespace=iceberg_ns,
                    catalog={"uri": catalog["uri"], "warehouse": catalog["warehouse"]},
                    tables={"deletionPolicy": "Delete"},
                )
            co.create_namespaced_custom_object("k2.io", "v1alpha1", ns, plurals[doc["kind"]], doc)

        eventually(
            lambda: pipeline().get("status", {}).get("tablesReady") == "5/5"
            and len(spark_apps()) == 3,
            timeout=120,
            what="tables Ready and applications created",
            describe=lambda: pipeline().get("status"),
        )
        # the feeds are reconciled by their own handlers, independently of the pipeline's
        eventually(
            lambda: {d.metadata.name for d in apps.list_namespaced_deployment(ns).items}
            == {"binance-ingestor", "kraken-ingestor"},
            what="both ingestor Deployments",
        )
        eventually(
            lambda: condition(feed(), "Progressing") is not None,
            what="the feed's Progressing condition",
            describe=lambda: feed().get("status"),
        )
        assert any(e.reason == "Created" for e in core.list_namespaced_event(ns).items)

        # gold compaction: a CronJob on the declared schedule, reading the declaration ConfigMap
        eventually(
            lambda: compaction_schedule() == "*/10 * * * *",
            what="the compaction CronJob on the sample's schedule",
            describe=lambda: sorted(cron_jobs()),
        )
        cron = cron_jobs()["crypto-compact-gold"]
        eventually(
            lambda: (pipeline().get("status") or {}).get("compaction", {}).get("cronJob")
            == "crypto-compact-gold",
            what="the pipeline's status names its compaction CronJob",
            describe=lambda: pipeline().get("status"),
        )
        assert pipeline()["status"]["compaction"]["schedule"] == "*/10 * * * *"
        assert cron.spec.concurrency_policy == "Forbid"
        assert [r.kind for r in cron.metadata.owner_references] == ["MedallionPipeline"]
        (container,) = cron.spec.job_template.spec.template.spec.containers
        assert container.args == ["tables", "compact", "-f", "/etc/k2/pipeline.yaml",
                                  "--grace", "15"]  # fmt: skip
        patch_pipeline({"spec": {"compaction": {"schedule": "7 * * * *"}}})
        eventually(
            lambda: compaction_schedule() == "7 * * * *",
            what="the CronJob's schedule follows spec.compaction.schedule",
            describe=compaction_schedule,
        )
        uid = cron_jobs()["crypto-compact-gold"].metadata.uid
        batch.delete_namespaced_cron_job("crypto-compact-gold", ns)  # drift repair
        eventually(
            lambda: (c := cron_jobs().get("crypto-compact-gold")) is not None
            and c.metadata.uid != uid
            and c.spec.schedule == "7 * * * *",
            what="the CronJob recreated",
        )
        patch_pipeline({"spec": {"compaction": {"enabled": False}}})
        eventually(
            lambda: not cron_jobs(),
            what="the CronJob pruned when compaction is disabled",
            describe=lambda: sorted(cron_jobs()),
        )
        eventually(
            lambda: "compaction" not in (pipeline().get("status") or {}),
            what="the compaction status gone with the CronJob",
            describe=lambda: pipeline().get("status"),
        )

        # restart (delete + create) and drift repair use the same permissions
        before = spark_apps()["crypto-gold"]["metadata"]["uid"]
        patch_pipeline({"spec": {"jobs": {"gold": {"trigger": "1 minute"}}}})
        eventually(lambda: spark_apps().get("crypto-gold", {}).get("metadata", {}).get("uid") not in (None, before),
                   what="gold restarted")  # fmt: skip
        apps.delete_namespaced_deployment("kraken-ingestor", ns)
        eventually(
            lambda: "kraken-ingestor"
            in {d.metadata.name for d in apps.list_namespaced_deployment(ns).items},
            what="Deployment recreated",
        )

        # deletion: the table finalizer drops the tables (Delete policy)
        co.delete_namespaced_custom_object("k2.io", "v1alpha1", ns, "medallionpipelines", "crypto")
        eventually(
            lambda: not table_names(),
            timeout=120,
            what="IcebergTables finalized",
            describe=table_names,
        )

    from k2.catalog import load_catalog

    assert load_catalog(catalog["uri"], catalog["warehouse"]).list_tables(iceberg_ns) == []
    denied = [
        m
        for r in caplog.records
        if ("forbidden" in (m := r.getMessage()).lower() or " 403" in m)
        and "is being terminated" not in m  # other tests' namespaces going away, not RBAC
    ]
    assert not denied, denied[:3]
