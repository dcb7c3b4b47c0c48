"""The pipeline declaration: defaults filled, every invalid field named in the error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from k2 import pipeline
from k2.pipeline import DeclarationError

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml"


def sample_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]


def test_sample_declaration_loads_with_both_feeds() -> None:
    p = pipeline.load(SAMPLE)
    assert p.name == "crypto"
    assert [f.exchange for f in p.feeds] == ["BINANCE", "KRAKEN"]
    assert p.feed("kraken").symbols == ("BTC/USD", "ETH/USD")
    assert p.topics() == ["market.crypto.trades.binance", "market.crypto.trades.kraken"]
    assert p.spark.executor_instances == 2
    assert p.spark.executor.cores == 2 and p.spark.executor.memory == "3g"
    assert p.jobs["silver"].trigger == "5 seconds"
    assert p.checkpoint("gold") == "s3a://k2-checkpoints/crypto/gold"


def test_defaults_fill_a_minimal_declaration() -> None:
    docs = [
        {"apiVersion": "k2.io/v1alpha1", "kind": "ExchangeFeed", "metadata": {"name": "b"},
         "spec": {"exchange": "binance", "symbols": ["BTC/USDT"]}},
        {"apiVersion": "k2.io/v1alpha1", "kind": "MedallionPipeline", "metadata": {"name": "p"},
         "spec": {"feeds": ["b"]}},
    ]
    p = pipeline.parse_documents(docs)
    assert p.feeds[0].topic == "market.crypto.trades.binance"
    assert p.namespace == "market_data"
    assert p.fail_on_data_loss is True
    assert {k: v.trigger for k, v in p.jobs.items()} == pipeline.DEFAULT_TRIGGERS
    assert p.with_endpoints(kafka_bootstrap="127.0.0.1:1").kafka_bootstrap == "127.0.0.1:1"


def _mutated(kind: str, path: list[str], value: Any) -> list[dict[str, Any]]:
    docs = copy.deepcopy(sample_docs())
    doc = next(d for d in docs if d["kind"] == kind)
    target = doc
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return docs


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("ExchangeFeed", ["spec", "exchange"], "coinbase", "not a known exchange"),
        ("ExchangeFeed", ["spec", "symbols"], ["BTCUSDT"], "canonical BASE/QUOTE"),
        ("ExchangeFeed", ["spec", "symbols"], [], "at least one symbol"),
        ("ExchangeFeed", ["spec", "symbols"], ["BTC/USD", "BTC/USD"], "duplicates"),
        ("MedallionPipeline", ["spec", "feeds"], ["binance", "bitstamp"], "no ExchangeFeed named bitstamp"),
        ("MedallionPipeline", ["spec", "jobs", "silver", "trigger"], "soon", "not like '5 seconds'"),
        ("MedallionPipeline", ["spec", "jobs", "platinum"], {}, "unknown job"),
        ("MedallionPipeline", ["spec", "spark", "executor", "memory"], "3 gigs", "not like '512m'"),
        ("MedallionPipeline", ["spec", "spark", "executor", "cores"], 0, "must be >= 1"),
        ("MedallionPipeline", ["spec", "onKafkaDataLoss"], "ignore", "'fail' or 'skip'"),
        ("MedallionPipeline", ["spec", "kafka"], "kafka:9092", "expected dict"),
    ],
)
def test_invalid_fields_are_named(kind: str, path: list[str], value: Any, message: str) -> None:
    with pytest.raises(DeclarationError, match=message):
        pipeline.parse_documents(_mutated(kind, path, value))


def test_wrong_api_version_and_pipeline_count() -> None:
    docs = sample_docs()
    docs[0]["apiVersion"] = "k2.io/v9"
    with pytest.raises(DeclarationError, match=r"apiVersion must be k2\.io/v1alpha1"):
        pipeline.parse_documents(docs)
    with pytest.raises(DeclarationError, match=r"exactly one MedallionPipeline, found 0"):
        pipeline.parse_documents([d for d in sample_docs() if d["kind"] != "MedallionPipeline"])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError, match="no such file"):
        pipeline.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    with pytest.raises(DeclarationError, match="not valid YAML"):
        pipeline.load(bad)
