"""The pipeline declaration: the same custom resources that `kubectl apply` sends
to a cluster, read here for `k2 up`, `k2 job` and the operator's planning code.

A declaration is a multi-document YAML file holding one MedallionPipeline and the
ExchangeFeeds it names. Parsing fills defaults and checks the same rules as the
CRDs' OpenAPI/CEL validation, with errors that say which field is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from k2.contracts.tables import NAMESPACE
from k2.contracts.topics import trades_topic
from k2.contracts.trade import EXCHANGES

API_GROUP = "k2.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,10}/[A-Z0-9]{2,10}$")
TRIGGER_RE = re.compile(r"^\d+ (milliseconds?|seconds?|minutes?)$")
MEMORY_RE = re.compile(r"^\d+[kmgKMG]$")
NAMESPACE_RE = re.compile(r"^[a-z_][a-z0-9_]*$")  # Iceberg namespace (same rule as the CRDs)
ENDPOINT_RE = re.compile(r"^wss?://\S+$")
# A standard five-field cron schedule (minute hour day-of-month month day-of-week), as a
# Kubernetes CronJob takes it; the fields themselves are the API server's to check.
SCHEDULE_RE = re.compile(r"^\s*\S+(\s+\S+){4}\s*$")
LAYERS = ("bronze", "silver", "gold")


class DeclarationError(ValueError):
    """The declaration is invalid; the message names the resource and field."""


@dataclass(frozen=True)
class Resources:
    cores: int
    memory: str  # Spark/JVM style: 512m, 3g


@dataclass(frozen=True)
class ExchangeFeed:
    name: str
    exchange: str  # upper case, one of EXCHANGES
    symbols: tuple[str, ...]  # canonical BASE/QUOTE
    topic: str
    endpoint: str | None = None
    replicas: int = 1


@dataclass(frozen=True)
class JobSettings:
    trigger: str  # Spark processing-time trigger, e.g. "5 seconds"
    max_offsets_per_trigger: int | None = None


@dataclass(frozen=True)
class SparkSettings:
    image: str
    version: str
    driver: Resources
    executor: Resources
    executor_instances: int
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CompactionSettings:
    """How gold's closed hours are compacted (k2.gold_compaction, `k2 tables compact`): a
    CronJob on `schedule` on Kubernetes, a loop every `interval_seconds` under `k2 up`."""

    enabled: bool = True
    schedule: str = "*/10 * * * *"  # cron, for the Kubernetes CronJob
    grace_minutes: float = 15.0  # hours that ended less than this long ago are left alone
    interval_seconds: float = 300.0  # `k2 up`'s long-running loop (--every)


@dataclass(frozen=True)
class Pipeline:
    name: str
    namespace: str  # Iceberg namespace
    feeds: tuple[ExchangeFeed, ...]
    kafka_bootstrap: str
    schema_registry_url: str
    catalog_uri: str
    warehouse: str
    checkpoint_location: str
    spark: SparkSettings
    jobs: dict[str, JobSettings]
    fail_on_data_loss: bool = True
    starting_offsets: str = "earliest"
    reset_checkpoints: bool = False
    k8s_namespace: str = "default"
    compaction: CompactionSettings = field(default_factory=CompactionSettings)

    def feed(self, exchange: str) -> ExchangeFeed:
        for f in self.feeds:
            if f.exchange == exchange.upper():
                return f
        raise KeyError(exchange)

    def topics(self) -> list[str]:
        return [f.topic for f in self.feeds]

    def checkpoint(self, layer: str) -> str:
        return f"{self.checkpoint_location.rstrip('/')}/{self.name}/{layer}"

    def with_endpoints(self, **overrides: Any) -> Pipeline:
        """A copy pointing at other services (what `k2 up` does with its local stack)."""
        from dataclasses import replace

        return replace(self, **overrides)


DEFAULT_TRIGGERS = {"bronze": "2 seconds", "silver": "5 seconds", "gold": "10 seconds"}


def _get(
    d: dict[str, Any], key: str, where: str, default: Any = ..., kind: type | None = None
) -> Any:
    if key not in d or d[key] is None:
        if default is ...:
            raise DeclarationError(f"{where}: missing required field {key!r}")
        return default
    value = d[key]
    if kind is not None and not isinstance(value, kind):
        raise DeclarationError(
            f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def parse_feed(doc: dict[str, Any]) -> ExchangeFeed:
    name = doc.get("metadata", {}).get("name") or ""
    where = f"ExchangeFeed/{name or '?'}.spec"
    spec = _get(doc, "spec", f"ExchangeFeed/{name}", kind=dict)
    exchange = str(_get(spec, "exchange", where, kind=str)).upper()
    if exchange not in EXCHANGES:
        raise DeclarationError(
            f"{where}.exchange: {exchange.lower()!r} is not a known exchange ({', '.join(e.lower() for e in EXCHANGES)})"
        )
    symbols = _get(spec, "symbols", where, kind=list)
    if not symbols:
        raise DeclarationError(f"{where}.symbols: at least one symbol is required")
    for s in symbols:
        if not isinstance(s, str) or not SYMBOL_RE.match(s):
            raise DeclarationError(
                f"{where}.symbols: {s!r} is not a canonical BASE/QUOTE symbol like 'BTC/USDT'"
            )
    if len(set(symbols)) != len(symbols):
        raise DeclarationError(f"{where}.symbols: duplicates in {symbols}")
    replicas = _get(spec, "replicas", where, 1, int)
    if replicas < 0:
        raise DeclarationError(f"{where}.replicas: must be >= 0")
    endpoint = _get(spec, "endpoint", where, None, str)
    if endpoint is not None and not ENDPOINT_RE.match(endpoint):
        raise DeclarationError(f"{where}.endpoint: {endpoint!r} must be a ws:// or wss:// URL")
    return ExchangeFeed(
        name=name,
        exchange=exchange,
        symbols=tuple(symbols),
        topic=_get(spec, "topic", where, trades_topic(exchange), str),
        endpoint=endpoint,
        replicas=replicas,
    )


def _resources(d: dict[str, Any], where: str, cores: int, memory: str) -> Resources:
    c = _get(d, "cores", where, cores, int)
    m = str(_get(d, "memory", where, memory, str))
    if c < 1:
        raise DeclarationError(f"{where}.cores: must be >= 1")
    if not MEMORY_RE.match(m):
        raise DeclarationError(f"{where}.memory: {m!r} is not like '512m' or '3g'")
    return Resources(c, m)


def _number(d: dict[str, Any], key: str, where: str, default: float) -> float:
    """An int or float field (YAML gives either; a bool is neither)."""
    value = _get(d, key, where, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DeclarationError(
            f"{where}.{key}: expected a number, got {type(value).__name__} {value!r}"
        )
    return float(value)


def parse_compaction(spec: dict[str, Any], where: str) -> CompactionSettings:
    """spec.compaction of a MedallionPipeline (every field optional)."""
    c = _get(spec, "compaction", where, {}, dict)
    where = f"{where}.compaction"
    defaults = CompactionSettings()
    schedule = str(_get(c, "schedule", where, defaults.schedule, str))
    if not SCHEDULE_RE.match(schedule):
        raise DeclarationError(
            f"{where}.schedule: {schedule!r} is not a five-field cron schedule like '*/10 * * * *'"
        )
    grace = _number(c, "graceMinutes", where, defaults.grace_minutes)
    if grace < 0:
        raise DeclarationError(f"{where}.graceMinutes: must be >= 0")
    interval = _number(c, "intervalSeconds", where, defaults.interval_seconds)
    if interval <= 0:
        raise DeclarationError(f"{where}.intervalSeconds: must be > 0")
    return CompactionSettings(
        enabled=_get(c, "enabled", where, defaults.enabled, bool),
        schedule=" ".join(schedule.split()),
        grace_minutes=grace,
        interval_seconds=interval,
    )


def parse_pipeline(doc: dict[str, Any], feeds: dict[str, ExchangeFeed]) -> Pipeline:
    name = doc.get("metadata", {}).get("name") or ""
    where = f"MedallionPipeline/{name or '?'}.spec"
    spec = _get(doc, "spec", f"MedallionPipeline/{name}", kind=dict)
    feed_names = _get(spec, "feeds", where, kind=list)
    missing = [f for f in feed_names if f not in feeds]
    if missing:
        raise DeclarationError(
            f"{where}.feeds: no ExchangeFeed named {', '.join(missing)} in the declaration"
        )
    kafka = _get(spec, "kafka", where, {}, dict)
    catalog = _get(spec, "catalog", where, {}, dict)
    spark = _get(spec, "spark", where, {}, dict)
    executor = _get(spark, "executor", f"{where}.spark", {}, dict)
    jobs_spec = _get(spec, "jobs", where, {}, dict)
    jobs = {}
    for layer in LAYERS:
        j = _get(jobs_spec, layer, f"{where}.jobs", {}, dict)
        trigger = str(_get(j, "trigger", f"{where}.jobs.{layer}", DEFAULT_TRIGGERS[layer], str))
        if not TRIGGER_RE.match(trigger):
            raise DeclarationError(
                f"{where}.jobs.{layer}.trigger: {trigger!r} is not like '5 seconds'"
            )
        max_offsets = _get(j, "maxOffsetsPerTrigger", f"{where}.jobs.{layer}", None, int)
        if max_offsets is not None and max_offsets < 1:
            raise DeclarationError(f"{where}.jobs.{layer}.maxOffsetsPerTrigger: must be >= 1")
        jobs[layer] = JobSettings(trigger, max_offsets)
    unknown_jobs = set(jobs_spec) - set(LAYERS)
    if unknown_jobs:
        raise DeclarationError(
            f"{where}.jobs: unknown job(s) {sorted(unknown_jobs)}; known: {list(LAYERS)}"
        )
    executor_instances = _get(executor, "instances", f"{where}.spark.executor", 2, int)
    if executor_instances < 1:
        raise DeclarationError(f"{where}.spark.executor.instances: must be >= 1")
    namespace = _get(spec, "namespace", where, NAMESPACE, str)
    if not NAMESPACE_RE.match(namespace):
        raise DeclarationError(
            f"{where}.namespace: {namespace!r} is not a lower-case identifier like 'market_data'"
        )
    starting_offsets = _get(kafka, "startingOffsets", f"{where}.kafka", "earliest", str)
    if starting_offsets not in ("earliest", "latest") and not starting_offsets.startswith("{"):
        raise DeclarationError(
            f"{where}.kafka.startingOffsets: must be 'earliest', 'latest' or a JSON object, not {starting_offsets!r}"
        )
    on_loss = _get(spec, "onKafkaDataLoss", where, "fail", str)
    if on_loss not in ("fail", "skip"):
        raise DeclarationError(
            f"{where}.onKafkaDataLoss: must be 'fail' or 'skip', not {on_loss!r}"
        )
    return Pipeline(
        name=name,
        namespace=namespace,
        feeds=tuple(feeds[f] for f in feed_names),
        kafka_bootstrap=_get(kafka, "bootstrapServers", f"{where}.kafka", "kafka:9092", str),
        schema_registry_url=_get(
            kafka, "schemaRegistryUrl", f"{where}.kafka", "http://schema-registry:8081", str
        ),
        catalog_uri=_get(catalog, "uri", f"{where}.catalog", "http://iceberg-rest:8181", str),
        warehouse=_get(catalog, "warehouse", f"{where}.catalog", "s3://k2-warehouse/", str),
        checkpoint_location=_get(spec, "checkpointLocation", where, "s3a://k2-checkpoints/", str),
        spark=SparkSettings(
            image=_get(spark, "image", f"{where}.spark", "k2/spark-jobs:0.1.0", str),
            version=_get(spark, "version", f"{where}.spark", "4.1.4", str),
            driver=_resources(
                _get(spark, "driver", f"{where}.spark", {}, dict), f"{where}.spark.driver", 1, "2g"
            ),
            executor=_resources(executor, f"{where}.spark.executor", 2, "3g"),
            executor_instances=executor_instances,
            conf={
                str(k): str(v) for k, v in _get(spark, "conf", f"{where}.spark", {}, dict).items()
            },
        ),
        jobs=jobs,
        fail_on_data_loss=on_loss == "fail",
        starting_offsets=starting_offsets,
        reset_checkpoints=_get(spec, "resetCheckpoints", where, False, bool),
        k8s_namespace=doc.get("metadata", {}).get("namespace") or "default",
        compaction=parse_compaction(spec, where),
    )


def parse_documents(docs: list[dict[str, Any]]) -> Pipeline:
    """The one MedallionPipeline of a declaration, with its feeds resolved."""
    docs = [d for d in docs if d]
    for d in docs:
        if d.get("apiVersion") != GROUP_VERSION:
            raise DeclarationError(
                f"{d.get('kind')}/{d.get('metadata', {}).get('name')}: apiVersion must be {GROUP_VERSION}"
            )
    feeds = {}
    for d in docs:
        if d.get("kind") == "ExchangeFeed":
            feed = parse_feed(d)
            feeds[feed.name] = feed
    pipelines = [d for d in docs if d.get("kind") == "MedallionPipeline"]
    if len(pipelines) != 1:
        raise DeclarationError(f"expected exactly one MedallionPipeline, found {len(pipelines)}")
    return parse_pipeline(pipelines[0], feeds)


def load(path: str | Path) -> Pipeline:
    p = Path(path)
    try:
        docs = list(yaml.safe_load_all(p.read_text()))
    except FileNotFoundError:
        raise DeclarationError(f"{p}: no such file") from None
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{p}: not valid YAML: {exc}") from None
    return parse_documents(docs)
