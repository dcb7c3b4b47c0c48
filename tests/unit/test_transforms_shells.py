"""The job shells' pure parts: options from the declaration, CLI overrides, the schema-id
check against a (fake) registry, replay plumbing. No Spark, no services."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from k2 import pipeline as pipeline_mod
from k2.contracts.trade import schema_dict, schema_text
from k2.pipeline import Pipeline
from k2_jobs import bronze, cli, silver, testdata
from k2_jobs.common import (
    JobOptions,
    is_kafka_metrics_npe,
    job_conf,
    local_cores,
    max_per_trigger,
    options_from_args,
    pipeline_from_args,
    trigger_kwargs,
)
from k2_jobs.registry import SchemaIds, same_schema
from k2_jobs.sinks import committed_batches

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml"


@pytest.fixture
def example() -> Pipeline:
    return pipeline_mod.load(EXAMPLE)


def with_jobs(p: Pipeline, **jobs: pipeline_mod.JobSettings) -> Pipeline:
    return dataclasses.replace(p, jobs={**p.jobs, **jobs})


def test_kafka_options_come_from_the_declaration(example: Pipeline) -> None:
    opts = bronze.kafka_options(example)
    assert opts["subscribe"] == "market.crypto.trades.binance,market.crypto.trades.kraken"
    assert opts["kafka.bootstrap.servers"] == "k2-kafka:9092"
    assert opts["startingOffsets"] == "earliest"
    assert opts["failOnDataLoss"] == "true"
    assert "maxOffsetsPerTrigger" not in opts
    skip = dataclasses.replace(example, fail_on_data_loss=False, starting_offsets="latest")
    limited = with_jobs(skip, bronze=pipeline_mod.JobSettings("2 seconds", 50_000))
    opts = bronze.kafka_options(limited)
    assert (opts["failOnDataLoss"], opts["startingOffsets"], opts["maxOffsetsPerTrigger"]) == (
        "false",
        "latest",
        "50000",
    )
    assert (
        bronze.kafka_options(limited, JobOptions(max_per_trigger=7))["maxOffsetsPerTrigger"] == "7"
    )


def test_iceberg_stream_options(example: Pipeline) -> None:
    assert silver.iceberg_stream_options(example, "silver") == {
        "streaming-skip-delete-snapshots": "true"
    }
    p = with_jobs(example, silver=pipeline_mod.JobSettings("5 seconds", 10_000))
    assert (
        silver.iceberg_stream_options(p, "silver")["streaming-max-rows-per-micro-batch"] == "10000"
    )
    assert max_per_trigger(p, "gold", JobOptions()) is None


def test_triggers(example: Pipeline) -> None:
    assert trigger_kwargs(example, "silver", JobOptions()) == {"processingTime": "5 seconds"}
    assert trigger_kwargs(example, "gold", JobOptions(trigger="1 second")) == {
        "processingTime": "1 second"
    }
    assert trigger_kwargs(example, "bronze", JobOptions(available_now=True)) == {
        "availableNow": True
    }


def test_job_conf_declaration_wins(example: Pipeline) -> None:
    conf = job_conf(example, "silver", cores=2)
    assert conf["spark.sql.catalog.k2.cache-enabled"] == "false"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.shuffle.partitions"] == "2"
    p = dataclasses.replace(
        example,
        spark=dataclasses.replace(example.spark, conf={"spark.sql.shuffle.partitions": "8"}),
    )
    assert job_conf(p, "silver", cores=2)["spark.sql.shuffle.partitions"] == "8"
    assert 1 <= local_cores(example) <= 4


def test_cli_overrides_endpoints() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "silver",
            "-f",
            str(EXAMPLE),
            "--bootstrap-servers",
            "127.0.0.1:9092",
            "--catalog-uri",
            "http://127.0.0.1:8181",
            "--warehouse",
            "file:///tmp/wh",
            "--checkpoint-location",
            "/tmp/ck",
            "--available-now",
            "--max-per-trigger",
            "100",
        ]
    )
    p = pipeline_from_args(args)
    assert (p.kafka_bootstrap, p.catalog_uri, p.warehouse) == (
        "127.0.0.1:9092",
        "http://127.0.0.1:8181",
        "file:///tmp/wh",
    )
    assert p.schema_registry_url == "http://k2-schema-registry:8080/apis/ccompat/v7"
    assert p.checkpoint("silver") == "/tmp/ck/crypto/silver"
    assert options_from_args(args) == JobOptions(available_now=True, max_per_trigger=100)
    bad = parser.parse_args(["gold", "-f", str(EXAMPLE), "--trigger", "soon"])
    with pytest.raises(SystemExit):
        options_from_args(bad)


def test_testdata_declaration_parses(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        testdata.pipeline_yaml(
            bootstrap="127.0.0.1:1",
            registry="http://127.0.0.1:2",
            catalog="http://127.0.0.1:3",
            warehouse="file:///tmp/wh",
            checkpoints="/tmp/ck",
            namespace="ns",
            topics={"BINANCE": "t.b", "KRAKEN": "t.k"},
            max_per_trigger={"silver": 300},
        )
    )
    p = pipeline_mod.load(path)
    assert p.topics() == ["t.b", "t.k"]
    assert p.namespace == "ns"
    assert p.jobs["silver"].max_offsets_per_trigger == 300
    assert p.jobs["bronze"].max_offsets_per_trigger is None


def test_kafka_metrics_npe_is_recognised() -> None:
    msg = (
        '[STREAM_FAILED] Query terminated with exception: Cannot invoke "scala.collection.IterableOps.map'
        '(scala.Function1)" because the return value of "scala.Option.get()" is null'
    )
    assert is_kafka_metrics_npe(RuntimeError(msg))
    assert not is_kafka_metrics_npe(RuntimeError("[STREAM_FAILED] Table not found"))


def test_committed_batches_only_takes_a_uuid() -> None:
    with pytest.raises(ValueError):
        committed_batches(None, ["k2.ns.t"], "x'; DROP TABLE t; --")  # type: ignore[arg-type]


# ---------------------------------------------------------------- schema ids


class FakeSchema:
    def __init__(self, text: str, schema_type: str = "AVRO") -> None:
        self.schema_str, self.schema_type = text, schema_type


class FakeRegistered:
    def __init__(self, schema_id: int) -> None:
        self.schema_id = schema_id


class FakeRegistry:
    """subject -> [schema ids by version]; id -> schema text. Counts calls."""

    def __init__(self, subjects: dict[str, list[int]], schemas: dict[int, str]) -> None:
        self.subjects, self.schemas = subjects, schemas
        self.calls: list[str] = []

    def get_versions(self, subject: str) -> list[int]:
        from confluent_kafka.schema_registry import SchemaRegistryError

        self.calls.append(f"versions {subject}")
        if subject not in self.subjects:
            raise SchemaRegistryError(404, 40401, "Subject not found")
        return list(range(1, len(self.subjects[subject]) + 1))

    def get_version(self, subject: str, version: int) -> FakeRegistered:
        return FakeRegistered(self.subjects[subject][version - 1])

    def get_schema(self, schema_id: int) -> FakeSchema:
        self.calls.append(f"schema {schema_id}")
        return FakeSchema(self.schemas[schema_id])


def test_schema_ids_accept_only_v3_registered_under_the_topic() -> None:
    other = json.dumps(
        {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}
    )
    reg = FakeRegistry(
        {"t.binance-value": [1, 5], "t.kraken-value": [2]},
        {1: schema_text(), 2: json.dumps(schema_dict(), indent=4), 5: other},
    )
    ids = SchemaIds(client=reg)
    known = ids.known(
        [("t.binance", 1), ("t.binance", 5), ("t.binance", 2), ("t.kraken", 2), ("t.none", 1)]
    )
    assert known == {"t.binance": {1}, "t.kraken": {2}}
    # verdicts are cached: asking again costs nothing
    n = len(reg.calls)
    assert ids.known([("t.binance", 1), ("t.binance", 5)]) == {"t.binance": {1}}
    assert len(reg.calls) == n


def test_schema_ids_see_a_registration_made_after_the_first_look() -> None:
    reg = FakeRegistry({"t.b-value": [1]}, {1: schema_text(), 9: schema_text()})
    ids = SchemaIds(client=reg)
    assert ids.check("t.b", 1)
    reg.subjects["t.b-value"].append(9)
    assert ids.check("t.b", 9)


def test_same_schema_ignores_formatting_but_not_content() -> None:
    assert same_schema(schema_text(), json.dumps(schema_dict(), separators=(",", ":")))
    changed: dict[str, Any] = json.loads(schema_text())
    changed["fields"][5]["type"]["precision"] = 38
    assert not same_schema(schema_text(), changed)
    assert not same_schema(schema_text(), "not json")
