"""kopf wiring: which events call which reconciler. No logic of its own.

    ExchangeFeed       create/update/resume + timer -> reconcile_feed, then the pipelines listing it
    MedallionPipeline  create/update/resume + timer -> reconcile_pipeline (and its feeds' Kafka settings)
    IcebergTable       create/update/resume + timer -> reconcile_table; delete -> finalize_table
    children           Deployments, Services, ConfigMaps, CronJobs, SparkApplications, IcebergTables
                       labelled managed-by=k2-operator: any change or deletion reconciles the owner
                       (drift repair)

Run with `k2 operator` or `kopf run -m k2_operator.handlers` (e.g. kopf.testing.KopfRunner).
Configuration comes from K2_OPERATOR_* environment variables (`k2 operator` sets them
from its flags): K2_OPERATOR_RESYNC_SECONDS (timer interval, default 60),
K2_OPERATOR_KAFKA_ADMIN (auto|off), K2_OPERATOR_KAFKA_ADMIN_BOOTSTRAP (how the
operator reaches Kafka, if not as the ingestors do), K2_OPERATOR_INGESTOR_IMAGE,
K2_OPERATOR_COMPACTION_IMAGE (default: the ingestor image), ...
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from prometheus_client import Counter, Histogram

from k2.pipeline import API_GROUP, API_VERSION
from k2_operator.apply import Kube, Ref, new_api_client
from k2_operator.reconcile import (
    Context,
    RetryLater,
    finalize_table,
    owner_of,
    pipelines_listing,
    reconcile_feed,
    reconcile_pipeline,
    reconcile_table,
    settings_from_env,
)
from k2_operator.render import LABEL_MANAGED_BY, MANAGED_BY, SPARK_GROUP, SPARK_VERSION
from k2_operator.topics import TopicManager

log = logging.getLogger("k2_operator")

RESYNC_SECONDS = float(os.environ.get("K2_OPERATOR_RESYNC_SECONDS", "60"))
BACKOFF_SECONDS = min(RESYNC_SECONDS, 15.0)
FINALIZER = f"{API_GROUP}/finalizer"
MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}

_context: Context | None = None
_metrics_started = False
_context_lock = threading.Lock()


def context() -> Context:
    """The operator's one Context (API client, settings, Kafka admin, catalogs)."""
    global _context
    with _context_lock:
        if _context is None:
            admin = os.environ.get("K2_OPERATOR_KAFKA_ADMIN", "auto").lower()
            _context = Context(
                kube=Kube(new_api_client()),
                settings=settings_from_env(),
                topic_retry_seconds=RESYNC_SECONDS,
                topics=TopicManager(
                    enabled=admin != "off",
                    bootstrap_override=os.environ.get("K2_OPERATOR_KAFKA_ADMIN_BOOTSTRAP"),
                    timeout=float(os.environ.get("K2_OPERATOR_KAFKA_TIMEOUT", "5")),
                ),
            )
        return _context


def reset_context() -> None:
    """Forget the Context (a new operator run in the same process reads the environment again)."""
    global _context
    with _context_lock:
        if _context is not None:
            _context.kube.api_client.close()  # type: ignore[no-untyped-call]
        _context = None


class Serializer:
    """One reconcile at a time per object. Handler calls wait their turn; child-event calls
    coalesce: if one is running, it simply runs once more when it finishes."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._again: dict[str, bool] = {}

    def run(self, key: str, fn: Callable[[], None], *, coalesce: bool = False) -> None:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
            if coalesce and lock.locked():
                self._again[key] = True
                return
        with lock:
            fn()
            while True:
                with self._guard:
                    again = self._again.pop(key, False)
                if not again:
                    break
                try:
                    fn()
                except RetryLater as exc:
                    log.info("%s: %s (will retry)", key, exc)


_serial = Serializer()


RECONCILES = Counter(
    "k2_operator_reconciles_total",
    "Reconciles by kind and result (ok, retry, error).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "k2_operator_reconcile_duration_seconds",
    "Time spent in one reconcile.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _measured(
    kind: str,
    fn: Callable[[Context, Mapping[str, Any]], None],
    ctx: Context,
    body: Mapping[str, Any],
) -> Callable[[], None]:
    def call() -> None:
        started = time.monotonic()
        result = "error"
        try:
            fn(ctx, body)
            result = "ok"
        except RetryLater:
            result = "retry"
            raise
        finally:
            RECONCILES.labels(kind, result).inc()
            RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)

    return call


def _run(
    kind: str, body: Mapping[str, Any], fn: Callable[[Context, Mapping[str, Any]], None]
) -> None:
    """Call a reconciler for one object; RetryLater becomes kopf's TemporaryError."""
    meta = body.get("metadata") or {}
    key = f"{kind}/{meta.get('namespace')}/{meta.get('name')}"
    try:
        _serial.run(key, _measured(kind, fn, context(), body))
    except RetryLater as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


def _poke(ref: Ref) -> None:
    """Reconcile an owner after one of its children changed (coalesced; errors are logged and
    left to the next event, timer or handler retry)."""
    fn = {"ExchangeFeed": reconcile_feed, "MedallionPipeline": reconcile_pipeline}[ref.kind]
    body = {
        "apiVersion": ref.api_version,
        "kind": ref.kind,
        "metadata": {"namespace": ref.namespace, "name": ref.name},
    }
    key = f"{ref.kind}/{ref.namespace}/{ref.name}"
    try:
        _serial.run(key, _measured(ref.kind, fn, context(), body), coalesce=True)
    except RetryLater as exc:
        log.info("%s: %s (will retry)", ref, exc)
    except Exception:  # a child event must not take the watcher down
        log.exception("%s: reconcile after a child event failed", ref)


# ------------------------------------------------------------------ startup


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    reset_context()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=f"operator.{API_GROUP}"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=f"operator.{API_GROUP}", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = int(os.environ.get("K2_OPERATOR_WORKERS", "4"))
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    context()  # fail fast on bad credentials
    port = int(os.environ.get("K2_OPERATOR_METRICS_PORT") or 0)
    if port:
        global _metrics_started
        if not _metrics_started:
            from prometheus_client import start_http_server

            start_http_server(port, addr=os.environ.get("K2_OPERATOR_METRICS_ADDR", "0.0.0.0"))  # noqa: S104
            _metrics_started = True
    log.info(
        "k2 operator: resync every %.0fs, settings %s",
        RESYNC_SECONDS,
        context().settings,
    )


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The same credentials as the reconcilers' client: $KUBECONFIG (read now, not when the
    kubernetes library was imported), else the pod's service account."""
    if os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    reset_context()


# ------------------------------------------------------------------ ExchangeFeed


@kopf.on.resume(API_GROUP, API_VERSION, "exchangefeeds", backoff=BACKOFF_SECONDS)
@kopf.on.create(API_GROUP, API_VERSION, "exchangefeeds", backoff=BACKOFF_SECONDS)
@kopf.on.update(API_GROUP, API_VERSION, "exchangefeeds", backoff=BACKOFF_SECONDS)
def feed_changed(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    _run("ExchangeFeed", body, reconcile_feed)
    for p in pipelines_listing(context(), namespace or "default", name):
        _poke(Ref.of(p))


@kopf.on.delete(API_GROUP, API_VERSION, "exchangefeeds", optional=True)
def feed_deleted(namespace: str | None, name: str, **_: Any) -> None:
    for p in pipelines_listing(context(), namespace or "default", name):
        _poke(Ref.of(p))


@kopf.timer(
    API_GROUP,
    API_VERSION,
    "exchangefeeds",
    interval=RESYNC_SECONDS,
    initial_delay=RESYNC_SECONDS,
)
def feed_resync(body: kopf.Body, **_: Any) -> None:
    _run("ExchangeFeed", body, reconcile_feed)


# ------------------------------------------------------------------ MedallionPipeline


@kopf.on.resume(API_GROUP, API_VERSION, "medallionpipelines", backoff=BACKOFF_SECONDS)
@kopf.on.create(API_GROUP, API_VERSION, "medallionpipelines", backoff=BACKOFF_SECONDS)
@kopf.on.update(API_GROUP, API_VERSION, "medallionpipelines", backoff=BACKOFF_SECONDS)
def pipeline_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    # Feeds inherit the pipeline's Kafka endpoints: bring them along first.
    for feed in (body.get("spec") or {}).get("feeds") or []:
        _poke(Ref.kind_of("ExchangeFeed", namespace or "default", str(feed)))
    _run("MedallionPipeline", body, reconcile_pipeline)


@kopf.timer(
    API_GROUP,
    API_VERSION,
    "medallionpipelines",
    interval=RESYNC_SECONDS,
    initial_delay=RESYNC_SECONDS,
)
def pipeline_resync(body: kopf.Body, **_: Any) -> None:
    _run("MedallionPipeline", body, reconcile_pipeline)


# ------------------------------------------------------------------ IcebergTable


@kopf.on.resume(API_GROUP, API_VERSION, "icebergtables", backoff=BACKOFF_SECONDS)
@kopf.on.create(API_GROUP, API_VERSION, "icebergtables", backoff=BACKOFF_SECONDS)
@kopf.on.update(API_GROUP, API_VERSION, "icebergtables", backoff=BACKOFF_SECONDS)
def table_changed(body: kopf.Body, **_: Any) -> None:
    _run("IcebergTable", body, reconcile_table)


@kopf.timer(
    API_GROUP,
    API_VERSION,
    "icebergtables",
    interval=RESYNC_SECONDS,
    initial_delay=RESYNC_SECONDS,
)
def table_resync(body: kopf.Body, **_: Any) -> None:
    _run("IcebergTable", body, reconcile_table)


@kopf.on.delete(API_GROUP, API_VERSION, "icebergtables", backoff=BACKOFF_SECONDS)
def table_deleted(body: kopf.Body, **_: Any) -> None:
    ctx = context()
    try:
        finalize_table(ctx, body)
    except RetryLater as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


# ------------------------------------------------------------------ children (drift repair)


def _child_event(event: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    if not event.get("type"):  # the initial listing: resume handlers cover it
        return
    ref = owner_of(body)
    if ref is not None:
        _poke(ref)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _child_event(event, body)


@kopf.on.event("v1", "services", labels=MANAGED)
def service_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _child_event(event, body)


@kopf.on.event("v1", "configmaps", labels=MANAGED)
def configmap_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _child_event(event, body)


@kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED)
def cronjob_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _child_event(event, body)


@kopf.on.event(SPARK_GROUP, SPARK_VERSION, "sparkapplications", labels=MANAGED)
def application_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _child_event(event, body)


@kopf.on.event(API_GROUP, API_VERSION, "icebergtables", labels=MANAGED)
def table_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _child_event(event, body)
