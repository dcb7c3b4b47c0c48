"""Bronze: both exchange topics -> bronze_crypto_trades, raw and exactly once.

    python -m k2_jobs.bronze -f pipeline.yaml        # or: k2 job bronze -f pipeline.yaml

Kafka source -> `transforms.kafka_to_bronze` -> Iceberg's streaming sink. Exactly once:
the Kafka offsets of each micro-batch are in the checkpoint's offset log before the batch
runs, and Iceberg's sink stamps every commit with the query id and batch id
(`spark.sql.streaming.queryId` / `epochId` in the snapshot summary) and skips a batch
already committed, so a batch replayed after a crash is not written twice.

From the declaration: topics (its feeds), startingOffsets (for a new checkpoint only),
failOnDataLoss (onKafkaDataLoss: fail | skip), maxOffsetsPerTrigger and the trigger.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from k2.contracts.tables import BRONZE
from k2.pipeline import Pipeline
from k2_jobs.common import (
    JobOptions,
    main_for,
    max_per_trigger,
    require_tables,
    table_name,
    trigger_kwargs,
)
from k2_jobs.transforms import kafka_to_bronze

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

LAYER = "bronze"


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


def start(
    spark: SparkSession, pipeline: Pipeline, options: JobOptions = JobOptions()
) -> StreamingQuery:
    target = table_name(pipeline, BRONZE)
    require_tables(spark, [target])
    return (
        bronze_stream(spark, pipeline, options)
        .writeStream.format("iceberg")
        .outputMode("append")
        .queryName(f"k2-{pipeline.name}-bronze")
        .option("checkpointLocation", pipeline.checkpoint(LAYER))
        # a batch spans midnight now and then: one open file per partition instead of failing
        .option("fanout-enabled", "true")
        .trigger(**trigger_kwargs(pipeline, LAYER, options))
        .toTable(target)
    )


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(LAYER, start, argv)


if __name__ == "__main__":
    sys.exit(main())
