"""Iceberg DDL for the medallion tables: pure planning, thin apply.

`plan(spec, current)` compares a `TableSpec` (k2.contracts.tables) with the table
as the catalog has it (a pyiceberg `Table`, or None when it does not exist) and
returns the changes that would make them match, as plain data. `apply(catalog,
changes)` carries them out, one catalog transaction per table. Applying a plan and
planning again yields no changes.

Evolution is additive and safe: missing columns are added (placed after their
predecessor in the spec), types are widened where Iceberg allows it (int -> long,
float -> double, decimal precision up), required columns may become optional,
docs, partition fields, the sort order, properties and the format version are
brought in line. What Iceberg cannot do in place (narrowing or changing a type,
making a column required, downgrading the format) raises `PlanError`, listing
every problem. Columns the table has and the spec does not are left alone, as are
properties the spec does not mention (engines add their own).

Both `k2 tables` and the operator's IcebergTable reconciler use this module; it
prints nothing and knows nothing about command lines or Kubernetes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from pyiceberg.partitioning import PartitionField as IcebergPartitionField
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import NullOrder, SortDirection, SortOrder
from pyiceberg.table.sorting import SortField as IcebergSortField
from pyiceberg.transforms import (
    IdentityTransform,
    Transform,
    UnknownTransform,
    VoidTransform,
    parse_transform,
)
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from k2.contracts.tables import Column, PartitionField, SortField, TableSpec

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

# Reserved: read as the table's format version at creation, never stored as a property.
FORMAT_VERSION_PROPERTY = "format-version"


class PlanError(ValueError):
    """The spec is invalid, or the table differs from it in a way Iceberg cannot evolve in place."""

    def __init__(self, identifier: str, problems: Sequence[str]):
        self.identifier = identifier
        self.problems = list(problems)
        super().__init__(f"{identifier}: " + "; ".join(self.problems))


# ---------------------------------------------------------------- type strings


_PRIMITIVES: dict[str, IcebergType] = {
    "boolean": BooleanType(),
    "int": IntegerType(),
    "long": LongType(),
    "float": FloatType(),
    "double": DoubleType(),
    "date": DateType(),
    "time": TimeType(),
    "timestamp": TimestampType(),
    "timestamptz": TimestamptzType(),
    "string": StringType(),
    "uuid": UUIDType(),
    "binary": BinaryType(),
}
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_FIXED = re.compile(r"^fixed\[\s*(\d+)\s*\]$")


def _split_top_level(text: str) -> list[str]:
    """'string, map<string,int>' -> ['string', 'map<string,int>'] (commas inside <> or () kept)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def parse_type(text: str, next_id: Callable[[], int] | None = None) -> IcebergType:
    """An Iceberg type from its string: string, int, long, date, timestamptz, binary,
    decimal(P,S), map<K,V>, list<T>, ... Nested types get field ids from `next_id`."""
    if next_id is None:
        counter = iter(range(1, 1 << 30))
        next_id = counter.__next__
    t = text.strip().lower()
    if t in _PRIMITIVES:
        return _PRIMITIVES[t]
    if m := _DECIMAL.match(t):
        precision, scale = int(m.group(1)), int(m.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(
                f"invalid decimal type {text!r}: need 1 <= precision <= 38 and scale <= precision"
            )
        return DecimalType(precision, scale)
    if m := _FIXED.match(t):
        return FixedType(int(m.group(1)))
    if t.startswith("map<") and t.endswith(">"):
        inner = _split_top_level(t[4:-1])
        if len(inner) != 2:
            raise ValueError(f"invalid map type {text!r}: expected map<KEY,VALUE>")
        key_id, value_id = next_id(), next_id()
        return MapType(
            key_id=key_id,
            key_type=parse_type(inner[0], next_id),
            value_id=value_id,
            value_type=parse_type(inner[1], next_id),
            value_required=False,
        )
    if t.startswith("list<") and t.endswith(">"):
        element_id = next_id()
        return ListType(
            element_id=element_id,
            element_type=parse_type(t[5:-1], next_id),
            element_required=False,
        )
    raise ValueError(
        f"unknown column type {text!r}; known: {', '.join(_PRIMITIVES)}, decimal(P,S), fixed[N], map<K,V>, list<T>"
    )


def type_string(t: IcebergType) -> str:
    """The canonical type string (the inverse of parse_type; no spaces, no field ids)."""
    if isinstance(t, DecimalType):
        return f"decimal({t.precision},{t.scale})"
    if isinstance(t, FixedType):
        return f"fixed[{len(t)}]"
    if isinstance(t, MapType):
        return f"map<{type_string(t.key_type)},{type_string(t.value_type)}>"
    if isinstance(t, ListType):
        return f"list<{type_string(t.element_type)}>"
    if isinstance(t, StructType):
        return "struct<" + ",".join(f"{f.name}:{type_string(f.field_type)}" for f in t.fields) + ">"
    return str(t)


def canonical_type(text: str) -> str:
    return type_string(parse_type(text))


def can_widen(have: str, want: str) -> bool:
    """Iceberg's in-place type promotions (canonical type strings)."""
    if (have, want) in {("int", "long"), ("float", "double")}:
        return True
    a, b = _DECIMAL.match(have), _DECIMAL.match(want)
    return bool(a and b and a.group(2) == b.group(2) and int(b.group(1)) > int(a.group(1)))


def parse_partition_transform(text: str) -> Transform[Any, Any]:
    """identity, year, month, day, hour, bucket[N], truncate[W] (void is how Iceberg marks a dropped field)."""
    try:
        transform = parse_transform(text.strip())
    except (ValueError, TypeError, AttributeError):
        transform = None
    if not isinstance(transform, Transform) or isinstance(
        transform, (UnknownTransform, VoidTransform)
    ):
        raise ValueError(
            f"unknown partition transform {text!r}; known: identity, year, month, day, hour, bucket[N], truncate[W]"
        )
    return transform


def canonical_transform(text: str) -> str:
    return str(parse_partition_transform(text))


# ---------------------------------------------------------------- spec -> pyiceberg objects


def validate_spec(spec: TableSpec) -> None:
    """Check a spec on its own (types, transforms, references); raise PlanError listing problems."""
    problems: list[str] = []
    names = [c.name for c in spec.columns]
    if not spec.columns:
        problems.append("no columns")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"duplicate column(s) {', '.join(dupes)}")
    types: dict[str, IcebergType] = {}
    for c in spec.columns:
        try:
            types[c.name] = parse_type(c.type)
        except ValueError as exc:
            problems.append(f"column {c.name}: {exc}")
    for p in spec.partition_by:
        if p.source not in names:
            problems.append(f"partition source {p.source!r} is not a column")
            continue
        try:
            transform = parse_partition_transform(p.transform)
        except ValueError as exc:
            problems.append(f"partition {p.source}: {exc}")
            continue
        if p.source in types and not transform.can_transform(types[p.source]):
            problems.append(
                f"partition {p.source}: {p.transform} cannot transform {type_string(types[p.source])}"
            )
    for s in spec.sort_by:
        if s.source not in names:
            problems.append(f"sort source {s.source!r} is not a column")
        if s.direction not in ("asc", "desc"):
            problems.append(f"sort {s.source}: direction must be asc or desc, not {s.direction!r}")
        if s.null_order not in ("nulls-first", "nulls-last"):
            problems.append(
                f"sort {s.source}: null order must be nulls-first or nulls-last, not {s.null_order!r}"
            )
    fv = spec.properties.get(FORMAT_VERSION_PROPERTY)
    if fv is not None and fv not in ("1", "2", "3"):
        problems.append(f"{FORMAT_VERSION_PROPERTY} must be 1, 2 or 3, not {fv!r}")
    if problems:
        raise PlanError(spec.identifier, problems)


def to_iceberg_schema(spec: TableSpec) -> Schema:
    """The spec's columns as an Iceberg schema (ids 1..N for the columns, nested ids after)."""
    validate_spec(spec)
    nested_ids = iter(range(len(spec.columns) + 1, 1 << 30))
    fields = [
        NestedField(
            field_id=i,
            name=c.name,
            field_type=parse_type(c.type, nested_ids.__next__),
            required=c.required,
            doc=c.doc or None,
        )
        for i, c in enumerate(spec.columns, start=1)
    ]
    return Schema(*fields)


def to_partition_spec(spec: TableSpec, schema: Schema) -> PartitionSpec:
    """The spec's partitioning bound to `schema` (field names as Spark would choose them)."""
    fields = []
    for i, p in enumerate(spec.partition_by):
        transform = parse_partition_transform(p.transform)
        source = schema.find_field(p.source)
        fields.append(
            IcebergPartitionField(
                source_id=source.field_id,
                field_id=1000 + i,
                transform=transform,
                name=_partition_field_name(p.source, transform),
            )
        )
    return PartitionSpec(*fields)


def _partition_field_name(source: str, transform: Transform[Any, Any]) -> str:
    """Iceberg Java's (and so Spark's) default names: ts_day, id_bucket, name_trunc, col."""
    if isinstance(transform, IdentityTransform):
        return source
    text = str(transform)  # year, month, day, hour, bucket[16], truncate[4]
    if text.startswith("bucket"):
        return f"{source}_bucket"
    if text.startswith("truncate"):
        return f"{source}_trunc"
    return f"{source}_{text}"


def to_sort_order(spec: TableSpec, schema: Schema) -> SortOrder:
    """The spec's sort order bound to `schema` (unsorted when the spec has none)."""
    if not spec.sort_by:
        return SortOrder(order_id=0)
    return SortOrder(
        *(
            IcebergSortField(
                source_id=schema.find_field(s.source).field_id,
                transform=IdentityTransform(),
                direction=SortDirection(s.direction),
                null_order=NullOrder(s.null_order),
            )
            for s in spec.sort_by
        ),
        order_id=1,
    )


# ---------------------------------------------------------------- changes (data)


@dataclass(frozen=True)
class Change:
    """One DDL step. Subclasses are plain data: printable, comparable, JSON-able via as_dict()."""

    def describe(self) -> str:
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        return {"change": type(self).__name__, **dataclasses.asdict(self)}

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class TableChange(Change):
    """A change to one existing table; apply() commits a run of them as one transaction."""

    identifier: str


@dataclass(frozen=True)
class CreateNamespace(Change):
    namespace: str

    def describe(self) -> str:
        return f"create namespace {self.namespace}"


@dataclass(frozen=True)
class CreateTable(Change):
    spec: TableSpec

    @property
    def identifier(self) -> str:
        return self.spec.identifier

    def describe(self) -> str:
        parts = (
            f", partitioned by {_fmt_partitions(self.spec.partition_by)}"
            if self.spec.partition_by
            else ""
        )
        return f"create table {self.identifier} ({len(self.spec.columns)} columns{parts})"


@dataclass(frozen=True)
class AddColumn(TableChange):
    column: Column
    after: str | None = None  # None: first

    def describe(self) -> str:
        where = f"after {self.after}" if self.after else "first"
        return f"{self.identifier}: add column {self.column.name} {canonical_type(self.column.type)} ({where})"


@dataclass(frozen=True)
class WidenType(TableChange):
    column: str
    from_type: str
    to_type: str

    def describe(self) -> str:
        return f"{self.identifier}: widen {self.column} {self.from_type} -> {self.to_type}"


@dataclass(frozen=True)
class MakeOptional(TableChange):
    column: str

    def describe(self) -> str:
        return f"{self.identifier}: make {self.column} optional"


@dataclass(frozen=True)
class UpdateColumnDoc(TableChange):
    column: str
    doc: str

    def describe(self) -> str:
        return f"{self.identifier}: set doc of {self.column} to {self.doc!r}"


@dataclass(frozen=True)
class UpdatePartitionSpec(TableChange):
    fields: tuple[PartitionField, ...]
    previous: tuple[PartitionField, ...] = ()

    def describe(self) -> str:
        return (
            f"{self.identifier}: partition by {_fmt_partitions(self.fields) or 'nothing'}"
            f" (was {_fmt_partitions(self.previous) or 'unpartitioned'})"
        )


@dataclass(frozen=True)
class UpdateSortOrder(TableChange):
    fields: tuple[SortField, ...]
    previous: tuple[SortField, ...] = ()

    def describe(self) -> str:
        return (
            f"{self.identifier}: sort by {_fmt_sort(self.fields) or 'nothing'}"
            f" (was {_fmt_sort(self.previous) or 'unsorted'})"
        )


@dataclass(frozen=True)
class SetProperties(TableChange):
    updates: dict[str, str] = field(default_factory=dict)
    previous: dict[str, str | None] = field(default_factory=dict)

    def describe(self) -> str:
        items = ", ".join(
            f"{k}={v} (was {self.previous.get(k)})" for k, v in sorted(self.updates.items())
        )
        return f"{self.identifier}: set {items}"


@dataclass(frozen=True)
class UpgradeFormatVersion(TableChange):
    from_version: int
    to_version: int

    def describe(self) -> str:
        return f"{self.identifier}: upgrade format version {self.from_version} -> {self.to_version}"


_SCHEMA_CHANGES = (AddColumn, WidenType, MakeOptional, UpdateColumnDoc)


def _fmt_partitions(fields: Iterable[PartitionField]) -> str:
    return ", ".join(
        p.source if p.transform == "identity" else f"{p.transform}({p.source})" for p in fields
    )


def _fmt_sort(fields: Iterable[SortField]) -> str:
    return ", ".join(f"{s.source} {s.direction} {s.null_order}" for s in fields)


# ---------------------------------------------------------------- planning (pure)


def current_partitioning(table: Table) -> tuple[PartitionField, ...]:
    """The table's current partition fields as spec data (void fields, i.e. dropped ones, skipped)."""
    schema = table.schema()
    return tuple(
        PartitionField(schema.find_column_name(f.source_id) or str(f.source_id), str(f.transform))
        for f in table.spec().fields
        if not isinstance(f.transform, VoidTransform)
    )


def current_sort_order(table: Table) -> tuple[SortField, ...]:
    schema = table.schema()
    return tuple(
        SortField(
            schema.find_column_name(f.source_id) or str(f.source_id),
            f.direction.value,
            f.null_order.value,
        )
        for f in table.sort_order().fields
    )


def plan(
    spec: TableSpec, current: Table | None, *, namespace_exists: bool | None = None
) -> list[Change]:
    """What it takes to make `current` (None: absent) match `spec`. [] when it already does.

    For an absent table the plan starts with CreateNamespace unless `namespace_exists`
    says it is there (creating a namespace is idempotent, so unknown is safe).
    Raises PlanError for an invalid spec or a difference Iceberg cannot evolve.
    """
    validate_spec(spec)
    ident = spec.identifier
    if current is None:
        changes: list[Change] = []
        if not namespace_exists:
            changes.append(CreateNamespace(spec.namespace))
        changes.append(CreateTable(spec))
        return changes

    problems: list[str] = []
    changes = []

    # the format version first: newer column types need a newer format
    have_fv = int(current.format_version)
    want_fv = int(spec.properties.get(FORMAT_VERSION_PROPERTY, have_fv))
    if want_fv > have_fv:
        changes.append(UpgradeFormatVersion(ident, have_fv, want_fv))
    elif want_fv < have_fv:
        problems.append(f"format version {have_fv} cannot be downgraded to {want_fv}")

    # columns
    existing = {f.name: f for f in current.schema().fields}
    previous: str | None = None
    for col in spec.columns:
        want_type = canonical_type(col.type)
        have = existing.get(col.name)
        if have is None:
            if col.required:
                problems.append(f"cannot add required column {col.name} to an existing table")
            else:
                changes.append(AddColumn(ident, col, previous))
        else:
            have_type = type_string(have.field_type)
            if have_type != want_type:
                if can_widen(have_type, want_type):
                    changes.append(WidenType(ident, col.name, have_type, want_type))
                else:
                    problems.append(
                        f"column {col.name} is {have_type}, cannot change it to {want_type} in place"
                    )
            if have.required and not col.required:
                changes.append(MakeOptional(ident, col.name))
            elif col.required and not have.required:
                problems.append(f"column {col.name} is optional, cannot make it required")
            if (have.doc or "") != col.doc:
                changes.append(UpdateColumnDoc(ident, col.name, col.doc))
        previous = col.name

    # partitioning (compared as a set: Iceberg cannot reorder partition fields in place)
    have_parts = current_partitioning(current)
    want_parts = tuple(
        PartitionField(p.source, canonical_transform(p.transform)) for p in spec.partition_by
    )
    if set(have_parts) != set(want_parts):
        changes.append(UpdatePartitionSpec(ident, want_parts, have_parts))

    # sort order (ordered)
    have_sort = current_sort_order(current)
    if have_sort != tuple(spec.sort_by):
        changes.append(UpdateSortOrder(ident, tuple(spec.sort_by), have_sort))

    # properties the spec declares (others belong to engines and are left alone)
    props = current.properties
    updates = {
        k: v
        for k, v in spec.properties.items()
        if k != FORMAT_VERSION_PROPERTY and props.get(k) != v
    }
    if updates:
        changes.append(SetProperties(ident, updates, {k: props.get(k) for k in updates}))

    if problems:
        raise PlanError(ident, problems)
    return changes


def load_current(catalog: Catalog, identifier: str) -> Table | None:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        return None


def plan_in(catalog: Catalog, spec: TableSpec) -> list[Change]:
    """plan() against what `catalog` holds now (loads the table and checks the namespace)."""
    current = load_current(catalog, spec.identifier)
    exists = True if current is not None else catalog.namespace_exists(spec.namespace)
    return plan(spec, current, namespace_exists=exists)


# ---------------------------------------------------------------- apply (thin)


def apply(catalog: Catalog, changes: Sequence[Change]) -> None:
    """Carry out `changes` in order; consecutive changes to one table commit as one transaction."""
    i = 0
    while i < len(changes):
        change = changes[i]
        if isinstance(change, CreateNamespace):
            catalog.create_namespace_if_not_exists(change.namespace)
            i += 1
        elif isinstance(change, CreateTable):
            _create(catalog, change.spec)
            i += 1
        elif isinstance(change, TableChange):
            run = [change]
            for other in changes[i + 1 :]:
                if not (isinstance(other, TableChange) and other.identifier == change.identifier):
                    break
                run.append(other)
            _alter(catalog.load_table(change.identifier), run)
            i += len(run)
        else:
            raise TypeError(f"unknown change {change!r}")


def _create(catalog: Catalog, spec: TableSpec) -> Table:
    schema = to_iceberg_schema(spec)
    return catalog.create_table(
        spec.identifier,
        schema=schema,
        partition_spec=to_partition_spec(spec, schema),
        sort_order=to_sort_order(spec, schema),
        properties=dict(spec.properties),
    )


def _alter(table: Table, changes: Sequence[TableChange]) -> None:
    with table.transaction() as tx:
        for c in changes:
            if isinstance(c, UpgradeFormatVersion):
                tx.upgrade_table_version(c.to_version)  # type: ignore[arg-type]
        schema_changes = [c for c in changes if isinstance(c, _SCHEMA_CHANGES)]
        if schema_changes:
            with tx.update_schema() as us:
                for c in schema_changes:
                    if isinstance(c, AddColumn):
                        us.add_column(
                            c.column.name,
                            parse_type(c.column.type),
                            doc=c.column.doc or None,
                        )
                        if c.after is None:
                            us.move_first(c.column.name)
                        else:
                            us.move_after(c.column.name, c.after)
                    elif isinstance(c, WidenType):
                        us.update_column(c.column, field_type=parse_type(c.to_type))
                    elif isinstance(c, MakeOptional):
                        us.update_column(c.column, required=False)
                    elif isinstance(c, UpdateColumnDoc):
                        us.update_column(c.column, doc=c.doc)
        for c in changes:
            if isinstance(c, UpdatePartitionSpec):
                _update_spec(tx, c)
            elif isinstance(c, UpdateSortOrder):
                with tx.update_sort_order() as so:
                    for s in c.fields:
                        add = so.asc if s.direction == "asc" else so.desc
                        add(s.source, IdentityTransform(), NullOrder(s.null_order))
            elif isinstance(c, SetProperties):
                tx.set_properties(c.updates)


def _update_spec(tx: Any, change: UpdatePartitionSpec) -> None:
    """Remove the partition fields the spec no longer has, add the missing ones (as of now)."""
    want = set(change.fields)
    schema = tx.table_metadata.schema()
    have: set[PartitionField] = set()
    with tx.update_spec() as us:
        for f in tx.table_metadata.spec().fields:
            if isinstance(f.transform, VoidTransform):
                continue
            field_ = PartitionField(schema.find_column_name(f.source_id) or "", str(f.transform))
            have.add(field_)
            if field_ not in want:
                us.remove_field(f.name)
        for p in change.fields:
            if p not in have:
                transform = parse_partition_transform(p.transform)
                us.add_field(p.source, transform, _partition_field_name(p.source, transform))


# ---------------------------------------------------------------- drop and status


@dataclass(frozen=True)
class DropResult:
    identifier: str
    purged: bool
    location: str
    files_left_by_catalog: int = 0  # referenced files the catalog did not delete (we did)
    location_removed: bool = False  # the table's local directory tree was removed


def drop(catalog: Catalog, identifier: str, purge: bool) -> DropResult:
    """Drop a table; with `purge`, also delete its data and metadata files.

    Purging asks the catalog first: a REST catalog deletes on the server side (Iceberg's
    REST server over a JDBC catalog does: data files, manifests, manifest lists and
    metadata files, leaving empty directories), the embedded SQL catalog through
    pyiceberg. Whatever the table referenced and is still there afterwards is deleted
    here, and on a local filesystem warehouse the table's directory (with orphan files
    and empty directories) is removed as well.
    """
    table = catalog.load_table(identifier)
    location = table.location()
    if not purge:
        catalog.drop_table(identifier)
        return DropResult(identifier, False, location)
    try:
        referenced = _referenced_files(table)
    except Exception as exc:  # noqa: BLE001 - unreadable manifests must not block the drop
        log.warning(
            "%s: cannot list its files (%s); relying on the catalog's purge", identifier, exc
        )
        referenced = []
    catalog.purge_table(identifier)
    io = table.io
    left = [p for p in referenced if _exists(io, p)]
    for p in left:
        io.delete(p)
    removed = _remove_local_location(location, identifier.rsplit(".", 1)[-1])
    return DropResult(identifier, True, location, len(left), removed)


def _referenced_files(table: Table) -> list[str]:
    """Every file the table's metadata points at: data, delete, manifests, lists, metadata."""
    io = table.io
    md = table.metadata
    files: list[str] = []
    manifests: set[str] = set()
    for snapshot in md.snapshots:
        files.append(snapshot.manifest_list)
        for m in snapshot.manifests(io):
            if m.manifest_path in manifests:
                continue
            manifests.add(m.manifest_path)
            files.extend(
                e.data_file.file_path for e in m.fetch_manifest_entry(io, discard_deleted=False)
            )
    files.extend(manifests)
    files.extend(entry.metadata_file for entry in md.metadata_log)
    if table.metadata_location:
        files.append(table.metadata_location)
    return list(dict.fromkeys(files))


def _exists(io: Any, path: str) -> bool:
    try:
        return bool(io.new_input(path).exists())
    except Exception:  # noqa: BLE001 - unreachable storage: nothing we can delete either
        return False


def _local_path(location: str) -> Path | None:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and location.startswith("/"):
        return Path(location)
    return None


def _remove_local_location(location: str, table_name: str) -> bool:
    """rm -r a local table directory, only if it looks like one (named after the table)."""
    path = _local_path(location)
    if path is None or not path.is_dir():
        return False
    if (
        not (path.name == table_name or path.name.startswith(table_name + "-"))
        or len(path.parts) < 3
    ):
        log.warning(
            "not removing %s: it does not look like the location of table %s",
            path,
            table_name,
        )
        return False
    shutil.rmtree(path)
    return True


def table_status(table: Table) -> dict[str, Any]:
    """What the operator's status and `k2 tables list` show about a table (JSON-able)."""
    md = table.metadata
    current = table.current_snapshot()
    return {
        "identifier": ".".join(table.name()),
        "uuid": str(md.table_uuid),
        "formatVersion": int(md.format_version),
        "schemaId": table.schema().schema_id,
        "fieldCount": len(table.schema().fields),
        "partitioning": [
            p.source if p.transform == "identity" else f"{p.transform}({p.source})"
            for p in current_partitioning(table)
        ],
        "specId": table.spec().spec_id,
        "sortOrder": [f"{s.source} {s.direction}" for s in current_sort_order(table)],
        "snapshotCount": len(md.snapshots),
        "currentSnapshotId": current.snapshot_id if current else None,
        "location": table.location(),
    }
