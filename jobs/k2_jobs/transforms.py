"""The medallion transformations as pure DataFrame -> DataFrame functions.

Nothing here reads or writes a table, a topic or a registry: the job shells
(`k2_jobs.bronze`, `.silver`, `.gold`) do the I/O and hand DataFrames in and out,
so every rule below is unit-tested on a plain local SparkSession.

Time is handled without the session time zone: dates and hours are computed from
epoch microseconds (`unix_micros`), so a job gives the same `ingestion_date`,
`exchange_date` and `exchange_hour` (UTC) whatever `spark.sql.session.timeZone` is.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from k2.contracts.tables import BRONZE, DLQ, GOLD, SILVER_COLUMNS
from k2.contracts.trade import PRECISION, SCALE, SIDES, schema_dict

MICROS_PER_DAY = 86_400_000_000
MICROS_PER_HOUR = 3_600_000_000
HEADER_BYTES = 5  # Confluent wire format: magic byte 0 + 4-byte big-endian schema id
MAX_DECIMAL = Decimal(10) ** (PRECISION - SCALE) - Decimal(1).scaleb(-SCALE)  # 9999999999.99999999
DECIMAL_TYPE = f"decimal({PRECISION},{SCALE})"
WIDE_PRECISION = 38  # what silver decodes price/quantity with, to detect values that do not fit

# Internal columns added by `decode_bronze` / `validate_trades` (dropped on output).
TRADE = "_trade"
MAGIC = "_magic"
SCHEMA_ID = "_schema_id"
ERROR_TYPE = "error_type"
ERROR_REASON = "error_reason"


class ErrorType:
    """The DLQ's `error_type` values, in the order rules are checked (the first failing wins)."""

    MALFORMED_HEADER = "MALFORMED_HEADER"
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"
    DECODE_ERROR = "DECODE_ERROR"
    EXCHANGE_MISMATCH = "EXCHANGE_MISMATCH"
    MISSING_MESSAGE_ID = "MISSING_MESSAGE_ID"
    MISSING_SYMBOL = "MISSING_SYMBOL"
    INVALID_SIDE = "INVALID_SIDE"
    DECIMAL_OVERFLOW = "DECIMAL_OVERFLOW"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    STALE_TIMESTAMP = "STALE_TIMESTAMP"


@dataclass(frozen=True)
class ValidationRules:
    """Silver's knobs. Timestamps are judged against the bronze row's `ingestion_timestamp`
    (when K2 received the trade), not the clock at validation time, so re-validating a
    replayed batch gives the same verdict."""

    future_tolerance: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=365)


def _micros(td: timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def utc_date(ts: Column) -> Column:
    """DATE of a timestamp in UTC, independent of the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / F.lit(MICROS_PER_DAY)).cast("int"))


def utc_hour(ts: Column) -> Column:
    """Hour of day (0-23) of a timestamp in UTC, independent of the session time zone."""
    return F.pmod(F.floor(F.unix_micros(ts) / F.lit(MICROS_PER_HOUR)), F.lit(24)).cast("int")


# --------------------------------------------------------------------------- bronze


def kafka_to_bronze(kafka: DataFrame, now: Column | None = None) -> DataFrame:
    """Kafka source rows -> the 8 bronze columns; the value is kept byte for byte.

    `now` defaults to `current_timestamp()`, which in a streaming query is the
    micro-batch's timestamp (stored in the offset log, so a replayed batch gets the same one).
    """
    ts = now if now is not None else F.current_timestamp()
    return kafka.select(
        F.col("key").cast("string").alias("message_key"),
        F.col("value").alias("avro_payload"),
        F.col("topic").cast("string").alias("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        ts.alias("ingestion_timestamp"),
    ).withColumn("ingestion_date", utc_date(F.col("ingestion_timestamp")))


# --------------------------------------------------------------------------- silver


def decoding_schema() -> str:
    """Trade v3 as silver decodes it: identical bytes on the wire, but price and quantity
    read as decimal(38,8) so a value too large for decimal(18,8) is seen (and sent to the
    DLQ) instead of being silently truncated by the Avro deserializer."""
    schema = copy.deepcopy(schema_dict())
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("logicalType") == "decimal":
            t["precision"] = WIDE_PRECISION
    return json.dumps(schema)


def header_columns(payload: Column) -> tuple[Column, Column, Column]:
    """(magic byte as int, schema id as long, Avro body) of a Confluent-framed payload;
    nulls where the payload is too short to hold the header."""
    long_enough = payload.isNotNull() & (F.length(payload) >= HEADER_BYTES)
    magic = F.when(long_enough, F.conv(F.hex(F.substring(payload, 1, 1)), 16, 10).cast("int"))
    schema_id = F.when(long_enough, F.conv(F.hex(F.substring(payload, 2, 4)), 16, 10).cast("long"))
    body = F.when(
        long_enough,
        payload.substr(F.lit(HEADER_BYTES + 1), F.length(payload) - HEADER_BYTES),
    )
    return magic, schema_id, body


def decode_bronze(bronze: DataFrame, *, avro_schema: str | None = None) -> DataFrame:
    """Bronze rows + `_magic`, `_schema_id` and `_trade` (the decoded v3 struct, null when
    the payload is not a trade v3 record: from_avro runs in PERMISSIVE mode)."""
    from pyspark.sql.avro.functions import from_avro

    magic, schema_id, body = header_columns(F.col("avro_payload"))
    decoded = from_avro(body, avro_schema or decoding_schema(), {"mode": "PERMISSIVE"})
    # PERMISSIVE gives a struct of nulls for a corrupt record; every v3 field is non-null
    # in Avro, so a null message_id or timestamp means "did not decode": make that a null struct.
    ok = (magic == 0) & decoded["message_id"].isNotNull() & decoded["timestamp"].isNotNull()
    return bronze.select(
        *[F.col(c) for c in BRONZE.column_names()],
        magic.alias(MAGIC),
        schema_id.alias(SCHEMA_ID),
        F.when(ok, decoded).alias(TRADE),
    )


def _schema_known(topic: Column, schema_id: Column, known: Mapping[str, Set[int]]) -> Column:
    """True when `schema_id` is a v3 id registered under `topic`'s subject."""
    pairs = [
        (topic == F.lit(t)) & schema_id.isin(sorted(ids)) for t, ids in sorted(known.items()) if ids
    ]
    return reduce(lambda a, b: a | b, pairs) if pairs else F.lit(False)


def validate_trades(
    decoded: DataFrame,
    *,
    known_schema_ids: Mapping[str, Set[int]] | None = None,
    topic_exchanges: Mapping[str, str] | None = None,
    rules: ValidationRules = ValidationRules(),
) -> DataFrame:
    """`decode_bronze` output + `error_type` (null when valid) and `error_reason`.

    known_schema_ids: topic -> the schema ids registered for `<topic>-value` whose schema is
    trade v3. None checks the magic byte only. topic_exchanges: topic -> the exchange its
    records must carry (a Kraken record on the Binance topic is an error); None skips that.
    `error_type` is the first failing rule (ErrorType order); `error_reason` lists every
    failing rule with the offending values, separated by "; ".
    """
    t = F.col(TRADE)
    payload = F.col("avro_payload")
    magic, schema_id = F.col(MAGIC), F.col(SCHEMA_ID)
    ref_us = F.unix_micros(F.col("ingestion_timestamp"))
    ts_us = F.unix_micros(t["timestamp"])
    price, qty = t["price"], t["quantity"]
    max_dec = F.lit(MAX_DECIMAL).cast(f"decimal({WIDE_PRECISION},{SCALE})")

    header_bad = magic.isNull() | (magic != 0)
    header_reason = (
        F.when(payload.isNull(), F.lit("payload is null"))
        .when(
            F.length(payload) < HEADER_BYTES,
            F.format_string(
                "payload has %d bytes, fewer than the 5-byte Confluent header",
                F.length(payload),
            ),
        )
        .otherwise(F.format_string("magic byte is %d, not 0 (not Confluent wire format)", magic))
    )
    if known_schema_ids is None:
        id_bad: Column = F.lit(False)
    else:
        id_bad = ~_schema_known(F.col("topic"), schema_id, known_schema_ids)
    framed = ~header_bad & ~id_bad
    decode_bad = framed & t.isNull()
    ok = framed & t.isNotNull()

    def blank(c: Column) -> Column:
        return c.isNull() | (F.trim(c) == "")

    checks: list[tuple[str, Column, Column]] = [
        (ErrorType.MALFORMED_HEADER, header_bad, header_reason),
        (
            ErrorType.UNKNOWN_SCHEMA_ID,
            ~header_bad & id_bad,
            F.format_string(
                "schema id %d is not a trade v3 schema registered for %s-value",
                schema_id,
                F.col("topic"),
            ),
        ),
        (
            ErrorType.DECODE_ERROR,
            decode_bad,
            F.format_string(
                "%d-byte Avro body does not decode as trade v3",
                F.length(payload) - HEADER_BYTES,
            ),
        ),
    ]
    if topic_exchanges:
        expected = F.create_map(
            *[x for kv in sorted(topic_exchanges.items()) for x in map(F.lit, kv)]
        )
        want = expected[F.col("topic")]
        checks.append(
            (
                ErrorType.EXCHANGE_MISMATCH,
                ok & want.isNotNull() & (t["exchange"] != want),
                F.format_string(
                    "exchange %s on topic %s, which carries %s",
                    t["exchange"],
                    F.col("topic"),
                    want,
                ),
            )
        )
    checks += [
        (
            ErrorType.MISSING_MESSAGE_ID,
            ok & blank(t["message_id"]),
            F.lit("message_id is missing"),
        ),
        (ErrorType.MISSING_SYMBOL, ok & blank(t["symbol"]), F.lit("symbol is missing")),
        (
            ErrorType.INVALID_SIDE,
            ok & (t["side"].isNull() | ~t["side"].isin(list(SIDES))),
            F.format_string(
                "side %s is not one of %s",
                F.coalesce(t["side"], F.lit("null")),
                F.lit("/".join(SIDES)),
            ),
        ),
        (
            ErrorType.DECIMAL_OVERFLOW,
            ok & ((F.abs(price) > max_dec) | (F.abs(qty) > max_dec)),
            F.format_string(
                "price %s / quantity %s does not fit %s",
                price.cast("string"),
                qty.cast("string"),
                F.lit(DECIMAL_TYPE),
            ),
        ),
        (
            ErrorType.INVALID_PRICE,
            ok & (price.isNull() | (price <= 0)),
            F.format_string("price %s is not > 0", F.coalesce(price.cast("string"), F.lit("null"))),
        ),
        (
            ErrorType.INVALID_QUANTITY,
            ok & (qty.isNull() | (qty <= 0)),
            F.format_string(
                "quantity %s is not > 0", F.coalesce(qty.cast("string"), F.lit("null"))
            ),
        ),
        (
            ErrorType.FUTURE_TIMESTAMP,
            ok & (ts_us > ref_us + F.lit(_micros(rules.future_tolerance))),
            F.format_string(
                "timestamp %s is more than %d s after ingestion %s",
                t["timestamp"].cast("string"),
                F.lit(int(rules.future_tolerance.total_seconds())),
                F.col("ingestion_timestamp").cast("string"),
            ),
        ),
        (
            ErrorType.STALE_TIMESTAMP,
            ok & (ts_us < ref_us - F.lit(_micros(rules.max_age))),
            F.format_string(
                "timestamp %s is more than %d days before ingestion %s",
                t["timestamp"].cast("string"),
                F.lit(rules.max_age.days),
                F.col("ingestion_timestamp").cast("string"),
            ),
        ),
    ]
    # A null condition (e.g. a comparison on a null field) counts as "passed"; rules that
    # must catch nulls say so explicitly above.
    error_type = F.coalesce(*[F.when(cond, F.lit(code)) for code, cond, _ in checks])
    error_reason = F.concat_ws("; ", *[F.when(cond, reason) for _, cond, reason in checks])
    return decoded.withColumn(ERROR_TYPE, error_type).withColumn(
        ERROR_REASON, F.when(error_type.isNotNull(), error_reason)
    )


def valid_to_silver(validated: DataFrame, exchange: str | None = None) -> DataFrame:
    """The valid rows (of one exchange, when given) as the 13 silver columns."""
    rows = validated.where(F.col(ERROR_TYPE).isNull())
    if exchange is not None:
        rows = rows.where(F.col(TRADE)["exchange"] == F.lit(exchange.upper()))
    t = F.col(TRADE)
    return rows.select(
        t["message_id"].alias("message_id"),
        t["trade_id"].alias("trade_id"),
        t["symbol"].alias("symbol"),
        t["exchange"].cast("string").alias("exchange"),
        t["timestamp"].alias("timestamp"),
        t["price"].cast(DECIMAL_TYPE).alias("price"),
        t["quantity"].cast(DECIMAL_TYPE).alias("quantity"),
        t["base_asset"].alias("base_asset"),
        t["quote_currency"].alias("quote_currency"),
        t["side"].cast("string").alias("side"),
        t["ingestion_timestamp"].alias("ingestion_timestamp"),
        t["vendor_data"].alias("vendor_data"),
        utc_date(t["timestamp"]).alias("exchange_date"),
    )


def invalid_to_dlq(validated: DataFrame, error_timestamp: Column | None = None) -> DataFrame:
    """The invalid rows as the DLQ's columns: the bronze row untouched + why it failed."""
    ts = error_timestamp if error_timestamp is not None else F.current_timestamp()
    return validated.where(F.col(ERROR_TYPE).isNotNull()).select(
        *[F.col(c) for c in BRONZE.column_names()],
        F.col(ERROR_TYPE),
        F.col(ERROR_REASON),
        ts.alias("error_timestamp"),
    )


def silver_columns() -> list[str]:
    return [c.name for c in SILVER_COLUMNS]


def dlq_columns() -> list[str]:
    return DLQ.column_names()


# --------------------------------------------------------------------------- gold


def silver_to_gold(silver: DataFrame) -> DataFrame:
    """Silver rows (any exchange) -> gold columns, one row per message_id.

    Within the batch the earliest-ingested copy wins (ties broken by the rest of the
    row's identity), so the choice is deterministic; across batches and restarts the
    gold shell's MERGE (see `gold_merge_sql`) keeps the row already in gold.
    """
    w = Window.partitionBy("message_id").orderBy(
        F.col("ingestion_timestamp").asc_nulls_last(),
        F.col("exchange"),
        F.col("trade_id"),
        F.col("timestamp"),
    )
    first = (
        silver.withColumn("_rank", F.row_number().over(w)).where(F.col("_rank") == 1).drop("_rank")
    )
    return first.select(
        *[F.col(c) for c in silver_columns()],
        utc_hour(F.col("timestamp")).alias("exchange_hour"),
    )


def gold_merge_sql(target: str, source_view: str) -> str:
    """Insert-only MERGE: a message_id already in gold is never inserted again.

    The join also matches on exchange_date and exchange_hour, the partition columns (a
    trade's exchange time, hence its date and hour, is part of its identity: the same
    message_id always carries the same timestamp), so Iceberg prunes the target scan to the
    hours present in the batch instead of reading all of gold.
    """
    cols = GOLD.column_names()
    return (
        f"MERGE INTO {target} AS t USING {source_view} AS s "  # noqa: S608 - identifiers from the specs
        "ON t.message_id = s.message_id AND t.exchange_date = s.exchange_date "
        "AND t.exchange_hour = s.exchange_hour "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(f'`{c}`' for c in cols)}) "
        f"VALUES ({', '.join(f's.`{c}`' for c in cols)})"
    )
