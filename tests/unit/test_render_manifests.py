"""`k2 operator`'s command line and the manifests it prints (CRDs, RBAC, Deployment)."""

from __future__ import annotations

import argparse
import io
import shlex
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import yaml

from k2.cli import build_parser
from k2_operator import MANIFESTS_DIR, cli

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_k2_cli_maps_operator_to_this_module() -> None:
    args = build_parser().parse_args(["operator", "--namespace", "k2", "--resync-seconds", "30"])
    assert args._run is cli.run
    assert args.namespace == ["k2"] and args.resync_seconds == 30.0


def test_defaults() -> None:
    args = parse()
    assert args.namespace == [] and args.kafka_admin == "auto" and args.metrics_port == 0
    assert not args.print_manifests


def test_print_manifests_is_the_crds_then_rbac_and_deployment() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.run(parse("--print-manifests")) == 0
    docs = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds[:3] == [
        ("CustomResourceDefinition", "exchangefeeds.k2.io"),
        ("CustomResourceDefinition", "icebergtables.k2.io"),
        ("CustomResourceDefinition", "medallionpipelines.k2.io"),
    ]
    assert {k for k, _ in kinds[3:]} == {
        "Namespace",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    }


def _operator_deployment() -> dict[str, Any]:
    for doc in yaml.safe_load_all((MANIFESTS_DIR / "deployment.yaml").read_text()):
        if doc and doc["kind"] == "Deployment":
            return dict(doc)
    raise AssertionError("no Deployment")


def test_operator_deployment_runs_k2_operator_with_flags_it_has() -> None:
    dep = _operator_deployment()
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["k2"] and c["args"][0] == "operator"
    args = parse(*c["args"][1:])
    assert args.liveness == "http://0.0.0.0:8080/healthz" and args.metrics_port == 9100
    assert pod["serviceAccountName"] == "k2-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert dep["spec"]["strategy"]["type"] == "Recreate"  # standalone kopf: never two at once
    rbac = {
        d["kind"]: d for d in yaml.safe_load_all((MANIFESTS_DIR / "rbac.yaml").read_text()) if d
    }
    assert rbac["ServiceAccount"]["metadata"]["namespace"] == dep["metadata"]["namespace"]


def test_chart_passes_only_flags_the_operator_has() -> None:
    """charts/k2/templates/operator/deployment.yaml renders `k2 operator` flags: all must parse."""
    template = ROOT / "charts" / "k2" / "templates" / "operator" / "deployment.yaml"
    if not template.exists():
        return
    flags = set()
    for line in template.read_text().splitlines():
        line = line.strip()
        if line.startswith("- --"):
            flags.add(line[2:].split("=", 1)[0])
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    known = {opt for action in parser._actions for opt in action.option_strings}
    assert flags <= known, f"chart passes unknown flags: {sorted(flags - known)}"
    assert parse(*shlex.split("--namespace a --namespace b --verbose")).namespace == ["a", "b"]


def test_rbac_is_least_privilege_on_the_things_that_matter() -> None:
    docs = {
        d["kind"]: d for d in yaml.safe_load_all((MANIFESTS_DIR / "rbac.yaml").read_text()) if d
    }
    rules = docs["ClusterRole"]["rules"]
    grants = {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert not any("*" in (g, r, v) for g, r, v in grants)
    assert not any(r in ("secrets", "pods") for _, r, _ in grants)
    deletable = {(g, r) for g, r, v in grants if v == "delete"}
    assert deletable == {
        ("sparkoperator.k8s.io", "sparkapplications"),
        ("k2.io", "icebergtables"),
        ("batch", "cronjobs"),
    }
    # the compaction CronJob's Jobs and pods are the CronJob controller's, never the operator's
    assert not any(r in ("jobs", "pods") for _, r, _ in grants)
    assert not any(
        v in ("update", "create") and r in ("medallionpipelines", "exchangefeeds")
        for _, r, v in grants
    )
