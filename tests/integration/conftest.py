"""Fixtures shared by the integration tests (the services themselves are in tests/conftest.py).

make_pipeline   make_pipeline(name, namespace, **pipeline_yaml_args) -> JobsPipeline:
                a declaration of the jobs' own, on fresh Kafka topics, with its medallion
                tables (re)created empty in `namespace`, and a producer to its topics
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from k2 import pipeline as pipeline_mod
from k2.catalog import load_catalog
from k2.contracts.tables import ALL_TABLES
from k2.pipeline import Pipeline
from k2_jobs import testdata

EXCHANGES = ("BINANCE", "KRAKEN")


@dataclass
class JobsPipeline:
    path: Path  # the declaration (pipeline.yaml)
    pipeline: Pipeline
    producer: testdata.Producer  # trade v3 to the pipeline's topics
    tmp: Path  # the declaration's directory; checkpoints live in tmp / "checkpoints"


@pytest.fixture(scope="module")
def make_pipeline(
    kafka: dict[str, Any],
    registry: dict[str, Any],
    catalog: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., JobsPipeline]:
    """A factory: `make_pipeline("kill", "k2_it_kill", triggers=..., max_per_trigger=...)`
    declares a pipeline on topics `k2it.<name>.<exchange>.<random>` (2 partitions each) whose
    tables, in Iceberg namespace `namespace`, are purged and created anew; the keyword
    arguments go to `testdata.pipeline_yaml`."""

    def make(name: str, namespace: str, **yaml_args: Any) -> JobsPipeline:
        tmp = tmp_path_factory.mktemp(name)
        suffix = uuid.uuid4().hex[:8]
        topics = {e: f"k2it.{name}.{e.lower()}.{suffix}" for e in EXCHANGES}
        path = tmp / "pipeline.yaml"
        path.write_text(
            testdata.pipeline_yaml(
                bootstrap=kafka["bootstrap_servers"],
                registry=registry["url"],
                catalog=catalog["uri"],
                warehouse=catalog["warehouse"],
                checkpoints=str(tmp / "checkpoints"),
                namespace=namespace,
                topics=topics,
                **yaml_args,
            )
        )
        p = pipeline_mod.load(path)
        cat = load_catalog(catalog["uri"], catalog["warehouse"])
        for spec in ALL_TABLES:
            ident = f"{namespace}.{spec.name}"
            if cat.table_exists(ident):
                cat.purge_table(ident)
        testdata.create_tables(
            catalog["uri"],
            catalog["warehouse"],
            [replace(s, namespace=namespace) for s in ALL_TABLES],
        )
        testdata.ensure_topics(p.kafka_bootstrap, p.topics(), partitions=2)
        producer = testdata.Producer(p.kafka_bootstrap, p.schema_registry_url, topics=topics)
        return JobsPipeline(path, p, producer, tmp)

    return make
