"""Opening the Iceberg catalog: a REST catalog by URL, or the embedded SQL catalog.

    load_catalog("http://127.0.0.1:8181", "file:///.../warehouse")        # REST
    load_catalog("sqlite:////tmp/k2/catalog.db", "file:///tmp/k2/wh")     # embedded (SQLite)
    load_catalog("jdbc:sqlite:/tmp/k2/catalog.db", "file:///tmp/k2/wh")   # same DB as Iceberg Java's JdbcCatalog

The SQL catalog shares its tables (`iceberg_tables`, `iceberg_namespace_properties`)
with Iceberg Java's JdbcCatalog (jdbc.schema-version=V1 on the Java side), so both can open the same
SQLite file if they use the same catalog name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

DEFAULT_NAME = "k2"


def warehouse_uri(warehouse: str | Path) -> str:
    """A warehouse location as a URI: plain local paths become file:// URIs."""
    text = str(warehouse)
    if "://" in text:
        return text
    return Path(text).expanduser().resolve().as_uri()


def sqlalchemy_uri(uri: str) -> str | None:
    """The SQLAlchemy URL of a SQL catalog URI (sqlite:, postgresql:, jdbc:sqlite:), else None."""
    if uri.startswith("jdbc:sqlite:"):
        path = uri[len("jdbc:sqlite:") :]
        if path.startswith("file:"):
            path = path[len("file:") :]
        return f"sqlite:///{path}"  # an absolute path keeps its leading '/': sqlite:////abs
    if uri.startswith(("sqlite:", "postgresql:", "postgresql+")):
        return uri
    return None


def load_catalog(
    uri: str, warehouse: str | Path, name: str = DEFAULT_NAME, **properties: Any
) -> Catalog:
    """A pyiceberg catalog: REST for http(s) URIs, the embedded SQL catalog for SQL URIs.

    Extra `properties` go to pyiceberg as catalog properties (e.g. s3.endpoint).
    """
    props = {
        "warehouse": warehouse_uri(warehouse),
        **{k: str(v) for k, v in properties.items()},
    }
    if uri.startswith(("http://", "https://")):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(name, uri=uri.rstrip("/"), **props)
    sql = sqlalchemy_uri(uri)
    if sql is not None:
        from pyiceberg.catalog.sql import SqlCatalog

        if sql.startswith("sqlite:///"):
            Path(sql[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return SqlCatalog(name, uri=sql, **props)
    raise ValueError(
        f"unsupported catalog URI {uri!r}: expected http(s)://, sqlite:, jdbc:sqlite: or postgresql:"
    )


def embedded_catalog(directory: str | Path, name: str = DEFAULT_NAME) -> Catalog:
    """A SQLite-backed catalog with its warehouse, both under `directory` (for tests and laptops)."""
    root = Path(directory).expanduser().resolve()
    (root / "warehouse").mkdir(parents=True, exist_ok=True)
    return load_catalog(f"sqlite:///{root / 'catalog.db'}", root / "warehouse", name)
