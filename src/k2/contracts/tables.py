"""The medallion tables, declared once as data.

The operator renders these into IcebergTable resources, `k2 tables apply` and
`k2 up` apply them directly; both go through the same planning code. The shape
of `TableSpec.to_cr_spec()` is exactly the IcebergTable CRD's `spec`.

Column types are Iceberg type strings: string, int, long, date, timestamptz,
binary, decimal(P,S), map<string,string>. Timestamps are `timestamptz` because
that is what Spark's TimestampType maps to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from k2.contracts.trade import EXCHANGES

NAMESPACE = "market_data"

COMMON_PROPERTIES: dict[str, str] = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    # Streaming commits every few seconds: keep metadata from growing without bound.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class PartitionField:
    source: str
    transform: str  # identity | day | hour | month | year | bucket[N] | truncate[W]


@dataclass(frozen=True)
class SortField:
    source: str
    direction: str = "asc"
    null_order: str = "nulls-first"


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    partition_by: tuple[PartitionField, ...] = ()
    sort_by: tuple[SortField, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    namespace: str = NAMESPACE

    @property
    def identifier(self) -> str:
        return f"{self.namespace}.{self.name}"

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_cr_spec(self) -> dict[str, Any]:
        """The IcebergTable custom resource's spec (camelCase, plain data)."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "schema": {
                "columns": [
                    {"name": c.name, "type": c.type, "required": c.required, "doc": c.doc}
                    for c in self.columns
                ]
            },
            "partitionSpec": [{"source": p.source, "transform": p.transform} for p in self.partition_by],
            "sortOrder": [
                {"source": s.source, "direction": s.direction, "nullOrder": s.null_order}
                for s in self.sort_by
            ],
            "properties": dict(self.properties),
        }

    @classmethod
    def from_cr_spec(cls, spec: dict[str, Any]) -> TableSpec:
        return cls(
            name=spec["name"],
            namespace=spec.get("namespace", NAMESPACE),
            columns=tuple(
                Column(c["name"], c["type"], bool(c.get("required", False)), c.get("doc", ""))
                for c in spec["schema"]["columns"]
            ),
            partition_by=tuple(
                PartitionField(p["source"], p["transform"]) for p in spec.get("partitionSpec", [])
            ),
            sort_by=tuple(
                SortField(s["source"], s.get("direction", "asc"), s.get("nullOrder", "nulls-first"))
                for s in spec.get("sortOrder", [])
            ),
            properties=dict(spec.get("properties", {})),
        )


def _props(**extra: str) -> dict[str, str]:
    return {**COMMON_PROPERTIES, **extra}


BRONZE_COLUMNS: tuple[Column, ...] = (
    Column("message_key", "string", doc="Kafka key (the canonical symbol)"),
    Column("avro_payload", "binary", doc="Kafka value, Confluent wire format, untouched"),
    Column("topic", "string"),
    Column("partition", "int"),
    Column("offset", "long"),
    Column("kafka_timestamp", "timestamptz"),
    Column("ingestion_timestamp", "timestamptz", doc="when bronze wrote the row"),
    Column("ingestion_date", "date"),
)

# The 12 trade v3 fields as silver stores them, in the Avro schema's order.
TRADE_COLUMNS: tuple[Column, ...] = (
    Column("message_id", "string"),
    Column("trade_id", "string"),
    Column("symbol", "string"),
    Column("exchange", "string"),
    Column("timestamp", "timestamptz"),
    Column("price", "decimal(18,8)"),
    Column("quantity", "decimal(18,8)"),
    Column("base_asset", "string"),
    Column("quote_currency", "string"),
    Column("side", "string"),
    Column("ingestion_timestamp", "timestamptz"),
    Column("vendor_data", "map<string,string>"),
)

SILVER_COLUMNS = (*TRADE_COLUMNS, Column("exchange_date", "date"))
GOLD_COLUMNS = (*SILVER_COLUMNS, Column("exchange_hour", "int", doc="0-23, UTC"))
DLQ_COLUMNS = (
    *BRONZE_COLUMNS,
    Column("error_type", "string"),
    Column("error_reason", "string"),
    Column("error_timestamp", "timestamptz"),
)

BRONZE = TableSpec(
    name="bronze_crypto_trades",
    columns=BRONZE_COLUMNS,
    partition_by=(PartitionField("ingestion_date", "day"),),
    properties=_props(**{"k2.layer": "bronze"}),
)


def silver_table_name(exchange: str) -> str:
    return f"silver_{exchange.lower()}_trades"


def silver_spec(exchange: str) -> TableSpec:
    return TableSpec(
        name=silver_table_name(exchange),
        columns=SILVER_COLUMNS,
        partition_by=(PartitionField("exchange_date", "day"),),
        properties=_props(**{"k2.layer": "silver", "k2.exchange": exchange.upper()}),
    )


SILVERS: tuple[TableSpec, ...] = tuple(silver_spec(e) for e in EXCHANGES)
SILVER_BINANCE, SILVER_KRAKEN = (silver_spec("BINANCE"), silver_spec("KRAKEN"))

DLQ = TableSpec(
    name="silver_dlq_trades",
    columns=DLQ_COLUMNS,
    partition_by=(PartitionField("error_timestamp", "day"),),
    properties=_props(**{"k2.layer": "silver-dlq"}),
)

GOLD = TableSpec(
    name="gold_crypto_trades",
    columns=GOLD_COLUMNS,
    partition_by=(PartitionField("exchange_date", "identity"), PartitionField("exchange_hour", "identity")),
    sort_by=(SortField("timestamp"), SortField("trade_id")),
    properties=_props(
        **{
            "k2.layer": "gold",
            "k2.unique-key": "message_id",
            "write.parquet.bloom-filter-enabled.column.message_id": "true",
            "write.distribution-mode": "range",
        }
    ),
)

ALL_TABLES: tuple[TableSpec, ...] = (BRONZE, *SILVERS, DLQ, GOLD)


def by_name(name: str) -> TableSpec:
    for t in ALL_TABLES:
        if t.name == name:
            return t
    raise KeyError(f"unknown table {name!r}; known: {', '.join(t.name for t in ALL_TABLES)}")
