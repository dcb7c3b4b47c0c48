"""Bronze: both exchange topics -> bronze_crypto_trades, raw and exactly once.

    python -m k2_jobs.bronze -f pipeline.yaml        # or: k2 job bronze -f pipeline.yaml

Kafka source -> `transforms.kafka_to_bronze` -> one Iceberg append per micro-batch
(foreachBatch). Exactly once: a batch's Kafka offsets are in the checkpoint's offset log
before it runs, so a restart re-reads exactly the same records; every append carries the
query id and batch id in its snapshot summary, and the first batch of a run, the only one
that can be a replay, is skipped when bronze already holds it (`k2_jobs.sinks`).
`ingestion_timestamp` is the micro-batch's timestamp, also kept in the offset log, so a
replayed batch would carry the same one.

From the declaration: topics (its feeds), startingOffsets (for a new checkpoint only),
failOnDataLoss (onKafkaDataLoss: fail | skip), maxOffsetsPerTrigger and the trigger.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a main file (spark-submit .../k2_jobs/bronze.py): import the k2_jobs package,
    # never this directory's modules as top-level ones.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from k2.contracts.tables import BRONZE
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
from k2_jobs.sinks import ReplayGuard, append_batch
from k2_jobs.transforms import kafka_to_bronze

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

LAYER = "bronze"
WRITER = "k2-bronze"
log = logging.getLogger("k2_jobs.bronze")


def kafka_options(pipeline: Pipeline, options: JobOptions = JobOptions()) -> dict[str, str]:
    """The Kafka source's options (pure)."""
    opts = {
        "kafka.bootstrap.servers": pipeline.kafka_bootstrap,
        "subscribe": ",".join(pipeline.topics()),
        "startingOffsets": pipeline.starting_offsets,
        "failOnDataLoss": "true" if pipeline.fail_on_data_loss else "false",
        "includeHeaders": "false",
    }
    limit = max_per_trigger(pipeline, LAYER, options)
    if limit:
        opts["maxOffsetsPerTrigger"] = str(limit)
    return opts


def bronze_stream(
    spark: SparkSession, pipeline: Pipeline, options: JobOptions = JobOptions()
) -> DataFrame:
    reader = spark.readStream.format("kafka")
    for k, v in kafka_options(pipeline, options).items():
        reader = reader.option(k, v)
    return kafka_to_bronze(reader.load())


class BronzeBatch:
    """The foreachBatch function: one Kafka micro-batch -> one bronze append."""

    def __init__(self, pipeline: Pipeline, query_id: QueryId) -> None:
        self.target = table_name(pipeline, BRONZE)
        self.query_id = query_id
        self.guard = ReplayGuard([self.target])

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        qid = self.query_id.get()
        if self.guard.done(batch.sparkSession, qid).get(self.target, -1) >= batch_id:
            log.info("bronze batch %d already committed: skipped", batch_id)
            return
        append_batch(batch, self.target, writer=WRITER, query_id=qid, batch_id=batch_id)


def start(
    spark: SparkSession, pipeline: Pipeline, options: JobOptions = JobOptions()
) -> StreamingQuery:
    qid = QueryId()
    fn = BronzeBatch(pipeline, qid)
    require_tables(spark, [fn.target])
    query = (
        bronze_stream(spark, pipeline, options)
        .writeStream.foreachBatch(fn)
        .queryName(f"k2-{pipeline.name}-bronze")
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
