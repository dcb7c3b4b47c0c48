"""Silver transform: Confluent header, Avro decode (PERMISSIVE), validation, DLQ routing."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import fastavro
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from k2.contracts.serde import TradeSerializer, wire_header
from k2.contracts.tables import DLQ, SILVER_COLUMNS
from k2_jobs.transforms import (
    ErrorType,
    ValidationRules,
    decode_bronze,
    decoding_schema,
    invalid_to_dlq,
    valid_to_silver,
    validate_trades,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
BINANCE_TOPIC = "market.crypto.trades.binance"
KRAKEN_TOPIC = "market.crypto.trades.kraken"
SCHEMA_ID = 7
TOPICS = {BINANCE_TOPIC: "BINANCE", KRAKEN_TOPIC: "KRAKEN"}
KNOWN = {BINANCE_TOPIC: {SCHEMA_ID}, KRAKEN_TOPIC: {SCHEMA_ID}}


def trade(**overrides: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "message_id": "BINANCE:BTCUSDT:5000000001",
        "trade_id": "5000000001",
        "symbol": "BTC/USDT",
        "exchange": "BINANCE",
        "timestamp": NOW - dt.timedelta(seconds=2),
        "price": Decimal("97000.12345678"),
        "quantity": Decimal("0.00100000"),
        "base_asset": "BTC",
        "quote_currency": "USDT",
        "side": "SELL",
        "ingestion_timestamp": NOW - dt.timedelta(seconds=1),
        "vendor_data": {"native_symbol": "BTCUSDT", "is_best_match": "true"},
    }
    t.update(overrides)
    return t


def kraken(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "message_id": "KRAKEN:BTC/USD:81234567",
        "trade_id": "81234567",
        "symbol": "BTC/USD",
        "exchange": "KRAKEN",
        "quote_currency": "USD",
        "side": "BUY",
        "vendor_data": {"native_symbol": "BTC/USD", "ord_type": "limit"},
    }
    return trade(**{**base, **overrides})


def encode(t: dict[str, Any], schema_id: int = SCHEMA_ID) -> bytes:
    return TradeSerializer(schema_id=schema_id)(t)


def encode_wide(t: dict[str, Any]) -> bytes:
    """Bypass the producer's decimal check: what a buggy or foreign producer could send."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(decoding_schema())), t)
    return wire_header(SCHEMA_ID) + buf.getvalue()


BRONZE_DDL = (
    "message_key string, avro_payload binary, topic string, partition int, offset long, "
    "kafka_timestamp timestamp, ingestion_timestamp timestamp, ingestion_date date"
)


def bronze(spark: SparkSession, payloads: Sequence[tuple[str, bytes | None]]) -> DataFrame:
    rows = [
        ("K", p, topic, 0, i, NOW - dt.timedelta(seconds=1), NOW, NOW.date())
        for i, (topic, p) in enumerate(payloads)
    ]
    return spark.createDataFrame(rows, BRONZE_DDL)


def run(spark: SparkSession, payloads: Sequence[tuple[str, bytes | None]], **kw: Any) -> DataFrame:
    kw.setdefault("known_schema_ids", KNOWN)
    kw.setdefault("topic_exchanges", TOPICS)
    return validate_trades(decode_bronze(bronze(spark, payloads)), **kw)


def errors(validated: DataFrame) -> list[tuple[int, str | None, str | None]]:
    return [(r.offset, r.error_type, r.error_reason) for r in validated.orderBy("offset").collect()]


def test_valid_trades_decode_exactly(spark: SparkSession) -> None:
    validated = run(spark, [(BINANCE_TOPIC, encode(trade())), (KRAKEN_TOPIC, encode(kraken()))])
    assert [e[1] for e in errors(validated)] == [None, None]
    b = valid_to_silver(validated, "BINANCE").collect()
    k = valid_to_silver(validated, "kraken").collect()
    assert len(b) == 1 and len(k) == 1
    row = b[0].asDict()
    assert row == {
        **trade(),
        "exchange_date": NOW.date(),
        # Spark hands timestamps back as naive local (session UTC) datetimes
        "timestamp": (NOW - dt.timedelta(seconds=2)).replace(tzinfo=None),
        "ingestion_timestamp": (NOW - dt.timedelta(seconds=1)).replace(tzinfo=None),
    }
    assert isinstance(row["price"], Decimal) and row["price"] == Decimal("97000.12345678")
    assert k[0].exchange == "KRAKEN" and k[0].side == "BUY"


def test_silver_columns_match_the_spec(spark: SparkSession) -> None:
    silver = valid_to_silver(run(spark, [(BINANCE_TOPIC, encode(trade()))]))
    assert silver.columns == [c.name for c in SILVER_COLUMNS]
    types = {f.name: f.dataType.simpleString() for f in silver.schema.fields}
    assert types["price"] == types["quantity"] == "decimal(18,8)"
    assert types["timestamp"] == types["ingestion_timestamp"] == "timestamp"
    assert types["exchange_date"] == "date"
    assert types["vendor_data"] == "map<string,string>"
    assert types["exchange"] == types["side"] == "string"


CASES: list[tuple[str, bytes | None, str, str]] = [
    (BINANCE_TOPIC, None, ErrorType.MALFORMED_HEADER, "payload is null"),
    (BINANCE_TOPIC, b"\x00\x00\x07", ErrorType.MALFORMED_HEADER, "3 bytes"),
    (
        BINANCE_TOPIC,
        b"\x01" + encode(trade())[1:],
        ErrorType.MALFORMED_HEADER,
        "magic byte is 1",
    ),
    (
        BINANCE_TOPIC,
        encode(trade(), schema_id=99),
        ErrorType.UNKNOWN_SCHEMA_ID,
        "schema id 99",
    ),
    (
        BINANCE_TOPIC,
        wire_header(SCHEMA_ID) + b"\xff\xff\xff\xff\xff",
        ErrorType.DECODE_ERROR,
        "does not decode",
    ),
    (BINANCE_TOPIC, wire_header(SCHEMA_ID), ErrorType.DECODE_ERROR, "0-byte"),
    (BINANCE_TOPIC, encode(trade())[:-9], ErrorType.DECODE_ERROR, "does not decode"),
    (
        BINANCE_TOPIC,
        encode(kraken()),
        ErrorType.EXCHANGE_MISMATCH,
        "exchange KRAKEN on topic",
    ),
    (
        BINANCE_TOPIC,
        encode(trade(message_id="")),
        ErrorType.MISSING_MESSAGE_ID,
        "message_id",
    ),
    (BINANCE_TOPIC, encode(trade(symbol="  ")), ErrorType.MISSING_SYMBOL, "symbol"),
    (
        BINANCE_TOPIC,
        encode(trade(price=Decimal("0"))),
        ErrorType.INVALID_PRICE,
        "price 0.00000000 is not > 0",
    ),
    (
        BINANCE_TOPIC,
        encode(trade(price=Decimal("-1.5"))),
        ErrorType.INVALID_PRICE,
        "is not > 0",
    ),
    (
        BINANCE_TOPIC,
        encode(trade(quantity=Decimal("0"))),
        ErrorType.INVALID_QUANTITY,
        "quantity",
    ),
    (
        BINANCE_TOPIC,
        encode_wide(trade(price=Decimal("12345678901.00000000"))),
        ErrorType.DECIMAL_OVERFLOW,
        "12345678901.00000000",
    ),
    (
        BINANCE_TOPIC,
        encode_wide(trade(quantity=Decimal("99999999999999999999.00000000"))),
        ErrorType.DECIMAL_OVERFLOW,
        "does not fit decimal(18,8)",
    ),
    (
        BINANCE_TOPIC,
        encode(trade(timestamp=NOW + dt.timedelta(minutes=6))),
        ErrorType.FUTURE_TIMESTAMP,
        "more than 300 s after ingestion",
    ),
    (
        BINANCE_TOPIC,
        encode(trade(timestamp=NOW - dt.timedelta(days=366))),
        ErrorType.STALE_TIMESTAMP,
        "more than 365 days before",
    ),
]


def test_each_invalid_payload_gets_its_error(spark: SparkSession) -> None:
    validated = run(spark, [(topic, p) for topic, p, _, _ in CASES])
    got = errors(validated)
    for (_, _, want_type, want_text), (offset, error_type, reason) in zip(CASES, got, strict=True):
        assert error_type == want_type, (offset, reason)
        assert reason is not None and want_text in reason, (offset, reason)


def test_within_tolerances_is_valid(spark: SparkSession) -> None:
    payloads = [
        (
            BINANCE_TOPIC,
            encode(trade(timestamp=NOW + dt.timedelta(minutes=4, seconds=59))),
        ),
        (BINANCE_TOPIC, encode(trade(timestamp=NOW - dt.timedelta(days=364)))),
        (
            BINANCE_TOPIC,
            encode(trade(price=Decimal("9999999999.99999999"), quantity=Decimal("0.00000001"))),
        ),
        (KRAKEN_TOPIC, encode(kraken(vendor_data={}))),
    ]
    assert [e[1] for e in errors(run(spark, payloads))] == [None] * 4


def test_every_failing_rule_is_in_the_reason(spark: SparkSession) -> None:
    bad = encode(trade(price=Decimal("0"), quantity=Decimal("-2"), symbol=""))
    ((_, error_type, reason),) = errors(run(spark, [(BINANCE_TOPIC, bad)]))
    assert error_type == ErrorType.MISSING_SYMBOL  # the first rule in ErrorType order
    assert reason is not None
    assert reason.split("; ") == [
        "symbol is missing",
        "price 0.00000000 is not > 0",
        "quantity -2.00000000 is not > 0",
    ]


def test_without_registry_ids_only_the_magic_byte_is_checked(
    spark: SparkSession,
) -> None:
    validated = run(
        spark,
        [(BINANCE_TOPIC, encode(trade(), schema_id=99)), (BINANCE_TOPIC, b"\x01abcd")],
        known_schema_ids=None,
    )
    assert [e[1] for e in errors(validated)] == [None, ErrorType.MALFORMED_HEADER]


def test_schema_ids_are_per_topic(spark: SparkSession) -> None:
    validated = run(
        spark,
        [
            (BINANCE_TOPIC, encode(trade(), schema_id=3)),
            (KRAKEN_TOPIC, encode(kraken(), schema_id=3)),
        ],
        known_schema_ids={BINANCE_TOPIC: {3}, KRAKEN_TOPIC: {4}},
    )
    assert [e[1] for e in errors(validated)] == [None, ErrorType.UNKNOWN_SCHEMA_ID]


def test_custom_rules(spark: SparkSession) -> None:
    rules = ValidationRules(future_tolerance=dt.timedelta(seconds=0), max_age=dt.timedelta(days=1))
    validated = run(
        spark,
        [
            (BINANCE_TOPIC, encode(trade(timestamp=NOW + dt.timedelta(seconds=1)))),
            (BINANCE_TOPIC, encode(trade(timestamp=NOW - dt.timedelta(days=2)))),
        ],
        rules=rules,
    )
    assert [e[1] for e in errors(validated)] == [
        ErrorType.FUTURE_TIMESTAMP,
        ErrorType.STALE_TIMESTAMP,
    ]


def test_every_bronze_row_lands_in_exactly_one_place(spark: SparkSession) -> None:
    payloads = [(topic, p) for topic, p, _, _ in CASES] + [
        (
            BINANCE_TOPIC,
            encode(trade(message_id=f"BINANCE:BTCUSDT:{i}", trade_id=str(i))),
        )
        for i in range(5)
    ]
    payloads += [
        (
            KRAKEN_TOPIC,
            encode(kraken(message_id=f"KRAKEN:BTC/USD:{i}", trade_id=str(i))),
        )
        for i in range(3)
    ]
    validated = run(spark, payloads).cache()
    binance = valid_to_silver(validated, "BINANCE").count()
    kraken_n = valid_to_silver(validated, "KRAKEN").count()
    error_ts = dt.datetime(2026, 11, 25, 12, 0, 5, tzinfo=UTC)
    dlq = invalid_to_dlq(validated, F.lit(error_ts))
    assert (binance, kraken_n, dlq.count()) == (5, 3, len(CASES))
    assert binance + kraken_n + dlq.count() == len(payloads)
    assert dlq.columns == DLQ.column_names()
    # the DLQ keeps the bronze row untouched
    by_offset = {r.offset: r for r in dlq.collect()}
    for i, (_, p, want_type, _) in enumerate(CASES):
        assert (
            bytes(by_offset[i].avro_payload) if by_offset[i].avro_payload is not None else None
        ) == p
        assert by_offset[i].error_type == want_type
        assert by_offset[i].error_timestamp == error_ts.replace(tzinfo=None)


def test_invalid_side_rule(spark: SparkSession) -> None:
    """Avro's enum cannot carry another side; the rule is still checked on the decoded struct."""
    decoded = decode_bronze(bronze(spark, [(BINANCE_TOPIC, encode(trade()))]))
    hacked = decoded.withColumn("_trade", F.col("_trade").withField("side", F.lit("HOLD")))
    ((_, error_type, reason),) = errors(validate_trades(hacked, known_schema_ids=KNOWN))
    assert error_type == ErrorType.INVALID_SIDE
    assert reason == "side HOLD is not one of BUY/SELL"
