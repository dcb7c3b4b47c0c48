"""Pure rendering: a custom resource -> the child objects the cluster should hold.

Nothing here talks to Kubernetes, Kafka or a catalog. Specs are parsed with the same
code `k2 up` uses (`k2.pipeline`), tables come from `k2.contracts.tables`, and every
object is plain data ready for server-side apply (apiVersion, kind, metadata with
labels and an ownerReference, spec). Golden files under tests/unit/golden pin the
output for the sample pipeline.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from k2.contracts.tables import BRONZE, DLQ, GOLD, TableSpec, silver_spec
from k2.pipeline import (
    API_GROUP,
    GROUP_VERSION,
    LAYERS,
    ExchangeFeed,
    Pipeline,
    parse_feed,
    parse_pipeline,
)

FIELD_MANAGER = "k2-operator"
MANAGED_BY = "k2-operator"

# Labels on every child; `managed-by` is what the operator's child watches select on.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_FEED = f"{API_GROUP}/exchange-feed"
LABEL_EXCHANGE = f"{API_GROUP}/exchange"
LABEL_PIPELINE = f"{API_GROUP}/pipeline"
LABEL_LAYER = f"{API_GROUP}/layer"

ANNOTATION_PAUSED = f"{API_GROUP}/paused"
ANNOTATION_SPEC_HASH = f"{API_GROUP}/spec-hash"
ANNOTATION_CHECKPOINT_EPOCH = f"{API_GROUP}/checkpoint-epoch"

SPARK_GROUP = "sparkoperator.k8s.io"
SPARK_VERSION = "v1beta2"
SPARK_API_VERSION = f"{SPARK_GROUP}/{SPARK_VERSION}"

INGESTOR_CONTAINER = "ingestor"
COMPACTION_CONTAINER = "compact"
METRICS_PORT_NAME = "http-metrics"
NON_ROOT_UID = 10001

DELETION_POLICIES = ("Retain", "Delete")
DECLARATION_DIR = "/etc/k2"
DECLARATION_FILE = "pipeline.yaml"


@dataclass(frozen=True)
class Settings:
    """Operator-wide defaults (from `k2 operator` flags or K2_OPERATOR_* variables)."""

    ingestor_image: str = "k2/ingestor:0.1.0"
    # Image of the gold compaction CronJobs (`k2 tables compact`): any image with the `k2`
    # command and pyiceberg + pyarrow; empty: ingestor_image (the k2 image, images/k2).
    compaction_image: str = ""
    kafka_bootstrap: str = "kafka:9092"
    schema_registry_url: str = "http://schema-registry:8081"
    # Where the Spark image keeps the job main files (the k2_jobs package).
    jobs_dir: str = "local:///opt/k2/jobs/k2_jobs"
    # Secret (in the pipeline's namespace) with the S3 access key pair the Spark driver and
    # executors get as AWS_* variables, by reference; empty: none.
    s3_credentials_secret: str = ""
    s3_access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    s3_secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a key name

    @property
    def k2_image(self) -> str:
        """The image that runs `k2` commands for a pipeline (gold compaction)."""
        return self.compaction_image or self.ingestor_image


@dataclass(frozen=True)
class KafkaEndpoints:
    bootstrap_servers: str
    schema_registry_url: str
    source: str  # "feed", "pipeline/<name>" or "operator": where the values came from


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedChildren:
    feed: ExchangeFeed
    kafka: KafkaEndpoints
    topic: TopicSpec
    deployment: dict[str, Any]
    service: dict[str, Any]

    def objects(self) -> list[dict[str, Any]]:
        return [self.deployment, self.service]


@dataclass(frozen=True)
class PipelineChildren:
    pipeline: Pipeline
    declaration: dict[str, Any]  # ConfigMap the jobs read
    tables: list[dict[str, Any]]
    applications: dict[str, dict[str, Any]]  # layer -> SparkApplication
    compaction: dict[str, Any] | None = None  # CronJob compacting gold; None when disabled

    def objects(self) -> list[dict[str, Any]]:
        extra = [self.compaction] if self.compaction is not None else []
        return [self.declaration, *self.tables, *self.applications.values(), *extra]


# ------------------------------------------------------------------ helpers


def plain(obj: Any) -> Any:
    """A deep plain-data copy (kopf bodies and views are read-only mappings)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A short stable hash of a spec (canonical JSON)."""
    text = json.dumps(plain(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_paused(body: Mapping[str, Any]) -> bool:
    value = (body.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_PAUSED, "")
    return str(value).strip().lower() in ("true", "1", "yes")


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The controller ownerReference to `owner` (garbage collection follows it)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", GROUP_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(
    name: str,
    owner: Mapping[str, Any],
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner["metadata"].get("namespace") or "default",
        "labels": {LABEL_PART_OF: "k2", LABEL_MANAGED_BY: MANAGED_BY, **labels},
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# ------------------------------------------------------------------ ExchangeFeed


def k2_pod_spec(container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod spec of the k2 image's pods (ingestors, compaction): its numeric non-root user,
    default seccomp, no service-account token or service links."""
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }


def k2_container_security_context() -> dict[str, Any]:
    """A k2 container: read-only root (writes go to an emptyDir /tmp), no privileges."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def deployment_name(feed_name: str) -> str:
    return f"{feed_name}-ingestor"


def feed_selector(feed_name: str) -> dict[str, str]:
    return {LABEL_NAME: "k2-ingestor", LABEL_INSTANCE: feed_name}


def feed_kafka(
    body: Mapping[str, Any], pipelines: Iterable[Mapping[str, Any]], settings: Settings
) -> KafkaEndpoints:
    """Kafka endpoints of a feed: its own spec.kafka, else the first (by name) pipeline
    of its namespace listing it, else the operator's defaults; field by field."""
    name = body["metadata"]["name"]
    own = (body.get("spec") or {}).get("kafka") or {}
    listing = sorted(
        (p for p in pipelines if name in ((p.get("spec") or {}).get("feeds") or [])),
        key=lambda p: str(p["metadata"]["name"]),
    )
    inherited = ((listing[0].get("spec") or {}).get("kafka") or {}) if listing else {}
    bootstrap = own.get("bootstrapServers") or inherited.get("bootstrapServers")
    registry = own.get("schemaRegistryUrl") or inherited.get("schemaRegistryUrl")
    if own.get("bootstrapServers"):
        source = "feed"
    elif listing and inherited.get("bootstrapServers"):
        source = f"pipeline/{listing[0]['metadata']['name']}"
    else:
        source = "operator"
    return KafkaEndpoints(
        bootstrap_servers=str(bootstrap or settings.kafka_bootstrap),
        schema_registry_url=str(registry or settings.schema_registry_url),
        source=source,
    )


def ingestor_args(feed: ExchangeFeed, kafka: KafkaEndpoints, metrics_port: int) -> list[str]:
    """`k2 ingest ...` arguments for one feed."""
    args = [
        "ingest",
        feed.exchange.lower(),
        "--symbols",
        ",".join(feed.symbols),
        "--sink",
        "kafka",
        "--topic",
        feed.topic,
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--schema-registry-url",
        kafka.schema_registry_url,
        "--metrics-port",
        str(metrics_port),
    ]
    if feed.endpoint:
        args += ["--url", feed.endpoint]
    return args


def render_feed(
    body: Mapping[str, Any],
    kafka: KafkaEndpoints,
    settings: Settings = Settings(),
) -> FeedChildren:
    """ExchangeFeed -> ingestor Deployment + Service, and the topic to create.

    Raises k2.pipeline.DeclarationError for an invalid spec (the CRD should have caught it).
    """
    feed = parse_feed(plain(body))
    spec = body.get("spec") or {}
    name = feed.name
    port = int(spec.get("metricsPort") or 9100)
    topic_config = spec.get("topicConfig") or {}
    topic = TopicSpec(
        name=feed.topic,
        partitions=int(topic_config.get("partitions") or 3),
        replication_factor=int(topic_config.get("replicationFactor") or 1),
        config={str(k): str(v) for k, v in (topic_config.get("config") or {}).items()},
    )
    resources = plain(spec.get("resources")) or {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    selector = feed_selector(name)
    labels = {
        **selector,
        LABEL_COMPONENT: "ingestor",
        LABEL_FEED: name,
        LABEL_EXCHANGE: feed.exchange.lower(),
    }
    container: dict[str, Any] = {
        "name": INGESTOR_CONTAINER,
        "image": spec.get("image") or settings.ingestor_image,
        "imagePullPolicy": spec.get("imagePullPolicy") or "IfNotPresent",
        "command": ["k2"],
        "args": ingestor_args(feed, kafka, port),
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": METRICS_PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": METRICS_PORT_NAME},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 6,
        },
        "resources": resources,
        "securityContext": k2_container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(deployment_name(name), body, labels),
        "spec": {
            "replicas": feed.replicas,
            # Overlap rather than gap on a rollout: duplicate trades collapse in gold
            # (deterministic message_id), missed trades would be gone for good.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": k2_pod_spec(
                    container, [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
                ),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(deployment_name(name), body, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": METRICS_PORT_NAME,
                    "port": port,
                    "targetPort": METRICS_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
    return FeedChildren(feed=feed, kafka=kafka, topic=topic, deployment=deployment, service=service)


# ------------------------------------------------------------------ MedallionPipeline


def table_resource_name(pipeline_name: str, table_name: str) -> str:
    return f"{pipeline_name}-{table_name.replace('_', '-')}"


def application_name(pipeline_name: str, layer: str) -> str:
    return f"{pipeline_name}-{layer}"


def pipeline_tables(pipeline: Pipeline) -> list[TableSpec]:
    """bronze, one silver per exchange of the pipeline's feeds, the DLQ, gold."""
    exchanges = list(dict.fromkeys(f.exchange for f in pipeline.feeds))
    specs = [BRONZE, *(silver_spec(e) for e in exchanges), DLQ, GOLD]
    return [dataclasses.replace(s, namespace=pipeline.namespace) for s in specs]


def deletion_policy(body: Mapping[str, Any]) -> str:
    policy = str(((body.get("spec") or {}).get("tables") or {}).get("deletionPolicy") or "Retain")
    return policy if policy in DELETION_POLICIES else "Retain"


def render_table(
    pipeline: Pipeline,
    table: TableSpec,
    owner: Mapping[str, Any],
    policy: str = "Retain",
) -> dict[str, Any]:
    """A child IcebergTable: exactly `TableSpec.to_cr_spec()` plus catalog and deletionPolicy."""
    layer = str(table.properties.get("k2.layer", "")).split("-")[0]
    labels = {
        LABEL_NAME: "k2-table",
        LABEL_INSTANCE: pipeline.name,
        LABEL_COMPONENT: "table",
        LABEL_PIPELINE: pipeline.name,
        LABEL_LAYER: layer,
    }
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "IcebergTable",
        "metadata": _meta(table_resource_name(pipeline.name, table.name), owner, labels),
        "spec": {
            "catalog": {"uri": pipeline.catalog_uri, "warehouse": pipeline.warehouse},
            "deletionPolicy": policy,
            **table.to_cr_spec(),
        },
    }


def checkpoint_root(pipeline: Pipeline, epoch: int = 0) -> str:
    """The checkpoint root a job is started with; a reset (resetCheckpoints) adds a generation."""
    root = pipeline.checkpoint_location
    return root if epoch <= 0 else f"{root.rstrip('/')}/g{epoch}/"


def checkpoint_location(pipeline: Pipeline, layer: str, epoch: int = 0) -> str:
    """Where the layer's checkpoint lives: <root>[/g<epoch>]/<pipeline>/<layer>."""
    return dataclasses.replace(
        pipeline, checkpoint_location=checkpoint_root(pipeline, epoch)
    ).checkpoint(layer)


def declaration_name(pipeline_name: str) -> str:
    return f"{pipeline_name}-declaration"


def _declaration_doc(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", GROUP_VERSION),
        "kind": body["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace") or "default",
        },
        "spec": plain(body.get("spec") or {}),
    }


def render_declaration(
    pipeline: Pipeline,
    body: Mapping[str, Any],
    feed_bodies: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """A ConfigMap holding the declaration (the pipeline and its feeds, as applied) that the
    Spark jobs read with `-f`, exactly as `k2 job` and `k2 up` do."""
    docs = [_declaration_doc(f) for f in feed_bodies] + [_declaration_doc(body)]
    text = yaml.safe_dump_all(docs, sort_keys=False)
    labels = {
        LABEL_NAME: "k2-declaration",
        LABEL_INSTANCE: pipeline.name,
        LABEL_COMPONENT: "declaration",
        LABEL_PIPELINE: pipeline.name,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(declaration_name(pipeline.name), body, labels),
        "data": {DECLARATION_FILE: text},
    }


def spark_conf(pipeline: Pipeline, layer: str) -> dict[str, str]:
    """The job's Spark settings, as the job itself would set them under spark-submit:
    the Iceberg REST catalog (k2.spark_session) plus the job's own (k2_jobs.common)."""
    from k2.spark_session import iceberg_spark_conf
    from k2_jobs.common import CATALOG, job_conf

    cores = pipeline.spark.executor.cores * pipeline.spark.executor_instances
    conf = {
        **iceberg_spark_conf(pipeline.catalog_uri, pipeline.warehouse, catalog_name=CATALOG),
        **job_conf(pipeline, layer, cores=cores),
    }
    return {str(k): str(v) for k, v in sorted(conf.items())}


def job_inputs(pipeline: Pipeline, layer: str) -> dict[str, Any]:
    """What a layer's job reads from the declaration beyond its SparkApplication spec: a
    change here restarts that job (and only that job)."""
    exchanges = list(dict.fromkeys(f.exchange for f in pipeline.feeds))
    job = pipeline.jobs[layer]
    inputs: dict[str, Any] = {
        "namespace": pipeline.namespace,
        "trigger": job.trigger,
        "maxOffsetsPerTrigger": job.max_offsets_per_trigger,
    }
    if layer == "bronze":
        inputs |= {
            "bootstrapServers": pipeline.kafka_bootstrap,
            "topics": pipeline.topics(),
            "startingOffsets": pipeline.starting_offsets,
            "failOnDataLoss": pipeline.fail_on_data_loss,
        }
    elif layer == "silver":
        inputs |= {
            "schemaRegistryUrl": pipeline.schema_registry_url,
            "exchanges": exchanges,
        }
    else:
        inputs |= {"exchanges": exchanges}
    return inputs


def s3_credentials_env(settings: Settings) -> list[dict[str, Any]]:
    """AWS_* variables of the Spark pods, by secretKeyRef to settings.s3_credentials_secret
    (never values); none when no Secret is configured."""
    if not settings.s3_credentials_secret:
        return []
    keys = {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key_id_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key_key,
    }
    return [
        {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": settings.s3_credentials_secret, "key": key}},
        }
        for name, key in keys.items()
    ]


def render_application(
    pipeline: Pipeline,
    layer: str,
    owner: Mapping[str, Any],
    *,
    epoch: int = 0,
    service_account: str = "spark",
    settings: Settings = Settings(),
) -> dict[str, Any]:
    """A SparkApplication (v1beta2) for one layer, annotated with the hash of what it runs."""
    spark = pipeline.spark
    labels = {
        LABEL_NAME: "k2-spark-job",
        LABEL_INSTANCE: pipeline.name,
        LABEL_COMPONENT: f"{layer}-job",
        LABEL_PIPELINE: pipeline.name,
        LABEL_LAYER: layer,
    }
    pod_labels = {
        LABEL_PIPELINE: pipeline.name,
        LABEL_LAYER: layer,
        LABEL_PART_OF: "k2",
    }
    security = {"runAsNonRoot": True, "allowPrivilegeEscalation": False}
    spec: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": spark.image,
        "imagePullPolicy": "IfNotPresent",
        "sparkVersion": spark.version,
        "mainApplicationFile": f"{settings.jobs_dir.rstrip('/')}/{layer}.py",
        "arguments": [
            "--file",
            f"{DECLARATION_DIR}/{DECLARATION_FILE}",
            "--checkpoint-location",
            checkpoint_root(pipeline, epoch),
        ],
        "sparkConf": spark_conf(pipeline, layer),
        # Streaming jobs run forever: restart whatever the exit.
        "restartPolicy": {
            "type": "Always",
            "onFailureRetryInterval": 10,
            "onSubmissionFailureRetryInterval": 20,
        },
        "volumes": [
            {
                "name": "declaration",
                "configMap": {"name": declaration_name(pipeline.name)},
            }
        ],
        "driver": {
            "cores": spark.driver.cores,
            "memory": spark.driver.memory,
            "serviceAccount": service_account,
            "labels": dict(pod_labels),
            "securityContext": dict(security),
            "volumeMounts": [
                {"name": "declaration", "mountPath": DECLARATION_DIR, "readOnly": True}
            ],
        },
        "executor": {
            "instances": spark.executor_instances,
            "cores": spark.executor.cores,
            "memory": spark.executor.memory,
            "labels": dict(pod_labels),
            "securityContext": dict(security),
        },
    }
    if env := s3_credentials_env(settings):
        spec["driver"]["env"] = env
        spec["executor"]["env"] = copy.deepcopy(env)
    digest = spec_hash({"spec": spec, "inputs": job_inputs(pipeline, layer)})
    annotations = {
        ANNOTATION_SPEC_HASH: digest,
        ANNOTATION_CHECKPOINT_EPOCH: str(epoch),
    }
    return {
        "apiVersion": SPARK_API_VERSION,
        "kind": "SparkApplication",
        "metadata": _meta(application_name(pipeline.name, layer), owner, labels, annotations),
        "spec": spec,
    }


def compaction_name(pipeline_name: str) -> str:
    return f"{pipeline_name}-compact-gold"


def compaction_args(pipeline: Pipeline) -> list[str]:
    """`k2 tables compact ...` arguments: one round over the declaration's gold table."""
    return [
        "tables",
        "compact",
        "-f",
        f"{DECLARATION_DIR}/{DECLARATION_FILE}",
        "--grace",
        f"{pipeline.compaction.grace_minutes:g}",
    ]


# A run that could not start within this long after its time is skipped (the next one
# comes soon); it also bounds how far back the CronJob controller looks for missed runs.
COMPACTION_STARTING_DEADLINE_S = 300
# A stuck run must not block the next ones forever (concurrencyPolicy Forbid); every hour is
# its own commit, so a run that is stopped keeps the hours it finished.
COMPACTION_ACTIVE_DEADLINE_S = 3600


def render_compaction(
    pipeline: Pipeline,
    owner: Mapping[str, Any],
    settings: Settings = Settings(),
) -> dict[str, Any] | None:
    """A batch/v1 CronJob running `k2 tables compact` on the declaration's schedule (gold's
    closed hours -> one file per exchange and symbol); None when spec.compaction.enabled is
    false. It reads the same declaration ConfigMap as the Spark jobs."""
    c = pipeline.compaction
    if not c.enabled:
        return None
    labels = {
        LABEL_NAME: "k2-compaction",
        LABEL_INSTANCE: pipeline.name,
        LABEL_COMPONENT: "compaction",
        LABEL_PIPELINE: pipeline.name,
        LABEL_LAYER: "gold",
    }
    pod_labels = {LABEL_PART_OF: "k2", **labels}
    container: dict[str, Any] = {
        "name": COMPACTION_CONTAINER,
        "image": settings.k2_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["k2"],
        "args": compaction_args(pipeline),
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # `k2 tables` looks for a local stack under K2_DATA (none here) and creates that
            # directory: keep it on the writable /tmp.
            {"name": "K2_DATA", "value": "/tmp/k2"},
            *s3_credentials_env(settings),
        ],
        # An hour of gold is read into memory, split, and written back.
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"memory": "2Gi"},
        },
        "securityContext": k2_container_security_context(),
        "volumeMounts": [
            {"name": "declaration", "mountPath": DECLARATION_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [
        {"name": "declaration", "configMap": {"name": declaration_name(pipeline.name)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(compaction_name(pipeline.name), owner, labels),
        "spec": {
            "schedule": c.schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": COMPACTION_STARTING_DEADLINE_S,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": dict(pod_labels)},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": COMPACTION_ACTIVE_DEADLINE_S,
                    "template": {
                        "metadata": {"labels": dict(pod_labels)},
                        "spec": {
                            "restartPolicy": "Never",
                            **k2_pod_spec(container, volumes),
                        },
                    },
                },
            },
        },
    }


def parse(body: Mapping[str, Any], feed_bodies: Iterable[Mapping[str, Any]]) -> Pipeline:
    """The pipeline declaration with its feeds resolved (k2.pipeline's rules and defaults).

    Raises k2.pipeline.DeclarationError, e.g. when a listed ExchangeFeed does not exist.
    """
    feeds = {}
    for fb in feed_bodies:
        feed = parse_feed(plain(fb))
        feeds[feed.name] = feed
    return parse_pipeline(plain(body), feeds)


def render_pipeline(
    body: Mapping[str, Any],
    feed_bodies: Iterable[Mapping[str, Any]],
    *,
    epochs: Mapping[str, int] | None = None,
    settings: Settings = Settings(),
) -> PipelineChildren:
    """MedallionPipeline -> the declaration ConfigMap, child IcebergTables, the three
    SparkApplications and the gold compaction CronJob (unless compaction is disabled)."""
    feed_bodies = list(feed_bodies)
    pipeline = parse(body, feed_bodies)
    spec = body.get("spec") or {}
    policy = deletion_policy(body)
    service_account = str((spec.get("spark") or {}).get("serviceAccount") or "spark")
    tables = [render_table(pipeline, t, body, policy) for t in pipeline_tables(pipeline)]
    apps = {
        layer: render_application(
            pipeline,
            layer,
            body,
            epoch=int((epochs or {}).get(layer, 0)),
            service_account=service_account,
            settings=settings,
        )
        for layer in LAYERS
    }
    declaration = render_declaration(pipeline, body, feed_bodies)
    return PipelineChildren(
        pipeline=pipeline,
        declaration=declaration,
        tables=tables,
        applications=apps,
        compaction=render_compaction(pipeline, body, settings),
    )
