"""Iceberg REST catalog: Iceberg's own REST catalog server over a JDBC catalog in SQLite.

Jars from build/jvm/catalog/pom.xml; K2RestCatalogServer (compiled beside them) starts
org.apache.iceberg.rest's fixture server bound to 127.0.0.1 only. Configured through
CATALOG_* environment variables, as the apache/iceberg-rest-fixture image is. Under its run
dir: catalog.db (SQLite, the catalog's tables `iceberg_tables`, `iceberg_namespace_properties`),
warehouse/ (table data and metadata, file://) and catalog.log.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from k2.stack import jvm
from k2.stack.base import HOST, Service, free_port, http_ok, spawn, wait_until

START_TIMEOUT = 60.0
MAIN_CLASS = "org.apache.iceberg.rest.K2RestCatalogServer"


def catalog_env(run_dir: Path, port: int) -> dict[str, str]:
    """CATALOG_* settings of the server (pure): `CATALOG_X_Y` is catalog property `x.y`."""
    return {
        "CATALOG_URI": f"jdbc:sqlite:{run_dir / 'catalog.db'}",
        "CATALOG_WAREHOUSE": (run_dir / "warehouse").as_uri(),
        "CATALOG_JDBC_SCHEMA__VERSION": "V1",
        # SQLite allows one writer: one pooled connection serialises commits
        "CATALOG_CLIENTS": "1",
        "CATALOG_REST_HOST": HOST,
        "CATALOG_REST_PORT": str(port),
    }


class CatalogService(Service):
    name = "catalog"

    def prepare(self) -> None:
        jvm.resolve("catalog")
        jvm.find_java(17)

    def start(self, run_dir: Path, env: Mapping[str, Any]) -> dict[str, Any]:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "warehouse").mkdir(exist_ok=True)
        port = free_port()
        argv = [
            jvm.find_java(17),
            "-Xms64m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            *jvm.java_opts("catalog"),
            "-cp",
            jvm.classpath("catalog"),
            MAIN_CLASS,
        ]
        pid = spawn(argv, name="catalog", run_dir=run_dir, env=catalog_env(run_dir, port))
        endpoints = {
            "uri": f"http://{HOST}:{port}",
            "warehouse": (run_dir / "warehouse").as_uri(),
        }
        wait_until(
            lambda: self._probe(endpoints),
            timeout=START_TIMEOUT,
            what="catalog",
            log=run_dir / "catalog.log",
            pid=pid,
        )
        return endpoints

    @staticmethod
    def _probe(endpoints: Mapping[str, Any]) -> bool:
        return http_ok(f"{endpoints['uri']}/v1/config")

    def healthy(self, run_dir: Path, endpoints: Mapping[str, Any]) -> bool:
        return super().healthy(run_dir, endpoints) and self._probe(endpoints)
