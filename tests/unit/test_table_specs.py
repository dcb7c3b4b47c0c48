"""The five medallion table specs, as DESIGN.md describes them, and their CRD shape."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from k2 import iceberg_ddl as ddl
from k2 import tables_cli
from k2.contracts import tables, trade
from k2.contracts.tables import (
    ALL_TABLES,
    BRONZE,
    DLQ,
    GOLD,
    SILVER_BINANCE,
    SILVER_KRAKEN,
    TableSpec,
)


def test_the_five_tables() -> None:
    assert [t.name for t in ALL_TABLES] == [
        "bronze_crypto_trades",
        "silver_binance_trades",
        "silver_kraken_trades",
        "silver_dlq_trades",
        "gold_crypto_trades",
    ]
    assert {t.namespace for t in ALL_TABLES} == {"market_data"}
    assert tables.by_name("gold_crypto_trades") is GOLD
    with pytest.raises(KeyError, match="unknown table"):
        tables.by_name("nope")


@pytest.mark.parametrize(
    ("spec", "count"),
    [(BRONZE, 8), (SILVER_BINANCE, 13), (SILVER_KRAKEN, 13), (DLQ, 11), (GOLD, 14)],
)
def test_field_counts(spec: TableSpec, count: int) -> None:
    assert len(spec.columns) == count
    assert len(ddl.to_iceberg_schema(spec).fields) == count


def test_bronze_columns() -> None:
    assert BRONZE.column_names() == [
        "message_key",
        "avro_payload",
        "topic",
        "partition",
        "offset",
        "kafka_timestamp",
        "ingestion_timestamp",
        "ingestion_date",
    ]
    types = {c.name: c.type for c in BRONZE.columns}
    assert types["avro_payload"] == "binary"
    assert (types["partition"], types["offset"]) == ("int", "long")


def test_silver_is_the_v3_contract_plus_exchange_date() -> None:
    for spec in (SILVER_BINANCE, SILVER_KRAKEN):
        assert spec.column_names() == [*trade.field_names(), "exchange_date"]
        types = {c.name: c.type for c in spec.columns}
        assert types["price"] == types["quantity"] == "decimal(18,8)"
        assert types["exchange"] == types["side"] == "string"
        assert types["timestamp"] == types["ingestion_timestamp"] == "timestamptz"
        assert types["vendor_data"] == "map<string,string>"
        assert types["exchange_date"] == "date"
    assert SILVER_BINANCE.properties["k2.exchange"] == "BINANCE"
    assert SILVER_KRAKEN.properties["k2.exchange"] == "KRAKEN"
    assert [tables.silver_table_name(e) for e in trade.EXCHANGES] == [
        s.name for s in tables.SILVERS
    ]


def test_dlq_is_bronze_plus_error_columns() -> None:
    assert DLQ.column_names() == [
        *BRONZE.column_names(),
        "error_type",
        "error_reason",
        "error_timestamp",
    ]


def test_gold_is_silver_plus_exchange_hour() -> None:
    assert GOLD.column_names() == [*SILVER_BINANCE.column_names(), "exchange_hour"]


def test_partitioning() -> None:
    def parts(spec: TableSpec) -> list[tuple[str, str]]:
        return [(p.source, p.transform) for p in spec.partition_by]

    assert parts(BRONZE) == [("ingestion_date", "day")]
    assert parts(SILVER_BINANCE) == parts(SILVER_KRAKEN) == [("exchange_date", "day")]
    assert parts(DLQ) == [("error_timestamp", "day")]
    assert parts(GOLD) == [("exchange_date", "identity"), ("exchange_hour", "identity")]


def test_gold_sort_order_bloom_filter_and_unique_key() -> None:
    assert [(s.source, s.direction) for s in GOLD.sort_by] == [
        ("timestamp", "asc"),
        ("trade_id", "asc"),
    ]
    assert GOLD.properties["write.parquet.bloom-filter-enabled.column.message_id"] == "true"
    assert GOLD.properties["k2.unique-key"] == "message_id"


@pytest.mark.parametrize("spec", ALL_TABLES, ids=lambda s: s.name)
def test_common_properties_and_valid_spec(spec: TableSpec) -> None:
    assert spec.properties["format-version"] == "2"
    assert spec.properties["write.parquet.compression-codec"] == "zstd"
    ddl.validate_spec(spec)  # types, transforms and references all resolve
    schema = ddl.to_iceberg_schema(spec)
    ddl.to_partition_spec(spec, schema)
    ddl.to_sort_order(spec, schema)


@pytest.mark.parametrize("spec", ALL_TABLES, ids=lambda s: s.name)
def test_cr_spec_round_trip(spec: TableSpec) -> None:
    cr = spec.to_cr_spec()
    assert set(cr) == {
        "namespace",
        "name",
        "schema",
        "partitionSpec",
        "sortOrder",
        "properties",
    }
    assert TableSpec.from_cr_spec(cr) == spec


def test_crypto_trades_only() -> None:
    """The platform is crypto trades, trade v3 only: every table is one of the five."""
    import re

    pattern = re.compile(r"^(bronze_crypto|silver_(binance|kraken|dlq)|gold_crypto)_trades$")
    assert all(pattern.match(t.name) for t in ALL_TABLES)
    assert {t.properties["k2.layer"] for t in ALL_TABLES} == {
        "bronze",
        "silver",
        "silver-dlq",
        "gold",
    }


# ---------------------------------------- `k2 tables`: which tables, which catalog


def _pipeline(namespace: str = "ns_x", exchanges: tuple[str, ...] = ("binance",)) -> Any:
    from k2.pipeline import parse_documents

    feeds = [
        {
            "apiVersion": "k2.io/v1alpha1",
            "kind": "ExchangeFeed",
            "metadata": {"name": e},
            "spec": {"exchange": e, "symbols": ["BTC/USDT"]},
        }
        for e in exchanges
    ]
    pipeline = {
        "apiVersion": "k2.io/v1alpha1",
        "kind": "MedallionPipeline",
        "metadata": {"name": "p"},
        "spec": {
            "feeds": list(exchanges),
            "namespace": namespace,
            "catalog": {"uri": "http://decl:8181", "warehouse": "file:///decl"},
        },
    }
    return parse_documents([*feeds, pipeline])


def test_table_specs_follow_the_declaration() -> None:
    specs = tables_cli.table_specs(_pipeline("ns_x", ("binance",)))
    assert [s.name for s in specs] == [
        "bronze_crypto_trades",
        "silver_binance_trades",
        "silver_dlq_trades",
        "gold_crypto_trades",
    ]
    assert {s.namespace for s in specs} == {"ns_x"}
    assert tables_cli.table_specs(None) == list(ALL_TABLES)


def _args(**kw: Any) -> argparse.Namespace:
    base = {"catalog_uri": None, "warehouse": None, "stack_dir": None, "file": None}
    return argparse.Namespace(**{**base, **kw})


def test_catalog_comes_from_flags_then_local_stack_then_declaration(
    tmp_path: Path,
) -> None:
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    pipeline = _pipeline()
    flags = _args(catalog_uri="http://flag:1", stack_dir=stack_dir)
    assert tables_cli.resolve_catalog(flags, pipeline)[:2] == ("http://flag:1", "")
    # no stack.json yet: the declaration's
    assert tables_cli.resolve_catalog(_args(stack_dir=stack_dir), pipeline)[:2] == (
        "http://decl:8181",
        "file:///decl",
    )
    with pytest.raises(tables_cli.UsageError, match="no catalog"):
        tables_cli.resolve_catalog(_args(stack_dir=stack_dir), None)
    (stack_dir / "stack.json").write_text(
        json.dumps({"catalog": {"uri": "http://127.0.0.1:9", "warehouse": "file:///wh"}})
    )
    uri, warehouse, source = tables_cli.resolve_catalog(_args(stack_dir=stack_dir), pipeline)
    assert (uri, warehouse) == (
        "http://127.0.0.1:9",
        "file:///wh",
    ) and "local stack" in source
    with pytest.raises(tables_cli.UsageError, match="--warehouse is required"):
        tables_cli.resolve_catalog(_args(catalog_uri="sqlite:////x.db"), None)


def test_declared_object_store_settings_reach_pyiceberg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The declaration's spark.conf settings of the jobs' catalog `k2` that a pyiceberg client
    of the same catalog needs (e.g. the chart's MinIO endpoint), under pyiceberg's names."""
    import dataclasses

    p = _pipeline()
    conf = {
        "spark.sql.catalog.k2.s3.endpoint": "http://k2-minio:9000",
        "spark.sql.catalog.k2.s3.path-style-access": "true",
        "spark.sql.catalog.k2.client.region": "us-east-1",
        "spark.sql.catalog.k2.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "spark.sql.catalog.other.s3.endpoint": "http://elsewhere:9000",
        "spark.hadoop.fs.s3a.endpoint": "http://k2-minio:9000",
    }
    p = dataclasses.replace(p, spark=dataclasses.replace(p.spark, conf=conf))
    assert tables_cli.declared_io_properties(p) == {
        "client.region": "us-east-1",
        "s3.endpoint": "http://k2-minio:9000",
        "s3.path-style-access": "true",
    }
    assert tables_cli.declared_io_properties(_pipeline()) == {}
    # opening the declaration's own catalog passes them; another catalog gets none
    import k2.catalog

    opened: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        k2.catalog, "load_catalog", lambda uri, wh, **props: opened.append((uri, props))
    )
    tables_cli.open_catalog(_args(stack_dir=tmp_path), p)
    tables_cli.open_catalog(_args(stack_dir=tmp_path, catalog_uri="http://other:8181"), p)
    assert opened == [
        ("http://decl:8181", tables_cli.declared_io_properties(p)),
        ("http://other:8181", {}),
    ]


def test_cli_on_the_embedded_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = [
        "--catalog-uri",
        f"sqlite:///{tmp_path}/c.db",
        "--warehouse",
        str(tmp_path / "wh"),
    ]
    assert tables_cli.main(["apply", *where]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "create namespace market_data" and len(out) == 6
    assert tables_cli.main(["apply", *where]) == 0
    assert capsys.readouterr().out == "no changes\n"
    assert tables_cli.main(["list", *where]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["TABLE", "FIELDS", "PARTITIONING", "SNAPSHOTS"]
    assert rows[0].split() == [
        "market_data.bronze_crypto_trades",
        "8",
        "day(ingestion_date)",
        "0",
    ]
    assert {len(r) for r in rows} == {len(header)}
    assert tables_cli.main(["drop", *where]) == 2  # neither names nor --all
    capsys.readouterr()
    assert tables_cli.main(["drop", "--all", "--purge", *where]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert not [p for p in (tmp_path / "wh").rglob("*") if p.is_file()]
    assert tables_cli.main(["list", "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cli_reports_plan_errors_and_unknown_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = [
        "--catalog-uri",
        f"sqlite:///{tmp_path}/c.db",
        "--warehouse",
        str(tmp_path / "wh"),
    ]
    assert tables_cli.main(["apply", "--table", "nope", *where]) == 2
    assert "unknown table(s) nope" in capsys.readouterr().err
    assert tables_cli.main(["apply", "--table", "gold_crypto_trades", "--dry-run", *where]) == 0
    assert "create table market_data.gold_crypto_trades" in capsys.readouterr().out
    assert tables_cli.main(["list", *where]) == 0
    assert "does not exist" in capsys.readouterr().out
