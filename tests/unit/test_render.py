"""Pure rendering of the K2 custom resources into child objects (k2_operator.render).

The sample declaration's children are pinned by golden files in tests/unit/golden/;
regenerate them after an intended change with

    K2_UPDATE_GOLDEN=1 pytest tests/unit/test_render.py
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from k2.contracts.tables import ALL_TABLES, by_name
from k2.pipeline import DeclarationError
from k2_operator import render
from k2_operator.render import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "pipeline.yaml"
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("K2_UPDATE_GOLDEN") == "1"


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_NoAliases.add_representer(str, _str)


def dump(objs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objs, Dumper=_NoAliases, sort_keys=False, default_flow_style=False)


def check_golden(name: str, objs: list[dict[str, Any]]) -> None:
    path = GOLDEN / name
    text = dump(objs)
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            pytest.fail(
                f"golden file {path} was missing and has been written: review and commit it"
            )
    assert text == path.read_text(), (
        f"{name} differs from the golden file (K2_UPDATE_GOLDEN=1 to regenerate)"
    )


def sample() -> dict[str, Any]:
    """The sample's documents as the API server would hand them over (uid, namespace set)."""
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    out: dict[str, Any] = {}
    for i, d in enumerate(docs):
        d["metadata"]["uid"] = f"00000000-0000-4000-8000-{i:012d}"
        d["metadata"]["namespace"] = "k2"
        d["metadata"]["generation"] = 1
        out[d["metadata"]["name"]] = d
    return out


def feeds(docs: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in docs.values() if d["kind"] == "ExchangeFeed"]


def render_sample(docs: dict[str, Any] | None = None, **kw: Any) -> render.PipelineChildren:
    docs = docs or sample()
    return render.render_pipeline(docs["crypto"], feeds(docs), **kw)


# ------------------------------------------------------------------ golden manifests


@pytest.mark.parametrize("feed", ["binance", "kraken"])
def test_feed_children_match_golden(feed: str) -> None:
    docs = sample()
    kafka = render.feed_kafka(docs[feed], [docs["crypto"]], Settings())
    children = render.render_feed(docs[feed], kafka)
    check_golden(f"exchangefeed-{feed}.yaml", children.objects())


def test_pipeline_children_match_golden() -> None:
    check_golden("medallionpipeline-crypto.yaml", render_sample().objects())


# ------------------------------------------------------------------ ExchangeFeed


def test_feed_deployment_runs_the_ingestor_with_probes_as_non_root() -> None:
    docs = sample()
    kafka = render.feed_kafka(docs["binance"], [docs["crypto"]], Settings())
    dep = render.render_feed(docs["binance"], kafka).deployment
    assert dep["metadata"]["name"] == "binance-ingestor"
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["k2"]
    assert c["args"][:3] == ["ingest", "binance", "--symbols"]
    assert c["args"][c["args"].index("--symbols") + 1] == "BTC/USDT,ETH/USDT"
    assert c["args"][c["args"].index("--bootstrap-servers") + 1] == "k2-kafka:9092"
    assert c["args"][c["args"].index("--metrics-port") + 1] == "9100"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert (
        pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    )
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    # A rollout overlaps ingestors rather than leaving a gap (gold dedups the overlap).
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_feed_service_exposes_metrics_port() -> None:
    docs = sample()
    kafka = render.feed_kafka(docs["kraken"], [], Settings())
    svc = render.render_feed(docs["kraken"], kafka).service
    assert svc["spec"]["ports"] == [
        {"name": "http-metrics", "port": 9100, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == render.feed_selector("kraken")


def test_feed_spec_fields_reach_the_deployment() -> None:
    docs = sample()
    spec = docs["kraken"]["spec"]
    spec.update(
        endpoint="ws://127.0.0.1:9443/v2",
        replicas=0,
        image="registry.local/k2:dev",
        metricsPort=9200,
        symbols=["BTC/USD", "ETH/USD", "SOL/USD"],
        topicConfig={
            "partitions": 6,
            "replicationFactor": 3,
            "config": {"retention.ms": "86400000"},
        },
    )
    kafka = render.feed_kafka(docs["kraken"], [docs["crypto"]], Settings())
    children = render.render_feed(docs["kraken"], kafka)
    c = children.deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.local/k2:dev"
    assert c["args"][c["args"].index("--url") + 1] == "ws://127.0.0.1:9443/v2"
    assert c["args"][c["args"].index("--symbols") + 1] == "BTC/USD,ETH/USD,SOL/USD"
    assert c["ports"][0]["containerPort"] == 9200
    assert children.deployment["spec"]["replicas"] == 0
    assert children.topic == render.TopicSpec(
        "market.crypto.trades.kraken", 6, 3, {"retention.ms": "86400000"}
    )


def test_feed_kafka_comes_from_the_feed_then_the_pipeline_then_the_operator() -> None:
    docs = sample()
    feed, pipe = docs["binance"], docs["crypto"]
    settings = Settings(kafka_bootstrap="op:9092", schema_registry_url="http://op-registry:8081")
    assert render.feed_kafka(feed, [], settings) == render.KafkaEndpoints(
        "op:9092", "http://op-registry:8081", "operator"
    )
    assert render.feed_kafka(feed, [pipe], settings) == render.KafkaEndpoints(
        "k2-kafka:9092", "http://k2-schema-registry:8080/apis/ccompat/v7", "pipeline/crypto"
    )
    other = copy.deepcopy(pipe)
    other["spec"]["feeds"] = ["kraken"]  # does not list binance
    assert render.feed_kafka(feed, [other], settings).source == "operator"
    feed["spec"]["kafka"] = {"bootstrapServers": "own:9092"}
    own = render.feed_kafka(feed, [pipe], settings)
    assert (own.bootstrap_servers, own.source) == ("own:9092", "feed")
    assert own.schema_registry_url == "http://k2-schema-registry:8080/apis/ccompat/v7"


def test_invalid_feed_raises_declaration_error() -> None:
    docs = sample()
    docs["binance"]["spec"]["symbols"] = ["BTCUSDT"]
    with pytest.raises(DeclarationError, match="canonical BASE/QUOTE"):
        render.render_feed(docs["binance"], render.feed_kafka(docs["binance"], [], Settings()))


# ------------------------------------------------------------------ MedallionPipeline


def test_sample_pipeline_renders_exactly_the_expected_children() -> None:
    children = render_sample()
    assert [t["spec"]["name"] for t in children.tables] == [
        "bronze_crypto_trades",
        "silver_binance_trades",
        "silver_kraken_trades",
        "silver_dlq_trades",
        "gold_crypto_trades",
    ]
    assert [t["metadata"]["name"] for t in children.tables] == [
        "crypto-bronze-crypto-trades",
        "crypto-silver-binance-trades",
        "crypto-silver-kraken-trades",
        "crypto-silver-dlq-trades",
        "crypto-gold-crypto-trades",
    ]
    assert list(children.applications) == ["bronze", "silver", "gold"]
    assert children.declaration["kind"] == "ConfigMap"
    assert children.compaction is not None
    assert (children.compaction["kind"], children.compaction["metadata"]["name"]) == (
        "CronJob",
        "crypto-compact-gold",
    )
    assert children.objects()[-1] is children.compaction
    for obj in children.objects():
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "k2.io/v1alpha1",
            "kind": "MedallionPipeline",
            "name": "crypto",
            "uid": "00000000-0000-4000-8000-000000000002",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["namespace"] == "k2"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "k2-operator"


def test_child_tables_are_the_contract_specs() -> None:
    for t in render_sample().tables:
        spec = dict(t["spec"])
        assert spec.pop("catalog") == {
            "uri": "http://k2-iceberg-rest:8181",
            "warehouse": "s3://k2-warehouse/",
        }
        assert spec.pop("deletionPolicy") == "Retain"
        assert spec == by_name(spec["name"]).to_cr_spec()
    assert len(ALL_TABLES) == 5


def test_deletion_policy_and_namespace_reach_the_tables() -> None:
    docs = sample()
    docs["crypto"]["spec"]["tables"] = {"deletionPolicy": "Delete"}
    docs["crypto"]["spec"]["namespace"] = "lab"
    children = render_sample(docs)
    assert {t["spec"]["deletionPolicy"] for t in children.tables} == {"Delete"}
    assert {t["spec"]["namespace"] for t in children.tables} == {"lab"}


def test_one_silver_table_per_exchange() -> None:
    docs = sample()
    docs["crypto"]["spec"]["feeds"] = ["kraken"]
    names = [t["spec"]["name"] for t in render_sample(docs).tables]
    assert names == [
        "bronze_crypto_trades",
        "silver_kraken_trades",
        "silver_dlq_trades",
        "gold_crypto_trades",
    ]


def test_spark_applications_default_to_driver_and_two_executors_of_2_cores_3g() -> None:
    apps = render_sample().applications
    for layer, app in apps.items():
        spec = app["spec"]
        assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
        assert app["metadata"]["name"] == f"crypto-{layer}"
        assert spec["type"] == "Python" and spec["mode"] == "cluster"
        assert spec["mainApplicationFile"] == f"local:///opt/k2/jobs/k2_jobs/{layer}.py"
        assert {k: spec["executor"][k] for k in ("instances", "cores", "memory")} == {
            "instances": 2,
            "cores": 2,
            "memory": "3g",
        }
        assert (spec["driver"]["cores"], spec["driver"]["memory"]) == (1, "2g")
        assert spec["arguments"] == [
            "--file",
            "/etc/k2/pipeline.yaml",
            "--checkpoint-location",
            "s3a://k2-checkpoints/",
        ]
        assert spec["sparkConf"]["spark.sql.catalog.k2.uri"] == "http://k2-iceberg-rest:8181"
        assert spec["sparkConf"]["spark.sql.catalog.k2.type"] == "rest"
        assert spec["restartPolicy"]["type"] == "Always"
        assert spec["driver"]["volumeMounts"][0]["mountPath"] == "/etc/k2"
        assert app["metadata"]["annotations"]["k2.io/checkpoint-epoch"] == "0"


def test_declaration_configmap_is_what_the_jobs_parse() -> None:
    from k2.pipeline import parse_documents

    children = render_sample()
    text = children.declaration["data"]["pipeline.yaml"]
    parsed = parse_documents(list(yaml.safe_load_all(text)))
    assert parsed == children.pipeline
    assert parsed.checkpoint("bronze") == "s3a://k2-checkpoints/crypto/bronze"


def test_spark_conf_from_the_pipeline_wins() -> None:
    docs = sample()
    docs["crypto"]["spec"]["spark"]["conf"] = {
        "spark.sql.shuffle.partitions": "64",
        "spark.k2.extra": "x",
    }
    conf = render_sample(docs).applications["gold"]["spec"]["sparkConf"]
    assert conf["spark.sql.shuffle.partitions"] == "64" and conf["spark.k2.extra"] == "x"


def _hashes(docs: dict[str, Any]) -> dict[str, str]:
    apps = render_sample(docs).applications
    return {layer: a["metadata"]["annotations"]["k2.io/spec-hash"] for layer, a in apps.items()}


@pytest.mark.parametrize(
    ("mutate", "restarted"),
    [
        (lambda d: d["binance"]["spec"]["symbols"].append("SOL/USDT"), set()),
        (lambda d: d["crypto"]["spec"]["jobs"]["gold"].update(trigger="30 seconds"), {"gold"}),
        (
            lambda d: d["crypto"]["spec"]["jobs"]["bronze"].update(maxOffsetsPerTrigger=5000),
            {"bronze"},
        ),
        (
            lambda d: d["crypto"]["spec"]["kafka"].update(bootstrapServers="kafka-2:9092"),
            {"bronze"},
        ),
        (lambda d: d["crypto"]["spec"]["kafka"].update(schemaRegistryUrl="http://r:1"), {"silver"}),
        (lambda d: d["binance"]["spec"].update(topic="trades.binance.v2"), {"bronze"}),
        (
            lambda d: d["crypto"]["spec"]["spark"]["executor"].update(memory="4g"),
            {"bronze", "silver", "gold"},
        ),
        (
            lambda d: d["crypto"]["spec"]["catalog"].update(uri="http://cat:8181"),
            {"bronze", "silver", "gold"},
        ),
        (lambda d: d["crypto"]["spec"].update(feeds=["binance"]), {"bronze", "silver", "gold"}),
        (lambda d: d["crypto"]["spec"].update(tables={"deletionPolicy": "Delete"}), set()),
        (
            lambda d: d["crypto"]["spec"]["compaction"].update(
                schedule="0 * * * *", graceMinutes=30
            ),
            set(),
        ),
    ],
)
def test_a_spec_change_restarts_only_the_affected_applications(
    mutate: Any, restarted: set[str]
) -> None:
    before = _hashes(sample())
    docs = sample()
    mutate(docs)
    after = _hashes(docs)
    assert {layer for layer in before if before[layer] != after[layer]} == restarted


def test_checkpoint_reset_bumps_a_generation_in_the_path() -> None:
    children = render_sample(epochs={"silver": 2})
    p = children.pipeline
    assert render.checkpoint_location(p, "bronze", 0) == "s3a://k2-checkpoints/crypto/bronze"
    assert render.checkpoint_location(p, "silver", 2) == "s3a://k2-checkpoints/g2/crypto/silver"
    silver = children.applications["silver"]
    assert silver["spec"]["arguments"][-1] == "s3a://k2-checkpoints/g2/"
    assert silver["metadata"]["annotations"]["k2.io/checkpoint-epoch"] == "2"
    assert children.applications["bronze"]["spec"]["arguments"][-1] == "s3a://k2-checkpoints/"


def test_service_account_and_jobs_dir_are_configurable() -> None:
    docs = sample()
    docs["crypto"]["spec"]["spark"]["serviceAccount"] = "k2-spark"
    app = render_sample(docs, settings=Settings(jobs_dir="local:///app/k2_jobs/")).applications[
        "bronze"
    ]
    assert app["spec"]["driver"]["serviceAccount"] == "k2-spark"
    assert app["spec"]["mainApplicationFile"] == "local:///app/k2_jobs/bronze.py"


def test_s3_credentials_reach_driver_and_executors_by_secret_reference() -> None:
    default = render_sample().applications
    assert all(
        "env" not in app["spec"][role]
        for app in default.values()
        for role in ("driver", "executor")
    )
    settings = Settings(s3_credentials_secret="k2-minio", s3_access_key_id_key="rootUser")
    apps = render_sample(settings=settings).applications
    for layer, app in apps.items():
        for role in ("driver", "executor"):
            assert app["spec"][role]["env"] == [
                {
                    "name": "AWS_ACCESS_KEY_ID",
                    "valueFrom": {"secretKeyRef": {"name": "k2-minio", "key": "rootUser"}},
                },
                {
                    "name": "AWS_SECRET_ACCESS_KEY",
                    "valueFrom": {
                        "secretKeyRef": {"name": "k2-minio", "key": "AWS_SECRET_ACCESS_KEY"}
                    },
                },
            ], f"{layer} {role}"
        # a different Secret restarts the job
        assert (
            app["metadata"]["annotations"]["k2.io/spec-hash"]
            != default[layer]["metadata"]["annotations"]["k2.io/spec-hash"]
        )


# ------------------------------------------------------------------ gold compaction CronJob


def _compaction(docs: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    cron = render_sample(docs, **kw).compaction
    assert cron is not None
    return cron


def _compaction_container(cron: dict[str, Any]) -> dict[str, Any]:
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_compaction_cronjob_runs_k2_tables_compact_on_the_declared_schedule() -> None:
    children = render_sample()
    cron = children.compaction
    assert cron is not None
    assert cron["apiVersion"] == "batch/v1" and cron["kind"] == "CronJob"
    assert cron["metadata"]["name"] == render.compaction_name("crypto") == "crypto-compact-gold"
    labels = cron["metadata"]["labels"]
    assert (
        labels["k2.io/pipeline"] == "crypto"
        and labels["app.kubernetes.io/managed-by"] == "k2-operator"
    )
    spec = cron["spec"]
    assert spec["schedule"] == "*/10 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"  # never two rewrites of the same hour at once
    assert 0 < spec["startingDeadlineSeconds"] <= 600
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (1, 3)
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] > 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False  # it never talks to Kubernetes
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == render.NON_ROOT_UID == 10001
    c = _compaction_container(cron)
    assert c["image"] == Settings().ingestor_image  # the k2 image: `k2`, pyiceberg, pyarrow
    assert c["command"] == ["k2"]
    assert c["args"] == ["tables", "compact", "-f", "/etc/k2/pipeline.yaml", "--grace", "15"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    # the declaration exactly as the Spark jobs get it: the ConfigMap at /etc/k2
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["declaration"] == {
        "name": "declaration",
        "mountPath": render.DECLARATION_DIR,
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["declaration"]["configMap"]["name"] == children.declaration["metadata"]["name"]
    assert render.DECLARATION_FILE in children.declaration["data"]
    driver = children.applications["gold"]["spec"]["driver"]
    assert driver["volumeMounts"] == [mounts["declaration"]]
    assert children.applications["gold"]["spec"]["volumes"] == [volumes["declaration"]]
    # a writable /tmp on the read-only root, where k2's data directory goes
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    env = {e["name"]: e for e in c["env"]}
    assert env["K2_DATA"]["value"].startswith("/tmp/")
    assert not any(name.startswith("AWS_") for name in env)


def test_compaction_args_are_a_k2_tables_compact_command_line() -> None:
    from k2.cli import build_parser

    parser = build_parser("tables")  # the real `k2` command line
    docs = sample()
    docs["crypto"]["spec"]["compaction"]["graceMinutes"] = 7.5
    args = parser.parse_args(_compaction_container(_compaction(docs))["args"])
    assert args.tables_command == "compact"
    assert str(args.file) == "/etc/k2/pipeline.yaml"
    assert args.grace == 7.5 and args.every is None and not args.dry_run  # one round per run


def test_compaction_settings_reach_the_cronjob() -> None:
    docs = sample()
    docs["crypto"]["spec"]["compaction"] = {"schedule": "7 * * * *", "graceMinutes": 30}
    settings = Settings(
        ingestor_image="registry.local/k2-ingestor:1",
        s3_credentials_secret="k2-minio",
        s3_access_key_id_key="rootUser",
    )
    cron = _compaction(docs, settings=settings)
    assert cron["spec"]["schedule"] == "7 * * * *"
    c = _compaction_container(cron)
    assert c["args"][-2:] == ["--grace", "30"]
    assert c["image"] == "registry.local/k2-ingestor:1"
    # S3 credentials by reference, exactly as the Spark pods get them
    aws = [e for e in c["env"] if e["name"].startswith("AWS_")]
    assert aws == render.s3_credentials_env(settings)
    assert aws[0]["valueFrom"]["secretKeyRef"] == {"name": "k2-minio", "key": "rootUser"}
    # a separate image for compaction, when the operator is told so
    other = Settings(ingestor_image="k2-ingestor:1", compaction_image="k2-tools:2")
    assert _compaction_container(_compaction(settings=other))["image"] == "k2-tools:2"


def test_disabled_compaction_renders_no_cronjob() -> None:
    docs = sample()
    docs["crypto"]["spec"]["compaction"]["enabled"] = False
    children = render_sample(docs)
    assert children.compaction is None
    assert "CronJob" not in {o["kind"] for o in children.objects()}
    del docs["crypto"]["spec"]["compaction"]  # absent: the defaults, enabled
    assert render_sample(docs).compaction is not None


def test_invalid_compaction_is_a_declaration_error() -> None:
    docs = sample()
    docs["crypto"]["spec"]["compaction"]["schedule"] = "hourly"
    with pytest.raises(DeclarationError, match=r"spec\.compaction\.schedule"):
        render_sample(docs)


def test_missing_feed_is_a_declaration_error() -> None:
    docs = sample()
    with pytest.raises(DeclarationError, match="no ExchangeFeed named kraken"):
        render.render_pipeline(docs["crypto"], [docs["binance"]])


def test_pause_annotation() -> None:
    docs = sample()
    assert not render.is_paused(docs["crypto"])
    for value, paused in (
        ("true", True),
        ("True", True),
        ("1", True),
        ("false", False),
        ("", False),
    ):
        docs["crypto"]["metadata"]["annotations"] = {"k2.io/paused": value}
        assert render.is_paused(docs["crypto"]) is paused


def test_spec_hash_is_order_independent_and_short() -> None:
    assert render.spec_hash({"a": 1, "b": [1, 2]}) == render.spec_hash({"b": [1, 2], "a": 1})
    assert render.spec_hash({"a": 1}) != render.spec_hash({"a": 2})
    assert len(render.spec_hash({})) == 16
