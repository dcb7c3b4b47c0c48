"""The pure parts of the local services: what each one is told (no process started)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from k2.spark_session import iceberg_spark_conf, local_spark_conf
from k2.stack import services
from k2.stack.catalog import catalog_env
from k2.stack.kafka import new_cluster_id, render_properties, server_properties
from k2.stack.registry import registry_argv


def test_kafka_is_one_combined_kraft_node_on_loopback(tmp_path: Path) -> None:
    props = server_properties(port=1111, controller_port=2222, log_dir=tmp_path / "data")
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:2222"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1111,CONTROLLER://127.0.0.1:2222"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1111"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    text = render_properties(props)
    assert "node.id=1\n" in text and text.endswith("\n")


def test_cluster_id_is_22_chars_of_base64url() -> None:
    cid = new_cluster_id()
    assert len(cid) == 22
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert new_cluster_id() != cid


def test_catalog_env_maps_to_catalog_properties(tmp_path: Path) -> None:
    env = catalog_env(tmp_path, 8282)
    assert env["CATALOG_URI"] == f"jdbc:sqlite:{tmp_path / 'catalog.db'}"
    assert env["CATALOG_WAREHOUSE"] == (tmp_path / "warehouse").as_uri()
    assert env["CATALOG_WAREHOUSE"].startswith("file:///")
    assert env["CATALOG_REST_HOST"] == "127.0.0.1" and env["CATALOG_REST_PORT"] == "8282"
    assert env["CATALOG_JDBC_SCHEMA__VERSION"] == "V1"  # -> jdbc.schema-version


def test_registry_listens_on_loopback_only(tmp_path: Path) -> None:
    argv = registry_argv("java", tmp_path / "dist", tmp_path, port=8080, management_port=9000)
    assert argv[-2:] == ["-jar", str(tmp_path / "dist" / "quarkus-run.jar")]
    for flag in (
        "-Dquarkus.http.host=127.0.0.1",
        "-Dquarkus.management.host=127.0.0.1",
        "-Dquarkus.http.port=8080",
        "-Dquarkus.management.port=9000",
        "-Dquarkus.otel.sdk.disabled=true",
    ):
        assert flag in argv


def test_java_opts_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K2_REGISTRY_JAVA_OPTS", "-Xmx1g '-Dx=a b'")
    argv = registry_argv("java", tmp_path, tmp_path, port=1, management_port=2)
    assert argv[argv.index("-jar") - 2 : argv.index("-jar")] == ["-Xmx1g", "-Dx=a b"]


def test_iceberg_spark_conf_is_a_rest_catalog() -> None:
    conf = iceberg_spark_conf("http://127.0.0.1:8181", "file:///w", jars=["/a.jar", "/b.jar"])
    assert conf["spark.sql.catalog.k2"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.catalog.k2.type"] == "rest"
    assert conf["spark.sql.catalog.k2.uri"] == "http://127.0.0.1:8181"
    assert conf["spark.sql.catalog.k2.warehouse"] == "file:///w"
    assert "IcebergSparkSessionExtensions" in conf["spark.sql.extensions"]
    assert conf["spark.jars"] == "/a.jar,/b.jar"
    other = iceberg_spark_conf(
        "u", "w", catalog_name="lake", extra_catalog_props={"io-impl": "x.FileIO"}
    )
    assert other["spark.sql.catalog.lake.io-impl"] == "x.FileIO"
    assert "spark.jars" not in other and "spark.sql.catalog.k2" not in other


def test_local_spark_conf_stays_on_loopback() -> None:
    conf = local_spark_conf()
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.driver.host"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"
    assert 2 <= int(conf["spark.sql.shuffle.partitions"]) <= 4


def test_service_registry() -> None:
    assert {"kafka", "registry", "catalog"} <= set(services.available())
    assert services.get("kafka").name == "kafka"
    with pytest.raises(KeyError, match="unknown service"):
        services.get("zookeeper")
