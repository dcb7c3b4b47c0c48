"""Iceberg DDL planning (pure, on in-memory table metadata) and apply/drop on the embedded SQL catalog."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog.noop import NoopCatalog
from pyiceberg.io import load_file_io
from pyiceberg.table import Table
from pyiceberg.table.metadata import new_table_metadata
from pyiceberg.types import (
    DecimalType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    TimestamptzType,
)

from k2 import iceberg_ddl as ddl
from k2.catalog import embedded_catalog
from k2.contracts import tables
from k2.contracts.tables import Column, PartitionField, SortField, TableSpec
from k2.iceberg_ddl import (
    AddColumn,
    CreateNamespace,
    CreateTable,
    MakeOptional,
    PlanError,
    SetProperties,
    UpdateColumnDoc,
    UpdatePartitionSpec,
    UpdateSortOrder,
    UpgradeFormatVersion,
    WidenType,
    plan,
)

SMALL = TableSpec(
    name="t",
    namespace="ns",
    columns=(
        Column("id", "int", required=True, doc="the id"),
        Column("name", "string"),
        Column("ts", "timestamptz"),
        Column("price", "decimal(18,8)"),
        Column("tags", "map<string,string>"),
    ),
    partition_by=(PartitionField("ts", "day"),),
    sort_by=(SortField("ts"),),
    properties={"format-version": "2", "a": "1"},
)


def in_memory_table(spec: TableSpec) -> Table:
    """A pyiceberg Table as a catalog would return it after creating `spec` (no I/O)."""
    schema = ddl.to_iceberg_schema(spec)
    md = new_table_metadata(
        schema,
        ddl.to_partition_spec(spec, schema),
        ddl.to_sort_order(spec, schema),
        f"file:///nowhere/{spec.namespace}/{spec.name}",
        dict(spec.properties),
    )
    return Table(
        (spec.namespace, spec.name),
        md,
        "file:///nowhere/m.json",
        load_file_io(),
        NoopCatalog("noop"),
    )


def evolve(spec: TableSpec, **changes: Any) -> TableSpec:
    return dataclasses.replace(spec, **changes)


def replace_column(spec: TableSpec, name: str, **changes: Any) -> TableSpec:
    return evolve(
        spec,
        columns=tuple(
            dataclasses.replace(c, **changes) if c.name == name else c for c in spec.columns
        ),
    )


# ---------------------------------------------------------------- type strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("string", StringType()),
        ("int", IntegerType()),
        ("long", LongType()),
        ("timestamptz", TimestamptzType()),
        ("decimal(18,8)", DecimalType(18, 8)),
        ("decimal( 18 , 8 )", DecimalType(18, 8)),
    ],
)
def test_parse_primitive_types(text: str, expected: Any) -> None:
    assert ddl.parse_type(text) == expected


def test_parse_and_print_nested_types() -> None:
    t = ddl.parse_type("map<string,string>")
    assert isinstance(t, MapType) and t.key_type == StringType() and t.value_type == StringType()
    assert not t.value_required
    for text in [
        "map<string,string>",
        "list<long>",
        "map<string,list<decimal(10,2)>>",
        "date",
        "binary",
    ]:
        assert ddl.canonical_type(text) == text
    assert ddl.canonical_type("MAP< string , string >") == "map<string,string>"


@pytest.mark.parametrize(
    "bad", ["varchar", "decimal(40,2)", "decimal(5,6)", "map<string>", "list<>"]
)
def test_unknown_types_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        ddl.parse_type(bad)


def test_widening_rules() -> None:
    assert ddl.can_widen("int", "long") and ddl.can_widen("float", "double")
    assert ddl.can_widen("decimal(10,2)", "decimal(18,2)")
    assert not ddl.can_widen("long", "int")
    assert not ddl.can_widen("decimal(18,8)", "decimal(18,6)")
    assert not ddl.can_widen("string", "binary")


def test_schema_partition_and_sort_conversion() -> None:
    schema = ddl.to_iceberg_schema(SMALL)
    assert [f.name for f in schema.fields] == ["id", "name", "ts", "price", "tags"]
    assert [f.field_id for f in schema.fields] == [1, 2, 3, 4, 5]
    assert schema.find_field("id").required and schema.find_field("id").doc == "the id"
    assert schema.find_field("name").doc is None
    tags = schema.find_field("tags").field_type
    assert isinstance(tags, MapType) and {tags.key_id, tags.value_id} == {6, 7}
    spec = ddl.to_partition_spec(SMALL, schema)
    assert [(f.source_id, str(f.transform), f.name) for f in spec.fields] == [(3, "day", "ts_day")]
    order = ddl.to_sort_order(SMALL, schema)
    assert [(f.source_id, f.direction.value, f.null_order.value) for f in order.fields] == [
        (3, "asc", "nulls-first")
    ]
    assert ddl.to_sort_order(evolve(SMALL, sort_by=()), schema).is_unsorted


# ---------------------------------------------------------------- plan: pure cases


def test_new_table_is_created_with_its_namespace() -> None:
    assert plan(SMALL, None) == [CreateNamespace("ns"), CreateTable(SMALL)]
    assert plan(SMALL, None, namespace_exists=True) == [CreateTable(SMALL)]


def test_table_matching_its_spec_needs_nothing() -> None:
    assert plan(SMALL, in_memory_table(SMALL)) == []


@pytest.mark.parametrize("spec", tables.ALL_TABLES, ids=lambda s: s.name)
def test_every_medallion_table_is_a_no_op_against_itself(spec: TableSpec) -> None:
    assert plan(spec, in_memory_table(spec)) == []


def test_missing_column_is_added_after_its_predecessor() -> None:
    old = evolve(
        SMALL,
        columns=tuple(c for c in SMALL.columns if c.name != "ts"),
        partition_by=(),
        sort_by=(),
    )
    new = evolve(SMALL, partition_by=(), sort_by=())
    assert plan(new, in_memory_table(old)) == [
        AddColumn("ns.t", Column("ts", "timestamptz"), after="name")
    ]


def test_missing_first_column_goes_first() -> None:
    new = evolve(SMALL, columns=(Column("venue", "string"), *SMALL.columns))
    assert plan(new, in_memory_table(SMALL)) == [
        AddColumn("ns.t", Column("venue", "string"), after=None)
    ]


def test_int_to_long_is_widened() -> None:
    assert plan(replace_column(SMALL, "id", type="long"), in_memory_table(SMALL)) == [
        WidenType("ns.t", "id", "int", "long")
    ]


def test_decimal_precision_is_widened() -> None:
    new = replace_column(SMALL, "price", type="decimal(20,8)")
    assert plan(new, in_memory_table(SMALL)) == [
        WidenType("ns.t", "price", "decimal(18,8)", "decimal(20,8)")
    ]


def test_impossible_type_changes_are_plan_errors_listing_all() -> None:
    new = replace_column(replace_column(SMALL, "name", type="long"), "price", type="decimal(18,6)")
    with pytest.raises(PlanError) as err:
        plan(new, in_memory_table(SMALL))
    assert err.value.identifier == "ns.t"
    assert len(err.value.problems) == 2
    assert "column name is string, cannot change it to long" in str(err.value)


def test_required_to_optional_and_back() -> None:
    assert plan(replace_column(SMALL, "id", required=False), in_memory_table(SMALL)) == [
        MakeOptional("ns.t", "id")
    ]
    with pytest.raises(PlanError, match="cannot make it required"):
        plan(replace_column(SMALL, "name", required=True), in_memory_table(SMALL))


def test_adding_a_required_column_is_refused() -> None:
    new = evolve(SMALL, columns=(*SMALL.columns, Column("must", "string", required=True)))
    with pytest.raises(PlanError, match="cannot add required column must"):
        plan(new, in_memory_table(SMALL))


def test_doc_change() -> None:
    assert plan(replace_column(SMALL, "name", doc="who"), in_memory_table(SMALL)) == [
        UpdateColumnDoc("ns.t", "name", "who")
    ]


def test_property_change_sets_only_what_differs() -> None:
    new = evolve(SMALL, properties={**SMALL.properties, "a": "2", "b": "x"})
    assert plan(new, in_memory_table(SMALL)) == [
        SetProperties("ns.t", {"a": "2", "b": "x"}, {"a": "1", "b": None})
    ]


def test_properties_the_spec_does_not_mention_are_left_alone() -> None:
    table = in_memory_table(evolve(SMALL, properties={**SMALL.properties, "engine.owned": "y"}))
    assert plan(SMALL, table) == []


def test_format_version_upgrade_and_no_downgrade() -> None:
    old_format = in_memory_table(evolve(SMALL, properties={"format-version": "1", "a": "1"}))
    assert plan(SMALL, old_format) == [UpgradeFormatVersion("ns.t", 1, 2)]
    with pytest.raises(PlanError, match="cannot be downgraded"):
        plan(
            evolve(SMALL, properties={"format-version": "1", "a": "1"}),
            in_memory_table(SMALL),
        )


def test_partition_change() -> None:
    new = evolve(
        SMALL,
        partition_by=(
            PartitionField("ts", "hour"),
            PartitionField("name", "bucket[4]"),
        ),
    )
    assert plan(new, in_memory_table(SMALL)) == [
        UpdatePartitionSpec(
            "ns.t",
            (PartitionField("ts", "hour"), PartitionField("name", "bucket[4]")),
            (PartitionField("ts", "day"),),
        )
    ]


def test_sort_order_change() -> None:
    new = evolve(SMALL, sort_by=(SortField("ts", "desc", "nulls-last"), SortField("id")))
    assert plan(new, in_memory_table(SMALL)) == [
        UpdateSortOrder(
            "ns.t",
            (SortField("ts", "desc", "nulls-last"), SortField("id")),
            (SortField("ts"),),
        )
    ]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            replace_column(SMALL, "name", type="varchar"),
            "column name: unknown column type",
        ),
        (
            evolve(SMALL, partition_by=(PartitionField("nope", "day"),)),
            "partition source 'nope'",
        ),
        (
            evolve(SMALL, partition_by=(PartitionField("ts", "weekly"),)),
            "unknown partition transform 'weekly'",
        ),
        (
            evolve(SMALL, partition_by=(PartitionField("name", "day"),)),
            "day cannot transform string",
        ),
        (evolve(SMALL, sort_by=(SortField("nope"),)), "sort source 'nope'"),
        (
            evolve(SMALL, sort_by=(SortField("ts", "up"),)),
            "direction must be asc or desc",
        ),
        (
            evolve(SMALL, columns=(*SMALL.columns, Column("id", "long"))),
            "duplicate column",
        ),
        (evolve(SMALL, properties={"format-version": "9"}), "format-version must be"),
    ],
)
def test_invalid_specs(spec: TableSpec, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        plan(spec, None)


def test_changes_are_printable_data() -> None:
    changes = plan(replace_column(SMALL, "id", type="long"), in_memory_table(SMALL))
    assert [str(c) for c in changes] == ["ns.t: widen id int -> long"]
    assert changes[0].as_dict() == {
        "change": "WidenType",
        "identifier": "ns.t",
        "column": "id",
        "from_type": "int",
        "to_type": "long",
    }
    assert str(CreateTable(tables.GOLD)).startswith(
        "create table market_data.gold_crypto_trades (14 columns"
    )


# ---------------------------------------------------------------- apply / drop on the embedded catalog


@pytest.fixture
def catalog(tmp_path: Path) -> Any:
    return embedded_catalog(tmp_path)


def test_apply_creates_then_is_idempotent(catalog: Any) -> None:
    changes = ddl.plan_in(catalog, SMALL)
    assert changes == [CreateNamespace("ns"), CreateTable(SMALL)]
    ddl.apply(catalog, changes)
    assert ddl.plan_in(catalog, SMALL) == []
    status = ddl.table_status(catalog.load_table("ns.t"))
    assert (
        status["fieldCount"] == 5
        and status["partitioning"] == ["day(ts)"]
        and status["snapshotCount"] == 0
    )
    assert status["formatVersion"] == 2 and status["sortOrder"] == ["ts asc"]


def test_apply_evolves_everything_in_one_go(catalog: Any) -> None:
    old = evolve(
        SMALL,
        columns=(Column("id", "int", required=True), Column("ts", "timestamptz")),
        partition_by=(),
        sort_by=(),
        properties={"format-version": "1", "a": "0"},
    )
    ddl.apply(catalog, ddl.plan_in(catalog, old))
    new = evolve(
        SMALL,
        columns=(
            Column("id", "long", doc="the id"),
            Column("name", "string"),
            Column("ts", "timestamptz"),
            Column("price", "decimal(18,8)"),
            Column("tags", "map<string,string>"),
        ),
    )
    changes = ddl.plan_in(catalog, new)
    kinds = [type(c).__name__ for c in changes]
    assert kinds == [
        "UpgradeFormatVersion",
        "WidenType",
        "MakeOptional",
        "UpdateColumnDoc",
        "AddColumn",
        "AddColumn",
        "AddColumn",
        "UpdatePartitionSpec",
        "UpdateSortOrder",
        "SetProperties",
    ]
    ddl.apply(catalog, changes)
    assert ddl.plan_in(catalog, new) == []
    t = catalog.load_table("ns.t")
    assert [f.name for f in t.schema().fields] == ["id", "name", "ts", "price", "tags"]
    assert ddl.type_string(t.schema().find_field("id").field_type) == "long"
    assert t.format_version == 2 and t.properties["a"] == "1"


# Identity partitioning: pyiceberg computes day()/hour() partition values for appends only
# with the optional pyiceberg-core package, which the project does not install.
IDENTITY_PARTITIONED = evolve(SMALL, partition_by=(PartitionField("name", "identity"),))


def _append_rows(table: Any, n: int = 3) -> None:
    arrow_schema = table.schema().as_arrow()
    rows = {
        "id": list(range(n)),
        "name": [f"n{i}" for i in range(n)],
        "ts": [dt.datetime(2025, 11, 25, i, tzinfo=dt.UTC) for i in range(n)],
        "price": [Decimal("1.00000001")] * n,
        "tags": [[("k", "v")]] * n,
    }
    table.append(pa.Table.from_pydict(rows, schema=arrow_schema))


def test_drop_with_purge_deletes_every_file(catalog: Any, tmp_path: Path) -> None:
    ddl.apply(catalog, ddl.plan_in(catalog, IDENTITY_PARTITIONED))
    table = catalog.load_table("ns.t")
    _append_rows(table)
    _append_rows(catalog.load_table("ns.t"))
    location = Path(table.location().removeprefix("file://"))
    assert list(location.rglob("*.parquet"))
    result = ddl.drop(catalog, "ns.t", purge=True)
    assert result.purged and not catalog.table_exists("ns.t")
    assert not location.exists()
    assert not [p for p in (tmp_path / "warehouse").rglob("*") if p.is_file()]


def test_drop_without_purge_keeps_files(catalog: Any) -> None:
    ddl.apply(catalog, ddl.plan_in(catalog, IDENTITY_PARTITIONED))
    table = catalog.load_table("ns.t")
    _append_rows(table)
    location = Path(table.location().removeprefix("file://"))
    result = ddl.drop(catalog, "ns.t", purge=False)
    assert not result.purged and not catalog.table_exists("ns.t")
    assert list(location.rglob("*.parquet"))


def test_local_location_is_only_removed_when_named_after_the_table(
    tmp_path: Path,
) -> None:
    odd = tmp_path / "somewhere" / "else"
    odd.mkdir(parents=True)
    assert not ddl._remove_local_location(odd.as_uri(), "t")
    assert odd.exists()
    mine = tmp_path / "ns" / "t-1234abcd"
    mine.mkdir(parents=True)
    assert ddl._remove_local_location(mine.as_uri(), "t")
    assert not mine.exists()
    assert not ddl._remove_local_location("s3://bucket/ns/t", "t")


def test_purge_deletes_what_a_lazy_catalog_left_behind(catalog: Any, tmp_path: Path) -> None:
    """A catalog that only forgets the table on purge: drop() deletes the files itself."""
    ddl.apply(catalog, ddl.plan_in(catalog, IDENTITY_PARTITIONED))
    _append_rows(catalog.load_table("ns.t"))
    catalog.purge_table = catalog.drop_table  # what a server that ignores purgeRequested does
    result = ddl.drop(catalog, "ns.t", purge=True)
    assert result.files_left_by_catalog >= 4  # data file, manifest, manifest list, metadata
    assert not [p for p in (tmp_path / "warehouse").rglob("*") if p.is_file()]
