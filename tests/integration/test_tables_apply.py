"""`k2 tables apply|list|drop` against the real Iceberg REST catalog (local filesystem warehouse)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pytest

from k2 import iceberg_ddl as ddl
from k2 import tables_cli
from k2.catalog import load_catalog
from k2.contracts.tables import TableSpec
from k2.tables_cli import table_specs

pytestmark = pytest.mark.integration

# A namespace of its own: other integration tests share the session's catalog.
NAMESPACE = "k2_it_tables"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml"


@pytest.fixture(scope="module")
def declaration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = EXAMPLE.read_text().replace("namespace: market_data", f"namespace: {NAMESPACE}")
    assert f"namespace: {NAMESPACE}" in text
    path = tmp_path_factory.mktemp("decl") / "pipeline.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def specs(declaration: Path) -> list[TableSpec]:
    from k2.pipeline import load

    result = table_specs(load(declaration))
    assert {s.namespace for s in result} == {NAMESPACE} and len(result) == 5
    return result


def k2_tables(
    catalog: dict[str, Any],
    declaration: Path,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> str:
    """`k2 tables ACTION ...` (the subcommand's own entry point: the dispatcher adds nothing)."""
    where = [
        "--catalog-uri",
        catalog["uri"],
        "--warehouse",
        catalog["warehouse"],
        "-f",
        str(declaration),
    ]
    assert tables_cli.main([args[0], *where, *args[1:]]) == 0
    return capsys.readouterr().out


def warehouse_files(catalog: dict[str, Any]) -> list[Path]:
    root = Path(urlparse(catalog["warehouse"]).path) / NAMESPACE
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _gold_rows(table: Any, n: int) -> pa.Table:
    ts = [dt.datetime(2025, 11, 25, 10, i, tzinfo=dt.UTC) for i in range(n)]
    rows = {
        "message_id": [f"BINANCE:BTCUSDT:{i}" for i in range(n)],
        "trade_id": [str(i) for i in range(n)],
        "symbol": ["BTC/USDT"] * n,
        "exchange": ["BINANCE"] * n,
        "timestamp": ts,
        "price": [Decimal("99999999.99999999")] * n,
        "quantity": [Decimal("0.00000001")] * n,
        "base_asset": ["BTC"] * n,
        "quote_currency": ["USDT"] * n,
        "side": ["BUY"] * n,
        "ingestion_timestamp": ts,
        "vendor_data": [[("native_symbol", "BTCUSDT")]] * n,
        "exchange_date": [t.date() for t in ts],
        "exchange_hour": [t.hour for t in ts],
    }
    return pa.Table.from_pydict(rows, schema=table.schema().as_arrow())


# pyiceberg writes no parquet bloom filters (Spark does); gold asks for one on message_id.
@pytest.mark.filterwarnings("ignore:Parquet writer option")
def test_apply_list_reapply_drop(
    catalog: dict[str, Any],
    declaration: Path,
    specs: list[TableSpec],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cat = load_catalog(catalog["uri"], catalog["warehouse"])

    # 1. apply creates the namespace and the five tables
    out = k2_tables(catalog, declaration, capsys, "apply")
    assert out.splitlines() == [
        f"create namespace {NAMESPACE}",
        *(ddl.CreateTable(s).describe() for s in specs),
    ]

    # 2. read back: schema, partition spec, sort order, properties match the specs
    for spec in specs:
        table = cat.load_table(spec.identifier)
        fields = table.schema().fields
        assert [f.name for f in fields] == spec.column_names()
        assert [ddl.type_string(f.field_type) for f in fields] == [
            ddl.canonical_type(c.type) for c in spec.columns
        ]
        assert [f.required for f in fields] == [c.required for c in spec.columns]
        assert [f.doc or "" for f in fields] == [c.doc for c in spec.columns]
        assert ddl.current_partitioning(table) == spec.partition_by
        assert ddl.current_sort_order(table) == spec.sort_by
        assert table.format_version == int(spec.properties["format-version"])
        for key, value in spec.properties.items():
            if key != "format-version":
                assert table.properties.get(key) == value, (spec.name, key)
        assert ddl.plan(spec, table) == []

    gold = cat.load_table(f"{NAMESPACE}.gold_crypto_trades")
    assert [(f.name, str(f.transform)) for f in gold.spec().fields] == [
        ("exchange_date", "identity"),
        ("exchange_hour", "identity"),
    ]
    assert [
        (gold.schema().find_column_name(f.source_id), f.direction.value)
        for f in gold.sort_order().fields
    ] == [
        ("timestamp", "asc"),
        ("trade_id", "asc"),
    ]

    # 3. running apply again changes nothing (not even a metadata commit)
    before = {s.identifier: cat.load_table(s.identifier).metadata_location for s in specs}
    assert k2_tables(catalog, declaration, capsys, "apply").splitlines() == ["no changes"]
    assert {s.identifier: cat.load_table(s.identifier).metadata_location for s in specs} == before

    # 4. some data, so that there are files to purge
    gold.append(_gold_rows(gold, 5))
    gold = cat.load_table(gold.name())
    gold.append(_gold_rows(gold, 3))
    data_files = [p for p in warehouse_files(catalog) if p.suffix == ".parquet"]
    assert len(data_files) >= 2

    listed = json.loads(k2_tables(catalog, declaration, capsys, "list", "--json"))
    by_name = {s["identifier"]: s for s in listed}
    assert set(by_name) == {s.identifier for s in specs}
    assert by_name[f"{NAMESPACE}.gold_crypto_trades"]["snapshotCount"] == 2
    assert by_name[f"{NAMESPACE}.gold_crypto_trades"]["fieldCount"] == 14
    assert by_name[f"{NAMESPACE}.bronze_crypto_trades"]["partitioning"] == ["day(ingestion_date)"]
    text = k2_tables(catalog, declaration, capsys, "list")
    header, *rows = text.splitlines()
    assert header.split() == ["TABLE", "FIELDS", "PARTITIONING", "SNAPSHOTS"]
    assert len(rows) == 5
    assert (
        len({len(r) for r in rows}) == 1
    )  # aligned: the SNAPSHOTS column ends where its header does
    assert len(header) == len(rows[0])

    # 5. the fresh start: every table gone, no file left on disk, namespace kept
    out = k2_tables(catalog, declaration, capsys, "drop", "--all", "--purge")
    assert len(out.splitlines()) == 5 and all(
        line.startswith("dropped ") for line in out.splitlines()
    )
    assert cat.list_tables(NAMESPACE) == []
    assert cat.namespace_exists(NAMESPACE)
    assert warehouse_files(catalog) == []
    assert not any(p.exists() for p in data_files)
    assert (
        k2_tables(catalog, declaration, capsys, "list").strip()
        == f"namespace {NAMESPACE} has no tables"
    )


def test_apply_evolves_a_table_created_from_an_older_spec(
    catalog: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """An older shape of the silver table (fewer columns, int hour, other properties) is evolved in place."""
    import dataclasses

    from k2.contracts.tables import SILVER_KRAKEN, Column

    cat = load_catalog(catalog["uri"], catalog["warehouse"])
    target = dataclasses.replace(
        SILVER_KRAKEN,
        namespace=NAMESPACE + "_evolve",
        columns=(*SILVER_KRAKEN.columns, Column("trade_seq", "long")),
    )
    older = dataclasses.replace(
        target,
        columns=tuple(
            dataclasses.replace(c, type="int") if c.name == "trade_seq" else c
            for c in target.columns
            if c.name not in ("vendor_data", "exchange_date")
        ),
        partition_by=(),
        properties={**target.properties, "k2.layer": "old"},
    )
    ddl.apply(cat, ddl.plan_in(cat, older))
    try:
        changes = ddl.plan_in(cat, target)
        assert [type(c).__name__ for c in changes] == [
            "AddColumn",
            "AddColumn",
            "WidenType",
            "UpdatePartitionSpec",
            "SetProperties",
        ]
        ddl.apply(cat, changes)
        table = cat.load_table(target.identifier)
        assert [f.name for f in table.schema().fields] == target.column_names()
        assert ddl.plan_in(cat, target) == []
    finally:
        ddl.drop(cat, target.identifier, purge=True)
        cat.drop_namespace(target.namespace)
