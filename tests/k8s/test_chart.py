"""charts/k2 and skaffold.yaml with the pinned helm and skaffold, against the local kube-apiserver.

The spark-operator chart is a pinned dependency (Chart.yaml) that cannot be downloaded here. helm
treats a declared-but-absent dependency as: `helm lint` -> a warning (exit 0, fails --strict);
`helm template`/`install` -> an error asking for `helm dependency build` (whatever the condition
says). So the chart is tested as a copy (`offline_chart`: links resolved, as `helm package` does)
with an empty stand-in `spark-operator` 2.5.2 subchart; spark-operator's own objects are its
chart's business, its CRDs come from ../shared/crds for the server-side dry run. The tests on the
real chart directory pin down the absent-dependency behaviour itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from k2.paths import REPO_ROOT
from k2.stack import tools

CHART = REPO_ROOT / "charts" / "k2"
ENVIRONMENTS = CHART / "environments"
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)
EXTERNAL = [
    "kafka.external.bootstrapServers=kafka.example.svc:9092",
    "schemaRegistry.external.url=http://registry.example.svc:8080/apis/ccompat/v7",
    "icebergRest.external.uri=http://catalog.example.svc:8181",
    "objectStore.endpoint=https://s3.example.com",
    "objectStore.existingSecret=k2-s3",
]
COMPONENTS = {
    "operator": ["operator.enabled=false"],
    "kafka": ["kafka.enabled=false"],  # the registry keeps kafkasql, on the external Kafka
    "schemaRegistry": ["schemaRegistry.enabled=false"],
    "minio": ["minio.enabled=false"],
    "icebergRest": ["icebergRest.enabled=false"],
    "spark-operator": ["spark-operator.enabled=false"],
    "spark": ["spark.serviceAccount.create=false"],
}
# name -> (values files, --set values)
CASES: dict[str, tuple[list[Path], list[str]]] = {
    "defaults": ([], []),
    "sample-pipeline": ([], ["samplePipeline.enabled=true", "samplePipeline.replay.enabled=true"]),
    **{f"env-{p.stem}": ([p], []) for p in sorted(ENVIRONMENTS.glob("*.yaml"))},
    **{f"without-{name}": ([], [*EXTERNAL, *sets]) for name, sets in COMPONENTS.items()},
    "everything-off": ([], [*EXTERNAL, *(s for sets in COMPONENTS.values() for s in sets)]),
}


def docs_of(text: str) -> list[dict[str, Any]]:
    """The objects of a YAML stream (skaffold render starts with a line of its own: skipped)."""
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


@pytest.fixture(scope="session")
def helm() -> str:
    return str(tools.tool_path("helm"))


@pytest.fixture(scope="session")
def kubectl() -> str:
    return str(tools.tool_path("kubectl"))


@pytest.fixture(scope="session")
def offline_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """charts/k2 with its links resolved and an empty stand-in for the spark-operator chart."""
    dest = tmp_path_factory.mktemp("chart") / "k2"
    shutil.copytree(
        CHART, dest, symlinks=False, ignore=shutil.ignore_patterns("charts", "Chart.lock")
    )
    dep = next(
        d
        for d in yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
        if d["name"] == "spark-operator"
    )
    stand_in = dest / "charts" / "spark-operator"
    stand_in.mkdir(parents=True)
    (stand_in / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "spark-operator",
                "version": dep["version"],
                "description": "Offline stand-in for kubeflow's spark-operator chart (K2 chart tests only)",
            }
        )
    )
    return dest


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def value_args(files: list[Path], sets: list[str]) -> list[str]:
    args: list[str] = []
    for f in files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    return args


def render(helm: str, chart: Path, namespace: str = "k2", *extra: str) -> list[dict[str, Any]]:
    out = run_helm(helm, "template", "k2", str(chart), "--namespace", namespace, *extra).stdout
    return docs_of(out)


# ---------------------------------------------------------------- the absent dependency


def test_real_chart_lints_with_only_the_missing_dependency_warning(helm: str) -> None:
    if list((CHART / "charts").glob("spark-operator-*.tgz")):
        pytest.skip("charts/k2/charts holds the downloaded dependency (make chart-deps)")
    proc = run_helm(helm, "lint", str(CHART))
    warnings = [
        line for line in proc.stdout.splitlines() if line.startswith(("[WARNING]", "[ERROR]"))
    ]
    assert warnings == [
        f"[WARNING] {CHART}: chart directory is missing these dependencies: spark-operator"
    ]
    strict = run_helm(helm, "lint", "--strict", str(CHART), check=False)
    assert strict.returncode != 0


def test_real_chart_template_asks_for_dependency_build(helm: str) -> None:
    if list((CHART / "charts").glob("spark-operator-*.tgz")):
        pytest.skip("charts/k2/charts holds the downloaded dependency (make chart-deps)")
    proc = run_helm(
        helm, "template", "k2", str(CHART), "--set", "spark-operator.enabled=false", check=False
    )
    assert proc.returncode != 0
    assert "helm dependency build" in proc.stderr and "spark-operator" in proc.stderr


# ---------------------------------------------------------------- lint, CRDs, schema


@pytest.mark.parametrize(
    "values",
    [[], *([p] for p in sorted(ENVIRONMENTS.glob("*.yaml")))],
    ids=lambda v: f"{v[0].stem}-values" if v else "defaults",
)
def test_lint_strict_is_clean(helm: str, offline_chart: Path, values: list[Path]) -> None:
    proc = run_helm(helm, "lint", "--strict", str(offline_chart), *value_args(values, []))
    problems = [
        line for line in proc.stdout.splitlines() if line.startswith(("[WARNING]", "[ERROR]"))
    ]
    assert problems == [], proc.stdout


def test_chart_installs_exactly_the_repository_crds(helm: str, offline_chart: Path) -> None:
    shown = run_helm(helm, "show", "crds", str(offline_chart)).stdout
    repo = sorted((REPO_ROOT / "crds").glob("k2.io_*.yaml"))
    assert len(repo) == 3
    for path in repo:
        assert path.read_text().strip() in shown, (
            f"{path.name} differs from what the chart installs"
        )
    # installed one file at a time; `helm template --include-crds` shows them as documents
    rendered = [
        d
        for d in docs_of(
            run_helm(helm, "template", "k2", str(offline_chart), "--include-crds").stdout
        )
        if d["kind"] == "CustomResourceDefinition"
    ]
    assert sorted(rendered, key=lambda d: d["metadata"]["name"]) == [
        yaml.safe_load(p.read_text()) for p in repo
    ]


def test_schema_rejects_a_wrong_type(helm: str, offline_chart: Path) -> None:
    for bad in (
        "kafka.replicas=three",
        "operator.enabled=maybe",
        "minio.port=99999",
        "kafak.enabled=false",
    ):
        proc = run_helm(helm, "template", "k2", str(offline_chart), "--set", bad, check=False)
        assert proc.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_external_endpoints_are_required_when_a_service_is_off(
    helm: str, offline_chart: Path
) -> None:
    proc = run_helm(
        helm, "template", "k2", str(offline_chart), "--set", "kafka.enabled=false", check=False
    )
    assert proc.returncode != 0 and "kafka.external.bootstrapServers" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- rendered objects


@pytest.mark.parametrize("case", sorted(CASES))
def test_renders_with_standard_labels(helm: str, offline_chart: Path, case: str) -> None:
    files, sets = CASES[case]
    objects = render(helm, offline_chart, "k2", *value_args(files, sets))
    assert objects or case == "everything-off"
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == "k2"
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            pod = obj["spec"]["template"]
            assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "k2"
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
            for c in pod["spec"]["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
                assert c.get("resources", {}).get("requests"), (
                    f"{obj['metadata']['name']}/{c['name']}: no requests"
                )
                assert ":" in c["image"] and not c["image"].endswith(":latest")


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {f"{o['kind']}/{o['metadata']['name']}" for o in objects}


def test_components_switch_off(helm: str, offline_chart: Path) -> None:
    full = kinds(render(helm, offline_chart))
    assert {
        "Deployment/k2-operator",
        "StatefulSet/k2-kafka",
        "Deployment/k2-schema-registry",
        "StatefulSet/k2-minio",
        "Deployment/k2-iceberg-rest",
        "ServiceAccount/spark",
    } <= full
    files, sets = CASES["everything-off"]
    assert kinds(render(helm, offline_chart, "k2", *value_args(files, sets))) == set()


def test_sample_pipeline_points_at_the_release(helm: str, offline_chart: Path) -> None:
    files, sets = CASES["sample-pipeline"]
    objects = render(helm, offline_chart, "team-a", *value_args(files, sets))
    example = docs_of((REPO_ROOT / "examples" / "pipeline.yaml").read_text())
    crs = [o for o in objects if o["apiVersion"] == "k2.io/v1alpha1"]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in crs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in example
    )
    pipeline = next(o for o in crs if o["kind"] == "MedallionPipeline")
    spec = pipeline["spec"]
    assert spec["kafka"]["bootstrapServers"] == "k2-kafka:9092"
    assert spec["kafka"]["schemaRegistryUrl"] == "http://k2-schema-registry:8080/apis/ccompat/v7"
    assert spec["catalog"]["uri"] == "http://k2-iceberg-rest:8181"
    assert spec["spark"]["image"] == "k2-spark:0.1.0" and spec["spark"]["serviceAccount"] == "spark"
    assert spec["spark"]["conf"]["spark.hadoop.fs.s3a.endpoint"] == "http://k2-minio:9000"
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for feed in (o for o in crs if o["kind"] == "ExchangeFeed"):
        host = re.match(r"^ws://([^:/]+):\d+/", feed["spec"]["endpoint"])
        assert host and host.group(1) in services, feed["spec"]["endpoint"]
    assert all(o["metadata"]["namespace"] == "team-a" for o in crs)


def _env(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            for c in obj["spec"]["template"]["spec"]["containers"]:
                out += [(f"{obj['metadata']['name']}/{c['name']}", e) for e in c.get("env", [])]
    return out


def test_credentials_only_by_secret_reference(helm: str, offline_chart: Path) -> None:
    files, sets = CASES["sample-pipeline"]
    objects = render(helm, offline_chart, "k2", *value_args(files, sets))
    for where, env in _env(objects):
        if re.search(r"SECRET|PASSWORD|ACCESS_KEY|TOKEN|ROOT_USER", env["name"]):
            assert "value" not in env and "secretKeyRef" in env["valueFrom"], (
                f"{where}: {env['name']} not by reference"
            )
    secret = next(o for o in objects if o["kind"] == "Secret")
    material = {v for v in secret["data"].values()}
    crs = json.dumps([o for o in objects if o["apiVersion"] == "k2.io/v1alpha1"])
    assert not re.search(r"(?i)password|secret|accesskey|access-key", crs)
    assert not any(m in crs for m in material)


def test_existing_secrets_are_used_not_created(helm: str, offline_chart: Path) -> None:
    objects = render(helm, offline_chart, "k2", "--set", "minio.auth.existingSecret=my-minio")
    assert not [o for o in objects if o["kind"] == "Secret"]
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for _, e in _env(objects)
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {"my-minio"}
    objects = render(helm, offline_chart, "k2", *value_args(*CASES["without-minio"]))
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for _, e in _env(objects)
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {"k2-s3"}


def _operator_args(objects: list[dict[str, Any]]) -> list[str]:
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "k2-operator"
    )
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def test_operator_gets_the_s3_credentials_secret(helm: str, offline_chart: Path) -> None:
    """The operator hands the object store's Secret (name and keys) to its Spark jobs."""
    s3_args = [
        "--s3-credentials-secret=k2-minio",
        "--s3-access-key-id-key=rootUser",
        "--s3-secret-access-key-key=rootPassword",
    ]
    args = _operator_args(render(helm, offline_chart))
    assert [a for a in args if a.startswith("--s3-")] == s3_args
    args = _operator_args(render(helm, offline_chart, "k2", "--set", "minio.auth.existingSecret=m"))
    assert "--s3-credentials-secret=m" in args
    args = _operator_args(render(helm, offline_chart, "k2", *value_args(*CASES["without-minio"])))
    assert [a for a in args if a.startswith("--s3-")] == [
        "--s3-credentials-secret=k2-s3",
        "--s3-access-key-id-key=accessKeyId",
        "--s3-secret-access-key-key=secretAccessKey",
    ]
    args = _operator_args(
        render(helm, offline_chart, "k2", "--set", "operator.s3CredentialsSecret=spark-s3")
    )
    assert [a for a in args if a.startswith("--s3-")] == ["--s3-credentials-secret=spark-s3"]


def test_kafka_quorum_scales(helm: str, offline_chart: Path) -> None:
    objects = render(helm, offline_chart, "k2", "--set", "kafka.replicas=3")
    sts = next(
        o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "k2-kafka"
    )
    env = {
        e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == ",".join(
        f"{i}@k2-kafka-{i}.k2-kafka-headless.k2.svc:9093" for i in range(3)
    )
    assert (
        env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    )


def test_notes_tell_what_to_do_next(helm: str, offline_chart: Path, kube: dict[str, Any]) -> None:
    proc = run_helm(
        helm,
        "install",
        "k2",
        str(offline_chart),
        "--namespace",
        "k2",
        "--dry-run=client",
        "--kubeconfig",
        kube["kubeconfig"],
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "k2-kafka:9092" in notes and "kubectl -n k2 apply -f examples/pipeline.yaml" in notes


# ---------------------------------------------------------------- the operator: entry point, RBAC


def operator_manifests() -> list[dict[str, Any]]:
    return [
        d
        for p in sorted((REPO_ROOT / "operator" / "manifests").glob("*.yaml"))
        for d in docs_of(p.read_text())
    ]


def rules_of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for o in objects if o["kind"] == kind for r in o.get("rules", [])]


def canonical_rules(rules: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rules)


def test_operator_runs_k2_operator_with_the_same_rbac(helm: str, offline_chart: Path) -> None:
    manifests = operator_manifests()
    if not rules_of(manifests, "ClusterRole") and not rules_of(manifests, "Role"):
        pytest.fail(
            "operator/manifests has no ClusterRole/Role: the operator's RBAC source is missing"
        )
    objects = render(helm, offline_chart, "k2", "--set", "operator.watchNamespaces={k2,team-a}")
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "k2-operator"
    )
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["k2"] and container["args"][0] == "operator"
    parse = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from k2.cli import build_parser; "
            "argv = json.loads(sys.argv[1]); a = build_parser(argv[0]).parse_args(argv); "
            "print(json.dumps(vars(a), default=str))",
            json.dumps(container["args"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                str(REPO_ROOT / d) for d in ("src", "ingestors", "jobs", "operator")
            ),
        },
    )
    assert parse.returncode == 0, f"`k2 {' '.join(container['args'])}` is rejected: {parse.stderr}"
    parsed = json.loads(parse.stdout)
    assert parsed["namespace"] == ["k2", "team-a"]
    assert parsed["ingestor_image"] == "k2-ingestor:0.1.0"
    # the operator's SparkApplications use the path the k2-spark image has
    assert parsed["jobs_dir"] == "local:///opt/k2/jobs/k2_jobs"
    # RBAC: exactly the operator engineer's rules, bound to the Deployment's ServiceAccount
    ours = [
        o
        for o in objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    assert canonical_rules(rules_of(ours, "ClusterRole")) == canonical_rules(
        rules_of(manifests, "ClusterRole")
    )
    assert canonical_rules(rules_of(ours, "Role")) == canonical_rules(rules_of(manifests, "Role"))
    for binding in (
        o
        for o in objects
        if o["kind"] in {"ClusterRoleBinding", "RoleBinding"}
        and "operator" in o["metadata"]["name"]
    ):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "k2"}
        ]
    env = {e["name"] for e in container["env"]}
    source = "".join(p.read_text() for p in (REPO_ROOT / "operator" / "k2_operator").glob("*.py"))
    for name in env:
        if name.startswith("K2_OPERATOR_"):
            assert name in source, f"the chart sets {name}, which the operator never reads"


def test_operator_print_manifests_deployment_matches_entry_point(
    helm: str, offline_chart: Path
) -> None:
    """`k2 operator --print-manifests` (the operator's own install path) and the chart start the
    operator the same way."""
    theirs = [d for d in operator_manifests() if d["kind"] == "Deployment"]
    if not theirs:
        pytest.skip("operator/manifests has no Deployment")
    ours = next(
        o
        for o in render(helm, offline_chart)
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "k2-operator"
    )
    their_c = theirs[0]["spec"]["template"]["spec"]["containers"][0]
    our_c = ours["spec"]["template"]["spec"]["containers"][0]
    assert [*their_c.get("command", []), *their_c.get("args", [])][:2] == [
        *our_c["command"],
        *our_c["args"],
    ][:2]


# ---------------------------------------------------------------- server-side dry run


@pytest.fixture(scope="session")
def k2_crds(kube_client: Any) -> list[str]:
    from k2.stack.kube import install_crds

    return install_crds(
        kube_client,
        sorted((REPO_ROOT / "crds").glob("k2.io_*.yaml")),
        field_manager="k2-chart-tests",
    )


@pytest.fixture
def namespace(kube_client: Any) -> Iterator[str]:
    name = f"k2-chart-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(kube_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_server_side_dry_run_accepts_every_object(
    helm: str,
    kubectl: str,
    offline_chart: Path,
    kube: dict[str, Any],
    k2_crds: list[str],
    spark_crds: list[str],
    namespace: str,
    case: str,
) -> None:
    files, sets = CASES[case]
    manifest = run_helm(
        helm,
        "template",
        "k2",
        str(offline_chart),
        "--namespace",
        namespace,
        *value_args(files, sets),
    ).stdout
    if not docs_of(manifest):
        assert case == "everything-off"
        return
    proc = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            kube["kubeconfig"],
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=helm",
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    applied = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(docs_of(manifest)), proc.stdout


def test_server_side_dry_run_rejects_an_invalid_pipeline(
    helm: str,
    kubectl: str,
    offline_chart: Path,
    kube: dict[str, Any],
    k2_crds: list[str],
    namespace: str,
) -> None:
    """The dry run is real validation: the CRD's rules reject what helm lets through."""
    manifest = run_helm(
        helm,
        "template",
        "k2",
        str(offline_chart),
        "--namespace",
        namespace,
        "--set",
        "samplePipeline.enabled=true",
        "--set",
        "samplePipeline.spark.driver.memory=lots",
    ).stdout
    pipeline = yaml.safe_dump(
        next(d for d in docs_of(manifest) if d["kind"] == "MedallionPipeline")
    )
    proc = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            kube["kubeconfig"],
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=pipeline,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "memory" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- skaffold


@pytest.fixture(scope="session")
def skaffold() -> str:
    return str(tools.tool_path("skaffold"))


@pytest.fixture(scope="session")
def skaffold_workspace(tmp_path_factory: pytest.TempPathFactory, offline_chart: Path) -> Path:
    """The repository as skaffold sees it, with the offline chart in place of charts/k2."""
    ws = tmp_path_factory.mktemp("skaffold")
    for entry in REPO_ROOT.iterdir():
        if entry.name in {"charts", ".git", ".k2"}:
            continue
        if entry.name == "skaffold.yaml":
            shutil.copy(entry, ws / entry.name)
        else:
            (ws / entry.name).symlink_to(entry)
    (ws / "charts").mkdir()
    (ws / "charts" / "k2").symlink_to(offline_chart)
    return ws


def run_skaffold(
    skaffold: str, helm: str, ws: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    kubeconfig = ws / ".kubeconfig-empty"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    env = {
        **os.environ,
        "PATH": f"{Path(helm).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(kubeconfig),
        "SKAFFOLD_UPDATE_CHECK": "false",
        "SKAFFOLD_DISABLE_MONITORING": "true",
        "SKAFFOLD_COLLECT_METRICS": "false",
        "HOME": str(ws),  # skaffold's global config and caches stay in the workspace
    }
    return subprocess.run(
        [skaffold, *args], capture_output=True, text=True, cwd=ws, env=env, timeout=600
    )


@pytest.mark.parametrize(
    "profile", [None, "kind", "dev", "prod"], ids=lambda p: f"profile-{p or 'none'}"
)
def test_skaffold_diagnose_yaml_only(
    skaffold: str, helm: str, skaffold_workspace: Path, profile: str | None
) -> None:
    args = ["diagnose", "--yaml-only"] + (["-p", profile] if profile else [])
    proc = run_skaffold(skaffold, helm, skaffold_workspace, *args)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert config["apiVersion"].startswith("skaffold/v4beta")
    assert sorted(a["image"] for a in config["build"]["artifacts"]) == [
        "k2-ingestor",
        "k2-operator",
        "k2-spark",
    ]
    release = config["deploy"]["helm"]["releases"][0]
    assert release["chartPath"].endswith("charts/k2")  # skaffold makes paths absolute


@pytest.mark.parametrize("profile", ["kind", "dev", "prod"], ids=lambda p: f"profile-{p}")
def test_skaffold_render_offline(
    skaffold: str, helm: str, skaffold_workspace: Path, profile: str
) -> None:
    proc = run_skaffold(
        skaffold,
        helm,
        skaffold_workspace,
        "render",
        "--offline=true",
        "--digest-source=none",
        "-p",
        profile,
    )
    assert proc.returncode == 0, proc.stderr
    objects = docs_of(proc.stdout)
    images = {
        c["image"].split(":")[0]
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet"}
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    if profile != "prod":
        assert {"k2-operator", "apache/kafka", "minio/minio"} <= images
        pipeline = next(o for o in objects if o["kind"] == "MedallionPipeline")
        assert pipeline["spec"]["spark"]["image"].startswith("k2-spark")
    else:
        assert "k2-operator" in images and "apache/kafka" not in images
