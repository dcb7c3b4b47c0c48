"""The three reconcilers: read the resource, apply what `render` says, write the status.

Each `reconcile_*` is idempotent and level-based (it reads the current state and
converges, whatever happened before), so kopf can call it on create, update, resume,
from a timer, or when a child changed, and an operator restart mid-way is harmless.
Status is written to the status subresource with a merge patch (never through
handler return values); events record what the operator did.

Errors:
  InvalidSpec        the status says Degraded/InvalidSpec; nothing to retry until the spec changes
  RetryLater         the status says Degraded (retrying); the handler raises kopf.TemporaryError
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from k2.contracts.tables import TableSpec
from k2.pipeline import LAYERS, DeclarationError
from k2_operator import status as st
from k2_operator.apply import Kube, Ref, api_message
from k2_operator.render import (
    ANNOTATION_CHECKPOINT_EPOCH,
    ANNOTATION_SPEC_HASH,
    LABEL_FEED,
    LABEL_PIPELINE,
    PipelineChildren,
    Settings,
    checkpoint_location,
    feed_kafka,
    is_paused,
    parse,
    plain,
    render_feed,
    render_pipeline,
)
from k2_operator.topics import CREATED, EXISTS, FAILED, TopicManager

log = logging.getLogger("k2_operator")

EventSink = Callable[[Mapping[str, Any], str, str, str], None]

RUNNING = "RUNNING"
FAILED_STATES = {"FAILED", "SUBMISSION_FAILED"}
RETRY_SECONDS = 15.0


class RetryLater(Exception):
    """Try again after `delay` seconds (the status already says why)."""

    def __init__(self, message: str, delay: float = RETRY_SECONDS):
        super().__init__(message)
        self.delay = delay


@dataclass
class Context:
    kube: Kube
    settings: Settings = field(default_factory=Settings)
    topics: TopicManager = field(default_factory=lambda: TopicManager(enabled=False))
    component: str = "k2-operator"
    topic_retry_seconds: float = 60.0  # how long a Skipped/Failed topic waits before a retry
    _catalogs: dict[tuple[str, str], Any] = field(default_factory=dict)
    _catalog_lock: threading.Lock = field(default_factory=threading.Lock)

    # -------------------------------------------------------------- events

    def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on `body` (best effort: a failure is only logged)."""
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        ts = st.now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        log.info(
            "%s %s/%s %s: %s",
            type_,
            body.get("kind"),
            meta.get("name"),
            reason,
            message,
        )
        try:
            self.kube.create(event)
        except ApiException as exc:
            if exc.status == 403 and "being terminated" in (exc.body or ""):
                return  # the namespace is going away: nobody will read it
            log.warning(
                "could not record event %s on %s/%s: %s",
                reason,
                body.get("kind"),
                meta.get("name"),
                exc,
            )
        except Exception as exc:  # noqa: BLE001 - events are informative only
            log.warning(
                "could not record event %s on %s/%s: %s",
                reason,
                body.get("kind"),
                meta.get("name"),
                exc,
            )

    # -------------------------------------------------------------- catalogs

    def catalog(self, uri: str, warehouse: str) -> Any:
        from k2.catalog import load_catalog

        key = (uri, warehouse)
        with self._catalog_lock:
            if key not in self._catalogs:
                self._catalogs[key] = load_catalog(uri, warehouse)
            return self._catalogs[key]

    def forget_catalog(self, uri: str, warehouse: str) -> None:
        with self._catalog_lock:
            self._catalogs.pop((uri, warehouse), None)


# ------------------------------------------------------------------ shared helpers


def _generation(body: Mapping[str, Any]) -> int | None:
    gen = (body.get("metadata") or {}).get("generation")
    return int(gen) if gen is not None else None


def write_status(
    ctx: Context,
    body: Mapping[str, Any],
    conditions: list[st.Condition],
    fields: Mapping[str, Any] | None = None,
    *,
    observe: bool = True,
) -> None:
    """Patch the status subresource if anything changed (observe=False leaves observedGeneration)."""
    patch = st.status_update(
        body.get("status"),
        conditions,
        generation=_generation(body) if observe else None,
        fields=fields,
    )
    if patch:
        ctx.kube.patch_status(Ref.of(body), patch)


def give_up(
    ctx: Context,
    body: Mapping[str, Any],
    reason: str,
    message: str,
    fields: Mapping[str, Any] | None = None,
) -> None:
    """Degraded for `reason`, nothing to retry until the spec changes; a Warning event says why."""
    write_status(ctx, body, st.degraded(reason, message), fields)
    ctx.event(body, "Warning", reason, message)


def retry_later(
    ctx: Context,
    body: Mapping[str, Any],
    reason: str,
    message: str,
    fields: Mapping[str, Any] | None = None,
    *,
    delay: float = RETRY_SECONDS,
) -> RetryLater:
    """Degraded for `reason`, retrying: the status says so; the caller raises what it returns."""
    write_status(ctx, body, st.degraded(reason, message, retrying=True), fields)
    return RetryLater(message, delay)


def _epoch_seconds(timestamp: Any) -> float:
    """An RFC 3339 UTC timestamp as epoch seconds (0 when absent or unreadable)."""
    try:
        return (
            dt.datetime.strptime(str(timestamp), "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=dt.UTC)
            .timestamp()
        )
    except ValueError:
        return 0.0


def _to_reconcile(ctx: Context, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object as the API server has it now, or None when there is nothing to reconcile:
    it is gone, being deleted, or paused (then its status says so)."""
    fresh = ctx.kube.get(Ref.of(body))
    if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
        return None
    if is_paused(fresh):
        write_status(
            ctx,
            fresh,
            st.paused("reconciliation paused by annotation k2.io/paused"),
            observe=False,
        )
        return None
    return fresh


def _owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = owner["metadata"].get("uid")
    return any(
        r.get("uid") == uid for r in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def _prune(ctx: Context, owner: Mapping[str, Any], kind: str, wanted: set[str], why: str) -> None:
    """Delete the owner's children of `kind` (by its pipeline label) that are not `wanted`."""
    meta = owner["metadata"]
    for obj in ctx.kube.list(
        Ref.kind_of(kind, meta.get("namespace") or "default", ""),
        label_selector=f"{LABEL_PIPELINE}={meta['name']}",
    ):
        if _owned_by(obj, owner) and obj["metadata"]["name"] not in wanted:
            ctx.kube.delete(Ref.of(obj), uid=obj["metadata"].get("uid"))
            ctx.event(
                owner, "Normal", "Pruned", f"deleted {kind} {obj['metadata']['name']} ({why})"
            )


def _apply_child(ctx: Context, owner: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply one child; an event when it was created or its spec changed."""
    ref = Ref.of(obj)
    before = ctx.kube.get(ref)
    after = ctx.kube.apply(obj)
    if before is None:
        ctx.event(owner, "Normal", "Created", f"created {ref.kind} {ref.name}")
    elif (before.get("metadata") or {}).get("generation") != (after.get("metadata") or {}).get(
        "generation"
    ):
        ctx.event(owner, "Normal", "Updated", f"updated {ref.kind} {ref.name}")
    return after


# ------------------------------------------------------------------ ExchangeFeed


def feed_conditions(deployment: Mapping[str, Any], replicas: int) -> list[st.Condition]:
    """Ready/Progressing/Degraded of a feed from its Deployment's status (pure)."""
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conds.get("Progressing") or {}
    failure = conds.get("ReplicaFailure") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return st.degraded(
            "RolloutStuck",
            str(progressing.get("message") or "the rollout made no progress"),
        )
    if failure.get("status") == "True":
        return st.degraded(
            "ReplicaFailure",
            str(failure.get("message") or "replica creation failed"),
            retrying=True,
        )
    if replicas == 0:
        return st.ready("ScaledToZero", "replicas is 0: the feed is stopped")
    observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    available = int(status.get("availableReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if observed and available >= replicas and updated >= replicas:
        return st.ready("IngestorAvailable", f"{available}/{replicas} ingestor replicas available")
    return st.progressing(
        "RollingOut",
        f"{available}/{replicas} ingestor replicas available, {updated} updated",
        ready_reason="IngestorUnavailable",
    )


def reconcile_feed(ctx: Context, body: Mapping[str, Any]) -> None:
    """ExchangeFeed -> ingestor Deployment + Service, the Kafka topic, status."""
    live = _to_reconcile(ctx, body)
    if live is None:
        return
    body = live
    ns = body["metadata"].get("namespace") or "default"
    pipelines = ctx.kube.list(Ref.kind_of("MedallionPipeline", ns, ""))
    kafka = feed_kafka(body, pipelines, ctx.settings)
    try:
        children = render_feed(body, kafka, ctx.settings)
    except DeclarationError as exc:
        give_up(ctx, body, "InvalidSpec", str(exc))
        return
    try:
        deployment = _apply_child(ctx, body, children.deployment)
        _apply_child(ctx, body, children.service)
    except ApiException as exc:
        message = f"applying children failed: {api_message(exc)}"
        raise retry_later(ctx, body, "ApplyFailed", message) from exc

    # The topic: once it exists, don't ask Kafka again; when Kafka was not reachable, ask
    # again only after a while (child events reconcile often) or when the spec changed.
    status = body.get("status") or {}
    old_topic = status.get("topic") or {}
    same_topic = old_topic.get("name") == children.topic.name
    topic_done = (
        same_topic
        and old_topic.get("state") in (CREATED, EXISTS)
        and int(old_topic.get("partitions") or 0) >= children.topic.partitions
    )
    recently_tried = (
        same_topic
        and status.get("observedGeneration") == _generation(body)
        and time.time() - _epoch_seconds(old_topic.get("checkedAt")) < ctx.topic_retry_seconds
    )
    if topic_done or recently_tried:
        topic_status = dict(old_topic)
    else:
        result = ctx.topics.ensure(kafka.bootstrap_servers, children.topic)
        topic_status = {**result.as_status(), "checkedAt": st.now()}
        if result.state == CREATED:
            ctx.event(
                body,
                "Normal",
                "TopicCreated",
                f"created Kafka topic {result.name} ({result.message})",
            )
        elif result.state == FAILED:
            ctx.event(
                body,
                "Warning",
                "TopicFailed",
                f"Kafka topic {result.name}: {result.message}",
            )

    conditions = feed_conditions(deployment, children.feed.replicas)
    if topic_status.get("state") == FAILED:
        conditions = st.degraded("TopicFailed", str(topic_status.get("message")), retrying=True)
    dep_status = deployment.get("status") or {}
    write_status(
        ctx,
        body,
        conditions,
        {
            "deployment": children.deployment["metadata"]["name"],
            "service": children.service["metadata"]["name"],
            "replicas": int(dep_status.get("replicas") or 0),
            "readyReplicas": int(dep_status.get("readyReplicas") or 0),
            "symbols": list(children.feed.symbols),
            "topic": topic_status,
        },
    )


# ------------------------------------------------------------------ IcebergTable


def _catalog_error(exc: BaseException) -> str:
    """CatalogUnavailable for connection problems, CatalogError for the rest."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return "CatalogUnavailable"
    return "CatalogError"


def reconcile_table(ctx: Context, body: Mapping[str, Any]) -> None:
    """IcebergTable -> create or evolve the table through k2.iceberg_ddl; status from the table."""
    from k2 import iceberg_ddl

    live = _to_reconcile(ctx, body)
    if live is None:
        return
    body = live
    spec = plain(body.get("spec") or {})
    catalog_spec = spec.get("catalog") or {}
    uri = str(catalog_spec.get("uri") or "http://iceberg-rest:8181")
    warehouse = str(catalog_spec.get("warehouse") or "s3://k2-warehouse/")
    try:
        table_spec = TableSpec.from_cr_spec(spec)
        iceberg_ddl.validate_spec(table_spec)
    except (KeyError, TypeError, ValueError) as exc:
        give_up(ctx, body, "InvalidSpec", str(exc))
        return
    ident = table_spec.identifier
    try:
        catalog = ctx.catalog(uri, warehouse)
        changes = iceberg_ddl.plan_in(catalog, table_spec)
        if changes:
            iceberg_ddl.apply(catalog, changes)
        table = catalog.load_table(ident)
        info = iceberg_ddl.table_status(table)
    except iceberg_ddl.PlanError as exc:
        give_up(ctx, body, "IncompatibleChange", str(exc), {"identifier": ident})
        return
    except Exception as exc:
        ctx.forget_catalog(uri, warehouse)
        reason = _catalog_error(exc)
        message = f"{ident} at {uri}: {type(exc).__name__}: {exc}"
        raise retry_later(ctx, body, reason, message, {"identifier": ident}) from exc
    described = [c.describe() for c in changes]
    if changes:
        created = any(isinstance(c, iceberg_ddl.CreateTable) for c in changes)
        ctx.event(body, "Normal", "Created" if created else "Evolved", "; ".join(described))
    fields: dict[str, Any] = {
        "identifier": info["identifier"],
        "tableUUID": info["uuid"],
        "formatVersion": info["formatVersion"],
        "schemaId": info["schemaId"],
        "specId": info["specId"],
        "snapshotCount": info["snapshotCount"],
        "currentSnapshotId": info["currentSnapshotId"],
        "location": info["location"],
        "partitioning": info["partitioning"],
        "sortOrder": info["sortOrder"],
    }
    if described:
        fields["lastChanges"] = described
    message = f"{ident}: schema {info['schemaId']}, {info['snapshotCount']} snapshot(s)"
    write_status(ctx, body, st.ready("TableReady", message), fields)


def finalize_table(ctx: Context, body: Mapping[str, Any]) -> None:
    """On delete: drop and purge the table (deletionPolicy Delete) or keep it (Retain)."""
    from pyiceberg.exceptions import NoSuchTableError

    from k2 import iceberg_ddl

    spec = plain(body.get("spec") or {})
    ident = f"{spec.get('namespace') or 'market_data'}.{spec.get('name')}"
    policy = spec.get("deletionPolicy") or "Retain"
    if is_paused(body):
        ctx.event(
            body,
            "Normal",
            "Retained",
            f"{ident} kept: the resource is paused (k2.io/paused)",
        )
        return
    if policy != "Delete":
        ctx.event(
            body,
            "Normal",
            "Retained",
            f"{ident} kept in the catalog (deletionPolicy {policy})",
        )
        return
    catalog_spec = spec.get("catalog") or {}
    uri = str(catalog_spec.get("uri") or "http://iceberg-rest:8181")
    warehouse = str(catalog_spec.get("warehouse") or "s3://k2-warehouse/")
    try:
        result = iceberg_ddl.drop(ctx.catalog(uri, warehouse), ident, purge=True)
    except NoSuchTableError:
        ctx.event(body, "Normal", "AlreadyDropped", f"{ident} was not in the catalog")
        return
    except Exception as exc:
        ctx.forget_catalog(uri, warehouse)
        message = f"dropping {ident} at {uri} failed: {type(exc).__name__}: {exc}"
        ctx.event(body, "Warning", "DropFailed", message)
        raise RetryLater(message) from exc
    ctx.event(
        body,
        "Normal",
        "Dropped",
        f"dropped {ident} and purged its files ({result.location})",
    )


# ------------------------------------------------------------------ MedallionPipeline


def application_state(app: Mapping[str, Any] | None) -> str:
    state = ((app or {}).get("status") or {}).get("applicationState") or {}
    return str(state.get("state") or "")


def pipeline_conditions(
    tables: Sequence[Mapping[str, Any]], apps: Mapping[str, Mapping[str, Any] | None]
) -> list[st.Condition]:
    """Roll-up of the children's state (pure)."""
    degraded_tables = [t for t in tables if st.is_true(t.get("status"), st.DEGRADED)]
    failed_apps = {layer: a for layer, a in apps.items() if application_state(a) in FAILED_STATES}
    if failed_apps:
        parts = []
        for layer, app in failed_apps.items():
            err = (((app or {}).get("status") or {}).get("applicationState") or {}).get(
                "errorMessage"
            ) or ""
            parts.append(f"{layer}: {application_state(app)}" + (f" ({err})" if err else ""))
        return st.degraded("ApplicationFailed", "; ".join(parts), retrying=True)
    if degraded_tables:
        parts = []
        for t in degraded_tables:
            c = st.condition(t.get("status"), st.DEGRADED) or {}
            parts.append(f"{t['metadata']['name']} ({c.get('reason')})")
        first = st.condition(degraded_tables[0].get("status"), st.DEGRADED) or {}
        message = (
            f"{len(parts)} table(s) degraded: {', '.join(parts)}; first: {first.get('message')}"
        )
        return st.degraded("TableDegraded", message[:1000], retrying=True)
    ready_tables = sum(1 for t in tables if st.is_true(t.get("status"), st.READY))
    running = sum(1 for a in apps.values() if application_state(a) == RUNNING)
    summary = (
        f"{ready_tables}/{len(tables)} tables ready, {running}/{len(apps)} applications running"
    )
    if ready_tables < len(tables):
        return st.progressing("WaitingForTables", summary, ready_reason="TablesNotReady")
    if running < len(apps):
        return st.progressing(
            "WaitingForApplications", summary, ready_reason="ApplicationsNotRunning"
        )
    return st.ready("PipelineRunning", summary)


def compaction_status(cron_job: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The pipeline's view of its gold compaction CronJob, as the CronJob controller reports
    it (pure); None when compaction is disabled."""
    if cron_job is None:
        return None
    status = cron_job.get("status") or {}
    out: dict[str, Any] = {
        "cronJob": (cron_job.get("metadata") or {}).get("name", ""),
        "schedule": (cron_job.get("spec") or {}).get("schedule", ""),
        "active": len(status.get("active") or []),
    }
    for key in ("lastScheduleTime", "lastSuccessfulTime"):
        if status.get(key):
            out[key] = status[key]
    return out


def _reconcile_application(
    ctx: Context,
    body: Mapping[str, Any],
    layer: str,
    children: PipelineChildren,
    existing: Mapping[str, Any] | None,
    epochs: dict[str, int],
    render: Callable[[dict[str, int]], PipelineChildren],
) -> dict[str, Any] | None:
    """Create, keep or restart (delete + create) one SparkApplication."""
    desired = children.applications[layer]
    ref = Ref.of(desired)
    if existing is None:
        return _apply_child(ctx, body, desired)
    old_hash = ((existing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    new_hash = desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    if old_hash == new_hash:
        return ctx.kube.apply(desired)  # no-op unless a field was edited by hand
    # The spec changed: spark-operator only resubmits a new object, so delete + create.
    old_location = checkpoint_location(children.pipeline, layer, epochs[layer])
    if children.pipeline.reset_checkpoints:
        epochs[layer] += 1
        # Persist the new epoch before deleting: a crash in between must not reuse the old path.
        ctx.kube.patch_status(Ref.of(body), {"checkpointEpochs": dict(epochs)})
        desired = render(epochs).applications[layer]
    new_location = checkpoint_location(children.pipeline, layer, epochs[layer])
    ctx.kube.delete(ref, uid=existing["metadata"].get("uid"))
    if ctx.kube.get(ref) is not None:  # finalizers (spark-operator) still running
        ctx.event(
            body,
            "Normal",
            "Restarting",
            f"SparkApplication {ref.name} is terminating; it will be recreated",
        )
        raise RetryLater(f"waiting for SparkApplication {ref.name} to go away", delay=3)
    created = ctx.kube.apply(desired)
    kept = "kept" if new_location == old_location else f"reset to {new_location}"
    ctx.event(
        body,
        "Normal",
        "Restarted",
        f"restarted SparkApplication {ref.name}: spec {old_hash} -> {desired['metadata']['annotations'][ANNOTATION_SPEC_HASH]}, checkpoint {kept}",
    )
    return created


def reconcile_pipeline(ctx: Context, body: Mapping[str, Any]) -> None:
    """MedallionPipeline -> IcebergTables + SparkApplications + the gold compaction CronJob;
    status rolled up from the tables and applications."""
    live = _to_reconcile(ctx, body)
    if live is None:
        return
    body = live
    meta = body["metadata"]
    ns = meta.get("namespace") or "default"
    spec = body.get("spec") or {}
    feed_bodies = []
    missing = []
    for name in spec.get("feeds") or []:
        feed = ctx.kube.get(Ref.kind_of("ExchangeFeed", ns, name))
        if feed is None or (feed.get("metadata") or {}).get("deletionTimestamp"):
            missing.append(name)
        else:
            feed_bodies.append(feed)
    if missing:
        message = f"no ExchangeFeed named {', '.join(missing)} in namespace {ns}"
        raise retry_later(ctx, body, "FeedNotFound", message, delay=30)

    existing_apps = {
        a["metadata"]["name"]: a
        for a in ctx.kube.list(
            Ref.kind_of("SparkApplication", ns, ""),
            label_selector=f"{LABEL_PIPELINE}={meta['name']}",
        )
        if _owned_by(a, body)
    }
    try:
        probe = parse(body, feed_bodies)
    except DeclarationError as exc:
        give_up(ctx, body, "InvalidSpec", str(exc))
        return
    # Checkpoint epochs: the live application's annotation wins, else the status.
    saved = (body.get("status") or {}).get("checkpointEpochs") or {}
    epochs: dict[str, int] = {}
    for layer in LAYERS:
        app = existing_apps.get(f"{probe.name}-{layer}")
        note = ((app or {}).get("metadata") or {}).get("annotations") or {}
        epochs[layer] = int(note.get(ANNOTATION_CHECKPOINT_EPOCH) or saved.get(layer) or 0)

    def render(e: Mapping[str, int]) -> PipelineChildren:
        return render_pipeline(body, feed_bodies, epochs=e, settings=ctx.settings)

    children = render(epochs)

    try:
        _apply_child(ctx, body, children.declaration)
        tables = [_apply_child(ctx, body, t) for t in children.tables]
        apps: dict[str, dict[str, Any] | None] = {}
        for layer in LAYERS:
            name = children.applications[layer]["metadata"]["name"]
            apps[layer] = _reconcile_application(
                ctx, body, layer, children, existing_apps.get(name), epochs, render
            )
        # Children that are no longer desired (e.g. the silver table of a removed feed).
        wanted = {t["metadata"]["name"] for t in children.tables}
        _prune(ctx, body, "IcebergTable", wanted, "no longer in the spec")
        wanted_apps = {a["metadata"]["name"] for a in children.applications.values()}
        for name, a in existing_apps.items():
            if name not in wanted_apps:
                ctx.kube.delete(Ref.of(a), uid=a["metadata"].get("uid"))
                ctx.event(body, "Normal", "Pruned", f"deleted SparkApplication {name}")
        # The gold compaction CronJob: applied while spec.compaction.enabled, else pruned.
        cron_job = None
        if children.compaction is not None:
            cron_job = _apply_child(ctx, body, children.compaction)
        wanted_cron = {children.compaction["metadata"]["name"]} if children.compaction else set()
        # (a CronJob's Jobs and their pods follow it by ownerReferences)
        _prune(ctx, body, "CronJob", wanted_cron, "compaction disabled")
    except ApiException as exc:
        message = f"applying children failed: {api_message(exc)}"
        raise retry_later(ctx, body, "ApplyFailed", message) from exc

    conditions = pipeline_conditions(tables, apps)
    running = sum(1 for a in apps.values() if application_state(a) == RUNNING)
    ready_tables = sum(1 for t in tables if st.is_true(t.get("status"), st.READY))
    write_status(
        ctx,
        body,
        conditions,
        {
            "tablesReady": f"{ready_tables}/{len(tables)}",
            "applicationsRunning": f"{running}/{len(apps)}",
            "feeds": [
                {
                    "name": f["metadata"]["name"],
                    "exchange": str((f.get("spec") or {}).get("exchange", "")).lower(),
                    "topic": feed.topic,
                    "ready": st.is_true(f.get("status"), st.READY),
                }
                for f, feed in zip(feed_bodies, children.pipeline.feeds, strict=True)
            ],
            "tables": [
                {
                    "name": t["spec"]["name"],
                    "resource": t["metadata"]["name"],
                    "ready": st.is_true(t.get("status"), st.READY),
                    "reason": (st.condition(t.get("status"), st.READY) or {}).get("reason", ""),
                }
                for t in tables
            ],
            "applications": [
                {
                    "layer": layer,
                    "name": (app or {}).get("metadata", {}).get("name", ""),
                    "state": application_state(app),
                    "specHash": ((app or {}).get("metadata", {}).get("annotations") or {}).get(
                        ANNOTATION_SPEC_HASH, ""
                    ),
                    "checkpointLocation": checkpoint_location(
                        children.pipeline, layer, epochs[layer]
                    ),
                    "checkpointEpoch": epochs[layer],
                }
                for layer, app in apps.items()
            ],
            "checkpointEpochs": dict(epochs),
            "compaction": compaction_status(cron_job),  # None removes it (merge patch)
        },
    )


def pipelines_listing(ctx: Context, namespace: str, feed_name: str) -> list[dict[str, Any]]:
    """The MedallionPipelines of a namespace that list `feed_name`."""
    return [
        p
        for p in ctx.kube.list(Ref.kind_of("MedallionPipeline", namespace, ""))
        if feed_name in ((p.get("spec") or {}).get("feeds") or [])
    ]


def owner_of(obj: Mapping[str, Any]) -> Ref | None:
    """The K2 resource controlling a child (ExchangeFeed or MedallionPipeline), if any."""
    ns = (obj.get("metadata") or {}).get("namespace") or "default"
    for r in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if r.get("controller") and r.get("kind") in (
            "ExchangeFeed",
            "MedallionPipeline",
        ):
            return Ref.kind_of(str(r["kind"]), ns, str(r["name"]))
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_FEED):
        return Ref.kind_of("ExchangeFeed", ns, labels[LABEL_FEED])
    return None


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    defaults = Settings()
    return Settings(
        ingestor_image=env.get("K2_OPERATOR_INGESTOR_IMAGE") or defaults.ingestor_image,
        compaction_image=env.get("K2_OPERATOR_COMPACTION_IMAGE") or defaults.compaction_image,
        kafka_bootstrap=env.get("K2_OPERATOR_KAFKA_BOOTSTRAP_DEFAULT") or defaults.kafka_bootstrap,
        schema_registry_url=env.get("K2_OPERATOR_SCHEMA_REGISTRY_DEFAULT")
        or defaults.schema_registry_url,
        jobs_dir=env.get("K2_OPERATOR_JOBS_DIR") or defaults.jobs_dir,
        s3_credentials_secret=env.get("K2_OPERATOR_S3_CREDENTIALS_SECRET")
        or defaults.s3_credentials_secret,
        s3_access_key_id_key=env.get("K2_OPERATOR_S3_ACCESS_KEY_ID_KEY")
        or defaults.s3_access_key_id_key,
        s3_secret_access_key_key=env.get("K2_OPERATOR_S3_SECRET_ACCESS_KEY_KEY")
        or defaults.s3_secret_access_key_key,
    )
