"""Gold: both silver tables -> gold_crypto_trades, one row per message_id, ever.

    python -m k2_jobs.gold -f pipeline.yaml          # or: k2 job gold -f pipeline.yaml

Incremental Iceberg streaming reads of every silver table, unioned; each micro-batch
(foreachBatch) is deduplicated on message_id (`transforms.silver_to_gold`) and merged
with an insert-only MERGE (`transforms.gold_merge_sql`): a message_id already in gold,
from an earlier batch, an earlier run or a replay of this very batch, is not inserted
again. The MERGE matches on exchange_date and exchange_hour too, the table's partition
columns, so only the hours present in the batch are read from gold. Iceberg writes the new rows sorted by
the table's sort order (timestamp, trade_id) into hourly partitions
(exchange_date, exchange_hour).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a main file (spark-submit .../k2_jobs/gold.py): import the k2_jobs package,
    # never this directory's modules as top-level ones.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import logging
import time
from collections.abc import Sequence
from functools import reduce
from typing import TYPE_CHECKING

from k2.contracts.tables import GOLD, silver_spec
from k2.contracts.trade import EXCHANGES
from k2.pipeline import Pipeline
from k2_jobs.common import (
    JobOptions,
    main_for,
    require_tables,
    table_name,
    trigger_kwargs,
)
from k2_jobs.silver import iceberg_stream_options
from k2_jobs.transforms import gold_merge_sql, silver_columns, silver_to_gold

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

LAYER = "gold"
log = logging.getLogger("k2_jobs.gold")


class GoldBatch:
    """The foreachBatch function: new silver rows -> MERGE into gold."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.target = table_name(pipeline, GOLD)
        self.view = f"k2_gold_batch_{pipeline.name}".replace("-", "_")

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark import StorageLevel

        started = time.monotonic()
        rows = silver_to_gold(batch).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            n = rows.count()
            if n == 0:
                return
            rows.createOrReplaceTempView(self.view)
            batch.sparkSession.sql(gold_merge_sql(self.target, self.view))
            log.info(
                "gold batch %d: %d candidate rows merged in %.1fs",
                batch_id,
                n,
                time.monotonic() - started,
            )
        finally:
            rows.unpersist()


def gold_source(
    spark: SparkSession, pipeline: Pipeline, options: JobOptions = JobOptions()
) -> DataFrame:
    """The union of the silver tables as one stream (silver's 13 columns)."""
    streams = []
    for exchange in EXCHANGES:
        reader = spark.readStream.format("iceberg")
        for k, v in iceberg_stream_options(pipeline, LAYER, options).items():
            reader = reader.option(k, v)
        streams.append(
            reader.load(table_name(pipeline, silver_spec(exchange))).select(*silver_columns())
        )
    return reduce(lambda a, b: a.unionByName(b), streams)


def start(
    spark: SparkSession, pipeline: Pipeline, options: JobOptions = JobOptions()
) -> StreamingQuery:
    fn = GoldBatch(pipeline)
    require_tables(spark, [fn.target, *(table_name(pipeline, silver_spec(e)) for e in EXCHANGES)])
    return (
        gold_source(spark, pipeline, options)
        .writeStream.foreachBatch(fn)
        .queryName(f"k2-{pipeline.name}-gold")
        .option("checkpointLocation", pipeline.checkpoint(LAYER))
        .trigger(**trigger_kwargs(pipeline, LAYER, options))
        .start()
    )


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(LAYER, start, argv)


if __name__ == "__main__":
    sys.exit(main())
