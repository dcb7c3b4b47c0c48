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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("k2_jobs.sinks")


def committed_batches(spark: SparkSession, tables: Sequence[str], query_id: str) -> dict[str, int]:
    """table -> the highest `k2.batch-id` its current state holds for streaming query
    `query_id` (snapshots of the current snapshot's ancestry only: a rolled-back batch
    is not held)."""
    query_id = str(uuid.UUID(query_id))  # a UUID, nothing else goes into the SQL
    parts = [
        f"SELECT '{t}' AS t, max(CAST(s.summary['k2.batch-id'] AS BIGINT)) AS b "  # noqa: S608 - spec names, a UUID
        f"FROM {t}.snapshots s JOIN {t}.history h ON s.snapshot_id = h.snapshot_id "
        f"WHERE h.is_current_ancestor AND s.summary['k2.query-id'] = '{query_id}'"
        for t in tables
    ]
    rows = spark.sql(" UNION ALL ".join(parts)).collect()
    return {r.t: int(r.b) for r in rows if r.b is not None}


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
