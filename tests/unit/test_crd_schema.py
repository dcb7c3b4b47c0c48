"""The CRDs in crds/ without an API server: well-formed, structural, aligned with the
declaration model (k2.pipeline) and the table contracts (k2.contracts.tables).

The CEL rules themselves run in tests/k8s/test_crds.py, against a real kube-apiserver;
here their regular expressions are compared with k2.pipeline's on probe strings.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from k2 import pipeline
from k2.contracts.tables import ALL_TABLES
from k2.pipeline import DeclarationError
from k2_operator import crd_paths, render

ROOT = Path(__file__).resolve().parents[2]
INVALID = ROOT / "examples" / "invalid"
SAMPLE = ROOT / "examples" / "pipeline.yaml"


@functools.cache
def _crds() -> dict[str, dict[str, Any]]:
    out = {}
    for p in crd_paths():
        doc = yaml.load(p.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        out[doc["spec"]["names"]["kind"]] = doc
    return out


def crds() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(_crds())


def schema(kind: str) -> dict[str, Any]:
    (version,) = crds()[kind]["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def to_json_schema(node: Any) -> Any:
    """OpenAPI v3 (structural) -> JSON Schema: drop Kubernetes extensions."""
    if isinstance(node, dict):
        out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if node.get("x-kubernetes-int-or-string"):
            out.pop("anyOf", None)
            out["type"] = ["integer", "string"]
        return out
    if isinstance(node, list):
        return [to_json_schema(v) for v in node]
    return node


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it (objects only, recursively)."""
    if not isinstance(value, dict) or node.get("type") != "object":
        return value
    out = dict(value)
    for key, sub in (node.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = apply_defaults(sub, out[key])
    return out


def validate(kind: str, obj: dict[str, Any]) -> None:
    s = schema(kind)
    jsonschema.validate(apply_defaults(s, obj), to_json_schema(s))


def sample_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]


# ------------------------------------------------------------------ shape


def test_three_crds_in_group_k2_io() -> None:
    c = crds()
    assert set(c) == {"ExchangeFeed", "MedallionPipeline", "IcebergTable"}
    short = {k: d["spec"]["names"]["shortNames"] for k, d in c.items()}
    assert short == {"ExchangeFeed": ["xf"], "MedallionPipeline": ["mp"], "IcebergTable": ["ict"]}
    for kind, d in c.items():
        assert d["apiVersion"] == "apiextensions.k8s.io/v1"
        assert d["spec"]["group"] == pipeline.API_GROUP
        assert d["metadata"]["name"] == f"{d['spec']['names']['plural']}.k2.io"
        assert d["spec"]["scope"] == "Namespaced"
        assert d["spec"]["names"]["categories"] == ["k2"]
        (v,) = d["spec"]["versions"]
        assert (v["name"], v["served"], v["storage"]) == (pipeline.API_VERSION, True, True), kind
        assert v["subresources"] == {"status": {}}
        columns = {col["name"]: col["jsonPath"] for col in v["additionalPrinterColumns"]}
        assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
        assert columns["Age"] == ".metadata.creationTimestamp"
        status = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        assert {"conditions", "observedGeneration"} <= set(status)
        assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key in ("properties",):
            for name, sub in (node.get(key) or {}).items():
                yield from _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", ["ExchangeFeed", "MedallionPipeline", "IcebergTable"])
def test_schema_is_structural_and_defaults_are_valid(kind: str) -> None:
    for path, node in _walk(schema(kind)):
        if path in (".metadata",):
            continue
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{kind}{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"
        if "default" in node:
            jsonschema.validate(apply_defaults(node, node["default"]), to_json_schema(node))
        for rule in node.get("x-kubernetes-validations") or []:
            assert rule.get("message") or rule.get("messageExpression"), (
                f"{kind}{path}: rule without message"
            )


def test_cel_rules_on_strings_and_lists_are_bounded() -> None:
    """The API server estimates CEL cost from maxLength/maxItems: every string or list a rule
    looks at must declare one (else the CRD is refused)."""
    for kind in ("ExchangeFeed", "MedallionPipeline", "IcebergTable"):
        for path, node in _walk(schema(kind)):
            if not node.get("x-kubernetes-validations"):
                continue
            if node.get("type") == "string":
                assert "maxLength" in node, f"{kind}{path}"
            if node.get("type") == "array":
                assert "maxItems" in node, f"{kind}{path}"


# ------------------------------------------------------------------ samples and defaults


def test_sample_declaration_matches_the_schemas() -> None:
    for doc in sample_docs():
        validate(doc["kind"], doc)


def test_contract_tables_match_the_icebergtable_schema() -> None:
    for t in ALL_TABLES:
        validate(
            "IcebergTable",
            {"apiVersion": "k2.io/v1alpha1", "kind": "IcebergTable", "spec": t.to_cr_spec()},
        )


def test_icebergtable_spec_is_exactly_to_cr_spec_plus_catalog_and_policy() -> None:
    props = set(schema("IcebergTable")["properties"]["spec"]["properties"])
    assert props == set(ALL_TABLES[0].to_cr_spec()) | {"catalog", "deletionPolicy"}
    columns = schema("IcebergTable")["properties"]["spec"]["properties"]["schema"]["properties"][
        "columns"
    ]
    assert set(columns["items"]["properties"]) == set(
        ALL_TABLES[0].to_cr_spec()["schema"]["columns"][0]
    )


def test_rendered_children_match_the_schemas() -> None:
    docs = {d["metadata"]["name"]: d for d in sample_docs()}
    for d in docs.values():
        d["metadata"].update(uid="u", namespace="k2")
    children = render.render_pipeline(docs["crypto"], [docs["binance"], docs["kraken"]])
    for t in children.tables:
        validate("IcebergTable", t)


def test_crd_defaults_are_the_declaration_model_defaults() -> None:
    """A minimal declaration parses the same with the CRDs' defaults filled in or not."""
    feed = {"apiVersion": "k2.io/v1alpha1", "kind": "ExchangeFeed", "metadata": {"name": "b"},
            "spec": {"exchange": "binance", "symbols": ["BTC/USDT"]}}  # fmt: skip
    pipe = {"apiVersion": "k2.io/v1alpha1", "kind": "MedallionPipeline", "metadata": {"name": "p"},
            "spec": {"feeds": ["b"]}}  # fmt: skip
    plain = pipeline.parse_documents([feed, pipe])
    defaulted = pipeline.parse_documents(
        [
            apply_defaults(schema("ExchangeFeed"), feed),
            apply_defaults(schema("MedallionPipeline"), pipe),
        ]
    )
    assert defaulted == plain
    spec = apply_defaults(schema("MedallionPipeline"), pipe)["spec"]
    assert spec["spark"]["executor"] == {"instances": 2, "cores": 2, "memory": "3g"}
    assert spec["tables"] == {"deletionPolicy": "Retain"}
    assert spec["resetCheckpoints"] is False
    assert spec["compaction"] == {
        "enabled": True,
        "schedule": "*/10 * * * *",
        "graceMinutes": 15,
        "intervalSeconds": 300,
    }
    assert plain.compaction == pipeline.CompactionSettings()


# ------------------------------------------------------------------ rules shared with k2.pipeline


def _cel_regexes(kind: str, path: str) -> list[str]:
    node: Any = schema(kind)
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    out = []
    for rule in node.get("x-kubernetes-validations") or []:
        m = re.search(r"self\.matches\('(.*?)'\)", rule["rule"])
        if m:
            out.append(m.group(1).replace("\\\\", "\\"))
    return out


@pytest.mark.parametrize(
    ("kind", "path", "regex", "probes"),
    [
        ("ExchangeFeed", "spec.symbols.[]", pipeline.SYMBOL_RE,
         ["BTC/USDT", "BTCUSDT", "btc/usdt", "B/USD", "ABCDEFGHIJK/USD", "1INCH/USDT", "BTC/USD/X"]),
        ("ExchangeFeed", "spec.endpoint", pipeline.ENDPOINT_RE,
         ["wss://stream.binance.com:9443/stream", "ws://127.0.0.1:1", "https://x", "ws://", "ws://a b"]),
        ("MedallionPipeline", "spec.jobs.silver.trigger", pipeline.TRIGGER_RE,
         ["5 seconds", "1 second", "500 milliseconds", "2 minutes", "soon", "5seconds", "5 hours", "-1 seconds"]),
        ("MedallionPipeline", "spec.spark.executor.memory", pipeline.MEMORY_RE,
         ["3g", "512m", "1024k", "3G", "3 gigs", "3gb", "g"]),
        ("MedallionPipeline", "spec.namespace", pipeline.NAMESPACE_RE,
         ["market_data", "_x", "lab2", "Market", "market-data", "2lab", "a.b"]),
        ("MedallionPipeline", "spec.compaction.schedule", pipeline.SCHEDULE_RE,
         ["*/10 * * * *", "0 * * * *", " 7  1 * * 1-5 ", "@hourly", "* * * *", "* * * * * *",
          "every 10 minutes", ""]),
    ],
)  # fmt: skip
def test_cel_regex_agrees_with_the_declaration_model(
    kind: str, path: str, regex: re.Pattern[str], probes: list[str]
) -> None:
    (cel,) = _cel_regexes(kind, path)
    for probe in probes:
        assert bool(re.search(cel, probe)) == bool(regex.match(probe)), (probe, cel, regex.pattern)


def test_known_exchanges_agree() -> None:
    from k2.contracts.trade import EXCHANGES

    rule = schema("ExchangeFeed")["properties"]["spec"]["properties"]["exchange"][
        "x-kubernetes-validations"
    ][0]
    listed = re.findall(r"'(\w+)'", rule["rule"])
    assert sorted(listed) == sorted(e.lower() for e in EXCHANGES)


# ------------------------------------------------------------------ examples/invalid


def invalid_examples() -> list[Path]:
    return sorted(INVALID.glob("*.yaml"))


def header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line.lstrip("# ").partition(":")
        out[key.strip()] = value.strip()
    return out


def test_at_least_eight_invalid_examples_for_every_kind() -> None:
    paths = invalid_examples()
    assert len(paths) >= 8
    kinds = {next(yaml.safe_load_all(p.read_text()))["kind"] for p in paths}
    assert kinds == {"ExchangeFeed", "MedallionPipeline", "IcebergTable"}
    expects = [header(p)["expect"] for p in paths]
    assert len(set(expects)) == len(expects), "each example should fail for its own reason"


@pytest.mark.parametrize("path", invalid_examples(), ids=lambda p: p.stem)
def test_invalid_example_is_rejected_by_the_declaration_model_too(path: Path) -> None:
    h = header(path)
    assert h.get("expect"), f"{path.name}: no '# expect:' line"
    assert h.get("parse") in ("reject", "n/a"), f"{path.name}: '# parse:' must be reject or n/a"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == (2 if "update" in h else 1), path.name
    if h["parse"] != "reject":
        return
    (doc,) = docs
    sample = {d["metadata"]["name"]: d for d in sample_docs()}
    with pytest.raises(DeclarationError):
        if doc["kind"] == "ExchangeFeed":
            pipeline.parse_feed(doc)
        else:
            feeds = {n: pipeline.parse_feed(sample[n]) for n in ("binance", "kraken")}
            pipeline.parse_pipeline(doc, feeds)
