"""charts/k2 without helm: values.schema.json accepts the chart's values and every environment's,
rejects wrong types and typos; versions the chart pins agree with the rest of the repository;
the chart carries the repository's CRDs and sample pipeline (links, not copies).

Rendering, `helm lint` and the server-side dry run are in tests/k8s/test_chart.py.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from k2.paths import REPO_ROOT

CHART = REPO_ROOT / "charts" / "k2"
ENVIRONMENTS = sorted((CHART / "environments").glob("*.yaml"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def defaults() -> dict[str, Any]:
    return dict(load_yaml(CHART / "values.yaml"))


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the defaults (maps merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(values: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(schema()).validate(values)


def pom_property(pom: Path, name: str) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find(f"m:properties/m:{name}", ns)
    assert node is not None and node.text, f"{pom}: no <{name}> property"
    return node.text.strip()


def pyproject() -> dict[str, Any]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def pinned(dist: str) -> str:
    for req in pyproject()["project"]["dependencies"]:
        m = re.match(rf"^{re.escape(dist)}(\[[^\]]*\])?==(\S+)$", req)
        if m:
            return m.group(2)
    raise AssertionError(f"{dist} is not pinned in pyproject.toml")


# ---------------------------------------------------------------- schema


def test_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(schema())


def test_default_values_validate() -> None:
    validate(defaults())


# ids are not bare "kind": tests/conftest.py matches markers against item.keywords
@pytest.mark.parametrize("env", ENVIRONMENTS, ids=lambda p: f"{p.stem}-values")
def test_environment_values_validate(env: Path) -> None:
    validate(merged(defaults(), load_yaml(env)))


def test_environments_exist_for_each_skaffold_profile() -> None:
    skaffold = load_yaml(REPO_ROOT / "skaffold.yaml")
    profiles = {p["name"] for p in skaffold["profiles"]}
    assert {p.stem for p in ENVIRONMENTS} == profiles == {"kind", "dev", "prod"}


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("kafka", "replicas"), "three"),
        (("kafka", "enabled"), "yes"),
        (("operator", "metrics", "port"), 70000),
        (("schemaRegistry", "storage"), "postgres"),
        (("images", "operator", "digest"), "latest"),
        (("kafka", "clusterId"), "too-short"),
        (("minio", "buckets"), "k2-warehouse"),
    ],
)
def test_schema_rejects_wrong_values(path: tuple[str, ...], bad: Any) -> None:
    values = defaults()
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        validate(values)


def test_schema_rejects_unknown_keys() -> None:
    """A typo (kafak, replicaz) fails instead of being silently ignored."""
    for typo in ({"kafak": {"enabled": False}}, {"kafka": {"replicaz": 3}}):
        with pytest.raises(jsonschema.ValidationError):
            validate(merged(defaults(), typo))


def test_subchart_values_are_passed_through() -> None:
    validate(merged(defaults(), {"spark-operator": {"controller": {"workers": 4}}}))


# ---------------------------------------------------------------- secrets by reference


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _walk(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [kv for i, v in enumerate(node) for kv in _walk(v, f"{path}[{i}]")]
    return [(path, node)]


def test_values_hold_no_credentials() -> None:
    """Credentials are referenced by Secret name (existingSecret) and key, never given as values."""
    for env in [CHART / "values.yaml", *ENVIRONMENTS]:
        for path, _value in _walk(load_yaml(env)):
            leaf = path.rsplit(".", 1)[-1].lower()
            if re.search(r"password|secret|token|accesskey|credential", leaf):
                assert leaf in {
                    "existingsecret",
                    "passwordkey",
                    "secretkeykey",
                    "accesskeykey",
                    "s3credentialssecret",  # operator.s3CredentialsSecret: a Secret's name
                }, f"{env.name}: {path} looks like a credential value"


# ---------------------------------------------------------------- one source of truth


def test_chart_crds_link_to_the_repository_crds() -> None:
    crds = CHART / "crds"
    assert crds.is_symlink(), "charts/k2/crds must be a link to ../../crds (one copy of the CRDs)"
    assert crds.resolve() == (REPO_ROOT / "crds").resolve()
    assert sorted(p.name for p in crds.glob("*.yaml")) == sorted(
        p.name for p in (REPO_ROOT / "crds").glob("k2.io_*.yaml")
    )


def test_chart_sample_pipeline_links_to_the_example() -> None:
    link = CHART / "files" / "pipeline.yaml"
    assert link.is_symlink()
    assert link.resolve() == (REPO_ROOT / "examples" / "pipeline.yaml").resolve()


def test_versions_agree_with_the_repository() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    values = defaults()
    jvm = REPO_ROOT / "build" / "jvm"
    assert chart["appVersion"] == pyproject()["project"]["version"]
    assert values["kafka"]["image"]["tag"] == pom_property(
        jvm / "kafka" / "pom.xml", "kafka.version"
    )
    assert values["schemaRegistry"]["image"]["tag"] == pom_property(
        jvm / "registry" / "pom.xml", "apicurio.version"
    )
    assert values["icebergRest"]["image"]["tag"] == pom_property(
        jvm / "catalog" / "pom.xml", "iceberg.version"
    )
    assert values["spark"]["version"] == pinned("pyspark")


def test_spark_operator_dependency_is_pinned_with_a_condition() -> None:
    deps = {d["name"]: d for d in load_yaml(CHART / "Chart.yaml")["dependencies"]}
    dep = deps["spark-operator"]
    assert dep["version"] == "2.5.2"  # exact: no range, the shared CRDs are v2.5.2's
    assert dep["condition"] == "spark-operator.enabled"
    assert "spark-operator" in defaults()


def test_skaffold_image_names_match_chart_values() -> None:
    skaffold = load_yaml(REPO_ROOT / "skaffold.yaml")
    built = {a["image"] for a in skaffold["build"]["artifacts"]}
    repos = {v["repository"] for v in defaults()["images"].values() if isinstance(v, dict)}
    assert built == repos == {"k2-operator", "k2-ingestor", "k2-spark"}
    templates = skaffold["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    for image in built:
        key = image.removeprefix("k2-")
        token = image.replace("-", "_")
        assert (
            templates[f"images.{key}.repository"]
            == f'{{{{ default "{image}" .IMAGE_REPO_{token} }}}}'
        )
        assert templates[f"images.{key}.tag"] == f'{{{{ default "" .IMAGE_TAG_{token} }}}}'
