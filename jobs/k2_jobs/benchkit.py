"""What the jobs' benchmarks (`k2 bench bronze|latency|recovery`) share.

`bench_workspace` brings up the services a benchmark needs (reusing a running stack
when given its directory, else starting one in a temporary directory and stopping it
afterwards), and gives the benchmark its own Iceberg namespace, topics, declaration
and checkpoints, all removed at the end. `MemorySampler` records the peak resident
memory of this process and its children (the Spark driver JVM is a child of the
Python driver).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k2 import pipeline as pipeline_mod
from k2.contracts.tables import ALL_TABLES
from k2.pipeline import Pipeline
from k2_jobs import testdata


def say(msg: str) -> None:
    print(f"k2 bench: {msg}", file=sys.stderr, flush=True)


@dataclass
class Workspace:
    dir: Path
    path: Path  # the declaration
    pipeline: Pipeline
    endpoints: dict[str, dict[str, Any]]
    topics: dict[str, str]  # exchange -> topic

    def with_pipeline(self, **changes: Any) -> Workspace:
        return dataclasses.replace(self, pipeline=dataclasses.replace(self.pipeline, **changes))


@contextlib.contextmanager
def bench_workspace(
    name: str,
    services: Sequence[str],
    *,
    stack_dir: Path | None = None,
    partitions: int = 2,
    triggers: Mapping[str, str] | None = None,
    max_per_trigger: Mapping[str, int] | None = None,
    spark_conf: Mapping[str, str] | None = None,
) -> Iterator[Workspace]:
    from k2.catalog import load_catalog
    from k2.stack.stack import Stack

    tmp = Path(tempfile.mkdtemp(prefix=f"k2-bench-{name}-"))
    stack = Stack(stack_dir or tmp / "stack")
    running = {n for n, s in stack.status().items() if s.get("healthy")}
    say(
        f"services: {', '.join(services)} ({'reusing ' + str(stack.dir) if running else 'starting'})"
    )
    endpoints = stack.up(list(services))
    started = [s for s in services if s not in running]
    suffix = uuid.uuid4().hex[:8]
    namespace = f"bench_{name}_{suffix}"
    topics = {e: f"k2bench.{name}.{e.lower()}.{suffix}" for e in ("BINANCE", "KRAKEN")}
    cat_ep = endpoints.get("catalog", {})
    registry = endpoints.get("registry", {}).get("url", "http://127.0.0.1:1/none")
    path = tmp / "pipeline.yaml"
    path.write_text(
        testdata.pipeline_yaml(
            bootstrap=endpoints["kafka"]["bootstrap_servers"],
            registry=registry,
            catalog=cat_ep.get("uri", "http://127.0.0.1:1/none"),
            warehouse=cat_ep.get("warehouse", (tmp / "warehouse").as_uri()),
            checkpoints=str(tmp / "checkpoints"),
            namespace=namespace,
            topics=topics,
            triggers=triggers,
            max_per_trigger=max_per_trigger,
        )
    )
    p = pipeline_mod.load(path)
    if spark_conf:
        p = dataclasses.replace(
            p, spark=dataclasses.replace(p.spark, conf={**p.spark.conf, **spark_conf})
        )
    specs = [dataclasses.replace(s, namespace=namespace) for s in ALL_TABLES]
    catalog = None
    try:
        if cat_ep:
            testdata.create_tables(cat_ep["uri"], cat_ep["warehouse"], specs)
            catalog = load_catalog(cat_ep["uri"], cat_ep["warehouse"])
        testdata.ensure_topics(p.kafka_bootstrap, topics.values(), partitions=partitions)
        yield Workspace(tmp, path, p, endpoints, topics)
    finally:
        if catalog is not None:
            for s in specs:
                with contextlib.suppress(Exception):
                    catalog.purge_table(s.identifier)
            with contextlib.suppress(Exception):
                catalog.drop_namespace(namespace)
        with contextlib.suppress(Exception):
            from confluent_kafka.admin import AdminClient

            AdminClient({"bootstrap.servers": p.kafka_bootstrap}).delete_topics(
                list(topics.values())
            )
        if started:
            stack.down(started)
        shutil.rmtree(tmp, ignore_errors=True)


MEMORY_LIMIT_MB = 4096


class MemorySampler:
    """Peak RSS of this process + its descendants, sampled every `interval` seconds."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_total = 0
        self.peak_jvm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil  # bench-only: the Spark jobs image leaves it out

        me = psutil.Process()
        total, jvm = 0, 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                rss = p.memory_info().rss
                total += rss
                if "java" in p.name():
                    jvm += rss
        self.peak_total = max(self.peak_total, total)
        self.peak_jvm = max(self.peak_jvm, jvm)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def result(self) -> dict[str, float]:
        return {
            "peak_driver_rss_mb": round(self.peak_total / 2**20, 1),
            "peak_driver_jvm_rss_mb": round(self.peak_jvm / 2**20, 1),
            "limit_mb": MEMORY_LIMIT_MB,
        }

    def within_limit(self) -> bool:
        """The bar: < 4 GB per Spark process (here: the driver JVM and its Python side)."""
        return self.peak_total / 2**20 < MEMORY_LIMIT_MB


class BatchAudit:
    """Counts the micro-batches of this session's streaming queries and the queries that
    ended with an error, through a StreamingQueryListener: the benchmarks' "failed batches".

    A query that fails with SPARK-55271 (the Kafka source's progress reporting after a
    replayed, already committed batch; `common.is_kafka_metrics_npe`) is counted apart:
    its batch did not fail, the query is restarted by `common.run_query`.
    """

    def __init__(self) -> None:
        self.completed: dict[str, int] = {}
        self.with_data: dict[str, int] = {}
        self.failures: list[str] = []
        self.spark_55271 = 0
        self._lock = threading.Lock()

    def attach(self, spark: Any) -> BatchAudit:
        from pyspark.sql.streaming import StreamingQueryListener

        audit = self

        class _Listener(StreamingQueryListener):
            def onQueryStarted(self, event: Any) -> None:
                pass

            def onQueryProgress(self, event: Any) -> None:
                audit.batch_done(event.progress.name or str(event.progress.id), event.progress.numInputRows)

            def onQueryIdle(self, event: Any) -> None:
                pass

            def onQueryTerminated(self, event: Any) -> None:
                audit.query_ended(event.exception)

        spark.streams.addListener(_Listener())
        return self

    def batch_done(self, name: str, rows: int) -> None:
        with self._lock:
            self.completed[name] = self.completed.get(name, 0) + 1
            if rows:
                self.with_data[name] = self.with_data.get(name, 0) + 1

    def query_ended(self, exception: str | None) -> None:
        from k2_jobs.common import is_kafka_metrics_npe

        if exception is None:
            return
        with self._lock:
            if is_kafka_metrics_npe(exception):
                self.spark_55271 += 1
            else:
                self.failures.append(exception[:2000])

    def result(self) -> dict[str, Any]:
        with self._lock:
            return {
                "completed": dict(self.completed),
                "completed_with_data": dict(self.with_data),
                "failed": len(self.failures),
                "failures": list(self.failures),
                "query_restarts_spark_55271": self.spark_55271,
            }


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    out = {f"p{int(q)}": round(float(np.percentile(arr, q)), 3) for q in qs}
    out["max"] = round(float(arr.max()), 3)
    out["mean"] = round(float(arr.mean()), 3)
    return out


def wait_for(check: Any, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False
