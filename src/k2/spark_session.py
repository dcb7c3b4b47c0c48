"""SparkSession for K2's jobs and tests: the pyspark wheel's Spark, plus the connector jars
pinned by build/jvm/spark/pom.xml (Iceberg runtime, Kafka source/sink, Avro), with the Iceberg
REST catalog configured as catalog `k2`.

The configuration is split so that the operator can render the same settings into a
SparkApplication: `iceberg_spark_conf` (catalog + extensions, what any Spark needs to reach the
tables) and `local_spark_conf` (this machine only: loopback, no UI, small parallelism) are pure
functions; only `spark_jars` and `spark_session` touch the disk or start a JVM.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
SPARK_CATALOG_CLASS = "org.apache.iceberg.spark.SparkCatalog"


def spark_jars() -> list[str]:
    """Absolute paths of the connector jars (resolved from Maven Central once, then cached)."""
    from k2.stack import jvm

    return [str(p) for p in jvm.jars("spark")]


def iceberg_spark_conf(
    catalog_uri: str,
    warehouse: str,
    *,
    catalog_name: str = "k2",
    jars: Sequence[str] | None = None,
    extra_catalog_props: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Spark settings that make `catalog_name` an Iceberg REST catalog (pure).

    `jars`, when given, become `spark.jars` (comma-separated paths or URLs).
    `extra_catalog_props` are catalog properties (e.g. `io-impl`, S3 endpoint settings).
    """
    prefix = f"spark.sql.catalog.{catalog_name}"
    conf = {
        "spark.sql.extensions": ICEBERG_EXTENSIONS,
        prefix: SPARK_CATALOG_CLASS,
        f"{prefix}.type": "rest",
        f"{prefix}.uri": catalog_uri,
        f"{prefix}.warehouse": warehouse,
        "spark.sql.session.timeZone": "UTC",
    }
    for key, value in (extra_catalog_props or {}).items():
        conf[f"{prefix}.{key}"] = value
    if jars:
        conf["spark.jars"] = ",".join(jars)
    return conf


def local_spark_conf(
    *, shuffle_partitions: int = 2, driver_memory: str = "2g", python: str | None = None
) -> dict[str, str]:
    """Settings for Spark in local mode on this machine (pure): loopback only, no UI."""
    return {
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.default.parallelism": str(shuffle_partitions),
        "spark.driver.memory": driver_memory,
        "spark.pyspark.python": python or sys.executable,
        "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
    }


def _ensure_java_home() -> None:
    """Spark 4.1 needs Java 17+: point JAVA_HOME at one unless it already does."""
    from k2.stack import jvm

    home = os.environ.get("JAVA_HOME")
    if home and (jvm.java_major(str(Path(home) / "bin" / "java")) or 0) >= 17:
        return
    os.environ["JAVA_HOME"] = str(Path(jvm.find_java(17)).resolve().parent.parent)


def spark_session(
    app_name: str,
    *,
    catalog_uri: str,
    warehouse: str,
    catalog_name: str = "k2",
    master: str = "local[2]",
    extra_conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """A SparkSession (getOrCreate) with the connector jars and the REST catalog `catalog_name`.

    Settings that configure the JVM (jars, driver memory) only apply when this creates the
    first session of the process.
    """
    from pyspark.sql import SparkSession

    _ensure_java_home()
    # everything Spark resolves for itself (block manager, shuffle) stays on loopback too
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf = {
        **local_spark_conf(),
        **iceberg_spark_conf(catalog_uri, warehouse, catalog_name=catalog_name, jars=spark_jars()),
        **(extra_conf or {}),
    }
    builder = SparkSession.builder.appName(app_name).master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
