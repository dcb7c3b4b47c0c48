"""What the three job shells share: options, the SparkSession, triggers, running a query.

A job runs in one of two places:

- under spark-submit (the spark-operator's SparkApplication): the master, executors and
  jars come from spark-submit; the job only adds the Iceberg catalog and its own settings;
- as a plain Python process (`k2 job ...`, tests, `k2 up`): `k2.spark_session` starts a
  local driver with the connector jars, `local[N]` with N from the declaration's executor
  cores (capped by this machine's).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from k2 import pipeline as pipeline_mod
from k2.contracts.tables import TableSpec
from k2.pipeline import Pipeline

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

CATALOG = "k2"
log = logging.getLogger("k2_jobs")


@dataclass(frozen=True)
class JobOptions:
    """How to run a job, beyond the declaration (command-line overrides)."""

    available_now: bool = (
        False  # process what is there, in as many batches as limits allow, then exit
    )
    trigger: str | None = None  # overrides jobs[layer].trigger
    max_per_trigger: int | None = None  # overrides jobs[layer].maxOffsetsPerTrigger
    master: str | None = None  # local mode only; default local[N]
    timeout: float | None = None  # stop after this many seconds (benchmarks, tests)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every job takes (also `k2 job LAYER ...`)."""
    parser.add_argument(
        "-f", "--file", required=True, help="pipeline declaration (multi-document YAML)"
    )
    g = parser.add_argument_group("endpoint overrides (default: the declaration's)")
    g.add_argument("--bootstrap-servers", dest="kafka_bootstrap", help="Kafka bootstrap servers")
    g.add_argument(
        "--schema-registry-url",
        dest="schema_registry_url",
        help="Confluent-compatible registry URL",
    )
    g.add_argument("--catalog-uri", dest="catalog_uri", help="Iceberg REST catalog URI")
    g.add_argument("--warehouse", dest="warehouse", help="Iceberg warehouse location")
    g.add_argument(
        "--checkpoint-location",
        dest="checkpoint_location",
        help="root of the streaming checkpoints",
    )
    g.add_argument(
        "--starting-offsets",
        dest="starting_offsets",
        help="Kafka startingOffsets for a new checkpoint",
    )
    r = parser.add_argument_group("run")
    r.add_argument(
        "--available-now",
        action="store_true",
        help="process everything available (respecting the per-trigger limits), then exit",
    )
    r.add_argument(
        "--trigger",
        help="processing-time trigger, e.g. '2 seconds' (default: the declaration's)",
    )
    r.add_argument(
        "--max-per-trigger",
        type=int,
        help="max Kafka offsets (bronze) or rows (silver, gold) per micro-batch (default: the declaration's)",
    )
    r.add_argument("--master", help="Spark master when not under spark-submit (default local[N])")
    r.add_argument("--timeout", type=float, help="stop the query after this many seconds")


ENDPOINT_FIELDS = (
    "kafka_bootstrap",
    "schema_registry_url",
    "catalog_uri",
    "warehouse",
    "checkpoint_location",
    "starting_offsets",
)


def pipeline_from_args(args: argparse.Namespace) -> Pipeline:
    p = pipeline_mod.load(args.file)
    overrides = {k: getattr(args, k) for k in ENDPOINT_FIELDS if getattr(args, k, None)}
    return p.with_endpoints(**overrides) if overrides else p


def options_from_args(args: argparse.Namespace) -> JobOptions:
    if args.trigger and not pipeline_mod.TRIGGER_RE.match(args.trigger):
        raise SystemExit(f"--trigger {args.trigger!r} is not like '5 seconds'")
    return JobOptions(
        available_now=bool(args.available_now),
        trigger=args.trigger,
        max_per_trigger=args.max_per_trigger,
        master=args.master,
        timeout=args.timeout,
    )


def table_name(pipeline: Pipeline, spec: TableSpec) -> str:
    """The table's Spark identifier: catalog.namespace.table (namespace from the declaration)."""
    return f"{CATALOG}.{pipeline.namespace}.{spec.name}"


def require_tables(spark: SparkSession, names: Sequence[str]) -> None:
    """Fail with a clear message when a table is missing (tables are created by
    `k2 tables apply`, `k2 up` or the operator, never by a job)."""
    missing = [n for n in names if not spark.catalog.tableExists(n)]
    if missing:
        raise SystemExit(
            f"k2 job: table(s) {', '.join(missing)} do not exist in the catalog: "
            "create them first (k2 tables apply, k2 up, or the operator)"
        )


def trigger_kwargs(pipeline: Pipeline, layer: str, options: JobOptions) -> dict[str, Any]:
    if options.available_now:
        return {"availableNow": True}
    return {"processingTime": options.trigger or pipeline.jobs[layer].trigger}


def max_per_trigger(pipeline: Pipeline, layer: str, options: JobOptions) -> int | None:
    n = (
        options.max_per_trigger
        if options.max_per_trigger is not None
        else pipeline.jobs[layer].max_offsets_per_trigger
    )
    return n if n and n > 0 else None


def under_spark_submit() -> bool:
    """True when spark-submit started this Python (it hands over its JVM's gateway)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def local_cores(pipeline: Pipeline) -> int:
    want = max(1, pipeline.spark.executor.cores * max(1, pipeline.spark.executor_instances))
    return max(1, min(want, os.cpu_count() or 1))


def job_conf(pipeline: Pipeline, layer: str, *, cores: int) -> dict[str, str]:
    """Spark settings of a job (pure): small shuffles for small micro-batches, the catalog
    without its table cache (a job must see other jobs' commits at once), then the
    declaration's own `spark.conf`, which wins. (The operator renders these into each
    layer's SparkApplication; `layer` is there for per-layer settings, none so far.)"""
    conf = {
        "spark.sql.shuffle.partitions": str(max(2, cores)),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        f"spark.sql.catalog.{CATALOG}.cache-enabled": "false",
        "spark.sql.session.timeZone": "UTC",
    }
    conf.update(pipeline.spark.conf)
    return conf


def session(pipeline: Pipeline, layer: str, options: JobOptions = JobOptions()) -> SparkSession:
    """The job's SparkSession (see the module docstring for the two modes)."""
    if under_spark_submit():
        from pyspark.sql import SparkSession

        from k2.spark_session import iceberg_spark_conf

        conf = {
            **iceberg_spark_conf(pipeline.catalog_uri, pipeline.warehouse, catalog_name=CATALOG),
            **job_conf(
                pipeline,
                layer,
                cores=pipeline.spark.executor.cores * pipeline.spark.executor_instances,
            ),
        }
        builder = SparkSession.builder.appName(f"k2-{pipeline.name}-{layer}")
        for k, v in conf.items():
            builder = builder.config(k, v)
        return builder.getOrCreate()
    from k2.spark_session import spark_session

    cores = local_cores(pipeline)
    extra = {
        "spark.driver.memory": pipeline.spark.driver.memory,
        **job_conf(pipeline, layer, cores=cores),
    }
    return spark_session(
        f"k2-{pipeline.name}-{layer}",
        catalog_uri=pipeline.catalog_uri,
        warehouse=pipeline.warehouse,
        catalog_name=CATALOG,
        master=options.master or os.environ.get("K2_SPARK_MASTER") or f"local[{cores}]",
        extra_conf=extra,
    )


class QueryId:
    """The streaming query's id, for foreachBatch functions that are created before the
    query exists: `start()` sets it, the first batch waits for it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._value = ""

    def set(self, value: str) -> None:
        self._value = value
        self._event.set()

    def get(self, timeout: float = 60.0) -> str:
        if not self._event.wait(timeout):
            raise RuntimeError("streaming query id was never set")
        return self._value


StartFn = Callable[["SparkSession", Pipeline, JobOptions], "StreamingQuery"]


class QueryFailed(RuntimeError):
    """The streaming query stopped with an exception (`cause`, a StreamingQueryException)."""

    def __init__(self, name: str | None, cause: BaseException) -> None:
        super().__init__(f"streaming query {name} failed: {cause}")
        self.cause = cause


def is_kafka_metrics_npe(exc: BaseException | str) -> bool:
    """Spark 4.1's Kafka source fails progress reporting with a NullPointerException after
    the first batch of a restart when that batch is replayed from the offset log (it never
    asked Kafka for the latest offsets; SPARK-55271). The batch itself has run and is in
    the commit log by then, so starting the query again is safe and resumes normally."""
    text = exc if isinstance(exc, str) else str(exc) + str(getattr(exc, "_stackTrace", "") or "")
    return "scala.Option.get()" in text and "IterableOps.map" in text


def run_query(spark: SparkSession, pipeline: Pipeline, options: JobOptions, start: StartFn) -> None:
    """Start the query and wait for it, restarting it after the Kafka source's known
    progress-reporting failure on a replayed batch (see is_kafka_metrics_npe)."""
    for attempt in range(3):
        query = start(spark, pipeline, options)
        log.info("k2 job: query %s (%s, run %s) started", query.name, query.id, query.runId)
        try:
            await_query(query, options)
            return
        except QueryFailed as failed:
            if attempt < 2 and is_kafka_metrics_npe(failed.cause):
                log.warning(
                    "k2 job: query %s hit SPARK-55271 after a replayed batch: restarting it",
                    query.name,
                )
                continue
            raise


def await_query(query: StreamingQuery, options: JobOptions) -> None:
    """Block until the query ends (availableNow), the timeout passes, or SIGTERM/SIGINT.

    A signal stops the query between or during batches: anything not committed is
    replayed from the checkpoint by the next run, and every sink is idempotent on replay.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.warning("k2 job: signal %d, stopping the query", signum)
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    deadline = time.monotonic() + options.timeout if options.timeout else None
    try:
        from pyspark.errors import StreamingQueryException

        while query.isActive and not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                query.awaitTermination(1)
            except StreamingQueryException as failed:
                raise QueryFailed(query.name, failed) from failed
        if query.isActive:
            query.stop()
        error = query.exception()
        if error is not None:
            raise QueryFailed(query.name, error)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("K2_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpx2", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_job(layer: str, start: StartFn, pipeline: Pipeline, options: JobOptions) -> int:
    """Start the layer's query on a new (or the current) session and wait for it."""
    configure_logging()
    spark = session(pipeline, layer, options)
    log.info("k2 job %s: checkpoint %s", layer, pipeline.checkpoint(layer))
    run_query(spark, pipeline, options, start)
    log.info("k2 job %s: stopped", layer)
    return 0


def run_jobs(starts: Mapping[str, StartFn], pipeline: Pipeline, options: JobOptions) -> int:
    """Every layer's query in one driver (`k2 job all`, what `k2 up` runs): one JVM instead
    of one per layer on a small machine, the layers sharing its cores through the FAIR
    scheduler. SIGTERM/SIGINT stop every query; a query that fails (beyond run_query's
    SPARK-55271 restarts) stops the others too, and the exit status is 1. Draining
    (available-now) is refused, exit status 2: one layer ending would end the others."""
    if options.available_now:
        print(
            "k2 job all: --available-now runs one layer at a time (k2 job bronze "
            "--available-now, then silver, then gold): each drains what the one before wrote",
            file=sys.stderr,
        )
        return 2
    configure_logging()
    conf = {**pipeline.spark.conf, "spark.scheduler.mode": "FAIR"}
    pipeline = dataclasses.replace(pipeline, spark=dataclasses.replace(pipeline.spark, conf=conf))
    spark = session(pipeline, "all", options)
    stop = threading.Event()
    failed: list[str] = []

    def run(layer: str, start: StartFn) -> None:
        log.info("k2 job %s: checkpoint %s", layer, pipeline.checkpoint(layer))
        # Its own FAIR pool (the query's batches inherit this thread's local properties):
        # without one, all three share the default pool, which runs their jobs FIFO.
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", layer)
        try:
            run_query(spark, pipeline, options, start)
        except Exception as exc:  # noqa: BLE001 - reported, and the other layers stopped
            log.error("k2 job %s failed: %s", layer, exc)
            failed.append(layer)
        stop.set()  # one layer ended: end them all (they only end together)

    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    threads = [
        threading.Thread(target=run, args=(layer, start), name=f"k2-{layer}", daemon=True)
        for layer, start in starts.items()
    ]
    try:
        for t in threads:
            t.start()
        while not stop.wait(1.0):
            pass
        log.info("k2 job all: stopping %d queries", len(spark.streams.active))
        for query in spark.streams.active:
            query.stop()
        for t in threads:
            t.join(120)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("k2 job all: stopped%s", f" ({', '.join(failed)} failed)" if failed else "")
    return 1 if failed else 0


def main_for(layer: str, start: StartFn, argv: Sequence[str] | None = None) -> int:
    """`python -m k2_jobs.<layer> -f pipeline.yaml [...]` (a SparkApplication's main file)."""
    parser = argparse.ArgumentParser(
        prog=f"k2_jobs.{layer}", description=f"K2 {layer} streaming job"
    )
    add_job_arguments(parser)
    args = parser.parse_args(argv)
    return run_job(layer, start, pipeline_from_args(args), options_from_args(args))
