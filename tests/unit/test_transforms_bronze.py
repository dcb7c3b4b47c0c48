"""Bronze transform: Kafka source rows -> the 8 bronze columns, bytes untouched."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from k2.contracts.tables import BRONZE
from k2_jobs.transforms import kafka_to_bronze, utc_date, utc_hour

KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
    ]
)

UTC = dt.UTC


def _kafka_rows(spark: SparkSession):  # type: ignore[no-untyped-def]
    ts = dt.datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=UTC)
    return spark.createDataFrame(
        [
            (
                b"BTC/USDT",
                b"\x00\x00\x00\x00\x01\x02\xff\x00",
                "market.crypto.trades.binance",
                0,
                41,
                ts,
                0,
            ),
            (None, b"", "market.crypto.trades.kraken", 2, 7, ts, 0),
            (b"ETH/USD", None, "market.crypto.trades.kraken", 1, 0, ts, 1),
        ],
        KAFKA_SCHEMA,
    )


def test_columns_are_the_bronze_spec(spark: SparkSession) -> None:
    out = kafka_to_bronze(_kafka_rows(spark))
    assert out.columns == BRONZE.column_names()
    types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
    assert types == {
        "message_key": "string",
        "avro_payload": "binary",
        "topic": "string",
        "partition": "int",
        "offset": "bigint",
        "kafka_timestamp": "timestamp",
        "ingestion_timestamp": "timestamp",
        "ingestion_date": "date",
    }


def test_payload_and_kafka_coordinates_kept_verbatim(spark: SparkSession) -> None:
    now = dt.datetime(2026, 11, 26, 0, 30, tzinfo=UTC)
    rows = kafka_to_bronze(_kafka_rows(spark), now=F.lit(now)).orderBy("topic", "offset").collect()
    assert [bytes(r.avro_payload) if r.avro_payload is not None else None for r in rows] == [
        b"\x00\x00\x00\x00\x01\x02\xff\x00",
        None,
        b"",
    ]
    assert [(r.message_key, r.topic, r.partition, r.offset) for r in rows] == [
        ("BTC/USDT", "market.crypto.trades.binance", 0, 41),
        ("ETH/USD", "market.crypto.trades.kraken", 1, 0),
        (None, "market.crypto.trades.kraken", 2, 7),
    ]
    assert all(r.ingestion_date == dt.date(2026, 11, 26) for r in rows)


@pytest.mark.parametrize("tz", ["UTC", "America/Los_Angeles", "Asia/Tokyo"])
def test_dates_and_hours_are_utc_whatever_the_session_zone(spark: SparkSession, tz: str) -> None:
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", tz)
    try:
        df = spark.createDataFrame([(dt.datetime(2026, 1, 1, 23, 30, tzinfo=UTC),)], "ts timestamp")
        row = df.select(utc_date(F.col("ts")).alias("d"), utc_hour(F.col("ts")).alias("h")).first()
        assert row is not None
        assert (row.d, row.h) == (dt.date(2026, 1, 1), 23)
        before_epoch = spark.createDataFrame(
            [(dt.datetime(1969, 12, 31, 22, 0, tzinfo=UTC),)], "ts timestamp"
        )
        row = before_epoch.select(
            utc_date(F.col("ts")).alias("d"), utc_hour(F.col("ts")).alias("h")
        ).first()
        assert row is not None
        assert (row.d, row.h) == (dt.date(1969, 12, 31), 22)
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous or "UTC")
