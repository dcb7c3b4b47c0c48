"""Exactly-once appends from foreachBatch: every commit carries its streaming batch's identity.

Each append stamps the snapshot summary with `k2.query-id` (the streaming query's id, stable
for the life of its checkpoint), `k2.batch-id` and `k2.writer`. Spark re-runs a micro-batch
only when it was not recorded in the checkpoint's commit log, and only the first batch of a
run can be such a replay; before writing that batch, a job asks each target table for the
highest batch id it already holds for this query and skips the tables that have it.

Why not Iceberg's own streaming sink (which stamps `spark.sql.streaming.queryId`/`epochId`
and skips committed epochs)? It names data files after the query id, the epoch and the
Spark task attempt id; a replay in a fresh driver restarts task ids at 0, so it can write
files with the very names of the committed ones: an in-place overwrite of committed data
(seen here truncating a committed file when the replay was interrupted). Batch appends
name their files with a fresh UUID, so a replay never touches committed files.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("k2_jobs.sinks")


def committed_batches(
    spark: SparkSession, tables: Sequence[str], query_id: str, *, max_steps: int = 100_000
) -> dict[str, int]:
    """table -> the highest `k2.batch-id` its current state holds for streaming query
    `query_id`.

    Walks the current snapshot's ancestry, newest first, through Iceberg's Java API (no
    Spark job: this runs on the restart path, where every second counts) and stops at the
    first snapshot of this query: batches commit in order, so it holds the highest id.
    Only the ancestry counts, so a rolled-back batch is not held.
    """
    query_id = str(uuid.UUID(query_id))
    jvm: Any = spark._jvm
    spark3util = jvm.org.apache.iceberg.spark.Spark3Util
    out: dict[str, int] = {}
    for name in tables:
        table = spark3util.loadIcebergTable(spark._jsparkSession, name)
        table.refresh()
        snap = table.currentSnapshot()
        for _ in range(max_steps):
            if snap is None:
                break
            summary = snap.summary()
            if summary.get("k2.query-id") == query_id and summary.get("k2.batch-id") is not None:
                out[name] = int(summary.get("k2.batch-id"))
                break
            parent = snap.parentId()
            snap = table.snapshot(parent) if parent is not None else None
    return out


def append_batch(df: DataFrame, table: str, *, writer: str, query_id: str, batch_id: int) -> None:
    """Append with the batch's identity in the snapshot summary. A micro-batch is small and
    mostly one day: no shuffle to cluster it by partition (distribution-mode none), a
    fanout writer instead (one open file per partition present)."""
    (
        df.writeTo(table)
        .option("distribution-mode", "none")
        .option("fanout-enabled", "true")
        .option("snapshot-property.k2.writer", writer)
        .option("snapshot-property.k2.query-id", query_id)
        .option("snapshot-property.k2.batch-id", str(batch_id))
        .append()
    )


class ReplayGuard:
    """Which tables already hold a batch: asked once, on the first batch of a run."""

    def __init__(self, tables: Sequence[str]) -> None:
        self.tables = list(tables)
        self._first = True

    def done(self, spark: SparkSession, query_id: str) -> dict[str, int]:
        if not self._first:
            return {}
        self._first = False
        return committed_batches(spark, self.tables, query_id)
