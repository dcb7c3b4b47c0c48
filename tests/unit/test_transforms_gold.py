"""Gold transform: union of silvers -> one row per message_id, exchange_hour added."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from k2.contracts.tables import GOLD
from k2_jobs.transforms import gold_merge_sql, silver_to_gold

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC)

SILVER_DDL = (
    "message_id string, trade_id string, symbol string, exchange string, timestamp timestamp, "
    "price decimal(18,8), quantity decimal(18,8), base_asset string, quote_currency string, side string, "
    "ingestion_timestamp timestamp, vendor_data map<string,string>, exchange_date date"
)


def row(
    mid: str,
    ts: dt.datetime,
    ingested: dt.datetime,
    exchange: str = "BINANCE",
    price: str = "1",
) -> tuple[Any, ...]:
    return (
        mid,
        mid.rsplit(":", 1)[-1],
        "BTC/USDT",
        exchange,
        ts,
        Decimal(price),
        Decimal("0.5"),
        "BTC",
        "USDT",
        "BUY",
        ingested,
        {"native_symbol": "BTCUSDT"},
        ts.date(),
    )


def silver(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, SILVER_DDL)


def test_columns_are_the_gold_spec(spark: SparkSession) -> None:
    gold = silver_to_gold(silver(spark, [row("BINANCE:BTCUSDT:1", T0, T0)]))
    assert gold.columns == GOLD.column_names()
    assert (
        dict((f.name, f.dataType.simpleString()) for f in gold.schema.fields)["exchange_hour"]
        == "int"
    )


def test_one_row_per_message_id_earliest_ingestion_wins(spark: SparkSession) -> None:
    late = T0 + dt.timedelta(minutes=3)
    rows = [
        row("BINANCE:BTCUSDT:1", T0, late, price="2"),  # a re-send, ingested later
        row("BINANCE:BTCUSDT:1", T0, T0, price="1"),
        row("BINANCE:BTCUSDT:2", T0, T0),
        row("KRAKEN:BTC/USD:2", T0 + dt.timedelta(seconds=1), T0, exchange="KRAKEN"),
        row(
            "KRAKEN:BTC/USD:2",
            T0 + dt.timedelta(seconds=1),
            T0 + dt.timedelta(seconds=9),
            exchange="KRAKEN",
        ),
    ]
    gold = silver_to_gold(silver(spark, rows)).orderBy("message_id").collect()
    assert [r.message_id for r in gold] == [
        "BINANCE:BTCUSDT:1",
        "BINANCE:BTCUSDT:2",
        "KRAKEN:BTC/USD:2",
    ]
    assert gold[0].price == Decimal("1")
    assert gold[2].exchange_date == dt.date(2026, 11, 26)


def test_exchange_hour_is_utc(spark: SparkSession) -> None:
    rows = [
        row(f"BINANCE:BTCUSDT:{h}", dt.datetime(2026, 11, 25, h, 30, tzinfo=UTC), T0)
        for h in (0, 13, 23)
    ]
    gold = silver_to_gold(silver(spark, rows)).orderBy("trade_id").collect()
    assert [(r.exchange_date, r.exchange_hour) for r in gold] == [
        (dt.date(2026, 11, 25), 0),
        (dt.date(2026, 11, 25), 13),
        (dt.date(2026, 11, 25), 23),
    ]


def test_merge_inserts_only_unseen_ids_and_prunes_by_hour() -> None:
    sql = gold_merge_sql("k2.market_data.gold_crypto_trades", "batch")
    assert sql.startswith("MERGE INTO k2.market_data.gold_crypto_trades AS t USING batch AS s ")
    assert (
        "ON t.message_id = s.message_id AND t.exchange_date = s.exchange_date "
        "AND t.exchange_hour = s.exchange_hour " in sql
    )
    assert "WHEN MATCHED" not in sql
    for c in GOLD.column_names():
        assert f"s.`{c}`" in sql
