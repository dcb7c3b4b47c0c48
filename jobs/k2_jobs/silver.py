"""Silver: bronze -> validated silver_<exchange>_trades, everything else -> silver_dlq_trades.

    python -m k2_jobs.silver -f pipeline.yaml        # or: k2 job silver -f pipeline.yaml

An incremental Iceberg streaming read of bronze; each micro-batch (foreachBatch):

1. decode: strip the Confluent header, `from_avro` (PERMISSIVE) with trade v3;
2. ask the registry about schema ids not seen before (`k2_jobs.registry.SchemaIds`);
3. validate (`transforms.validate_trades`) and write the valid rows of each exchange to
   its silver table and every invalid row to the DLQ, with its reason.

Invariant: every bronze row ends in exactly one of silver or the DLQ.

Exactly once per table: every append carries `k2.query-id` (the streaming query's id,
stable for the life of its checkpoint) and `k2.batch-id` in its snapshot summary. The
first batch after a (re)start is the only one that can be a replay; before writing it,
the job looks up the highest batch id each table already holds for this query and
skips the tables that have it. Validation depends only on the bronze row (timestamps
are judged against its ingestion time), so a replay computes exactly the same rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a main file (spark-submit .../k2_jobs/silver.py): import the k2_jobs package,
    # never this directory's modules as top-level ones.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from k2.contracts.tables import BRONZE, DLQ, silver_spec
from k2.contracts.trade import EXCHANGES
from k2.pipeline import Pipeline
from k2_jobs.common import (
    JobOptions,
    QueryId,
    main_for,
    max_per_trigger,
    require_tables,
    table_name,
    trigger_kwargs,
)
from k2_jobs.registry import KnownIds, SchemaIds
from k2_jobs.sinks import ReplayGuard, append_batch
from k2_jobs.transforms import (
    ERROR_TYPE,
    MAGIC,
    SCHEMA_ID,
    TRADE,
    ValidationRules,
    decode_bronze,
    invalid_to_dlq,
    valid_to_silver,
    validate_trades,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

LAYER = "silver"
WRITER = "k2-silver"
log = logging.getLogger("k2_jobs.silver")


def iceberg_stream_options(
    pipeline: Pipeline, layer: str, options: JobOptions = JobOptions()
) -> dict[str, str]:
    """Options of an Iceberg streaming read (pure). Bronze and silver are append-only;
    a retention delete of old partitions must not stop the stream, so delete snapshots
    are skipped (compaction's replace snapshots are always skipped by Iceberg)."""
    opts = {"streaming-skip-delete-snapshots": "true"}
    limit = max_per_trigger(pipeline, layer, options)
    if limit:
        opts["streaming-max-rows-per-micro-batch"] = str(limit)
    return opts


class SilverBatch:
    """The foreachBatch function: one bronze micro-batch -> silver tables + DLQ."""

    def __init__(
        self,
        pipeline: Pipeline,
        query_id: QueryId,
        *,
        schema_ids: KnownIds | None,
        rules: ValidationRules = ValidationRules(),
    ) -> None:
        self.silvers = {e: table_name(pipeline, silver_spec(e)) for e in EXCHANGES}
        self.dlq = table_name(pipeline, DLQ)
        self.topic_exchanges = {f.topic: f.exchange for f in pipeline.feeds}
        self.query_id = query_id
        self.schema_ids = schema_ids
        self.rules = rules
        self.guard = ReplayGuard(self.tables)

    @property
    def tables(self) -> list[str]:
        return [*self.silvers.values(), self.dlq]

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        started = time.monotonic()
        spark = batch.sparkSession
        qid = self.query_id.get()
        done = self.guard.done(spark, qid)  # only the first batch of a run can be a replay
        if done and all(done.get(t, -1) >= batch_id for t in self.tables):
            log.info("silver batch %d already committed to every table: skipped", batch_id)
            return
        decoded = decode_bronze(batch).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            # One job decodes the batch into the cache and counts it by (topic, schema id,
            # verdict without the registry check, exchange); the registry check is then
            # applied to the counts here and, as a projection, to the rows written.
            stats = (
                validate_trades(
                    decoded,
                    known_schema_ids=None,
                    topic_exchanges=self.topic_exchanges,
                    rules=self.rules,
                )
                .groupBy(
                    F.col("topic"),
                    F.col(SCHEMA_ID),
                    (F.col(MAGIC) == 0).alias("framed"),
                    F.col(ERROR_TYPE).isNull().alias("valid"),
                    F.col(TRADE)["exchange"].alias("exchange"),
                )
                .agg(F.count(F.lit(1)).alias("n"))
                .collect()
            )
            t_stats = time.monotonic()
            known = None
            if self.schema_ids is not None:
                framed = {(r["topic"], r[SCHEMA_ID]) for r in stats if r["framed"]}
                known = self.schema_ids(sorted(framed))
            counts: dict[tuple[bool, str | None], int] = {}
            for r in stats:
                ok = r["valid"] and (known is None or r[SCHEMA_ID] in known.get(r["topic"], set()))
                key = (bool(ok), r["exchange"] if ok else None)
                counts[key] = counts.get(key, 0) + int(r["n"])
            validated = validate_trades(
                decoded,
                known_schema_ids=known,
                topic_exchanges=self.topic_exchanges,
                rules=self.rules,
            )
            n_invalid = counts.get((False, None), 0)
            error_ts = F.lit(dt.datetime.now(dt.UTC)).cast("timestamp")
            outputs: list[tuple[str, DataFrame, int]] = [
                (table, valid_to_silver(validated, e), counts.get((True, e), 0))
                for e, table in self.silvers.items()
            ]
            outputs.append((self.dlq, invalid_to_dlq(validated, error_ts), n_invalid))
            for table, rows, n in outputs:
                if n == 0:
                    continue
                if done.get(table, -1) >= batch_id:
                    log.info("silver batch %d already in %s: skipped", batch_id, table)
                    continue
                append_batch(rows, table, writer=WRITER, query_id=qid, batch_id=batch_id)
            log.info(
                "silver batch %d: %s valid, %d to the DLQ in %.1fs (decode+count %.1fs)",
                batch_id,
                {e: counts.get((True, e), 0) for e in self.silvers},
                n_invalid,
                time.monotonic() - started,
                t_stats - started,
            )
        finally:
            decoded.unpersist()


def start(
    spark: SparkSession,
    pipeline: Pipeline,
    options: JobOptions = JobOptions(),
    *,
    schema_ids: KnownIds | None = None,
    rules: ValidationRules = ValidationRules(),
) -> StreamingQuery:
    """Start the silver query. `schema_ids` defaults to asking the declaration's registry."""
    source = table_name(pipeline, BRONZE)
    qid = QueryId()
    fn = SilverBatch(
        pipeline,
        qid,
        schema_ids=schema_ids
        if schema_ids is not None
        else SchemaIds(pipeline.schema_registry_url).known,
        rules=rules,
    )
    require_tables(spark, [source, *fn.tables])
    reader = spark.readStream.format("iceberg")
    for k, v in iceberg_stream_options(pipeline, LAYER, options).items():
        reader = reader.option(k, v)
    query = (
        reader.load(source)
        .writeStream.foreachBatch(fn)
        .queryName(f"k2-{pipeline.name}-silver")
        .option("checkpointLocation", pipeline.checkpoint(LAYER))
        .trigger(**trigger_kwargs(pipeline, LAYER, options))
        .start()
    )
    qid.set(str(query.id))
    return query


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(LAYER, start, argv)


if __name__ == "__main__":
    sys.exit(main())
