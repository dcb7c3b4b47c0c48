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
    assert p.compaction == pipeline.CompactionSettings(
        enabled=True, schedule="*/10 * * * *", grace_minutes=15.0, interval_seconds=300.0
    )


# ------------------------------------------------------------------ spec.compaction


def _compaction(**fields: Any) -> pipeline.CompactionSettings:
    return pipeline.parse_documents(
        _mutated("MedallionPipeline", ["spec", "compaction"], fields)
    ).compaction


def test_sample_declares_the_default_compaction() -> None:
    assert pipeline.load(SAMPLE).compaction == pipeline.CompactionSettings()


def test_compaction_fields_are_read() -> None:
    c = _compaction(
        enabled=False, schedule="  7  *  * * 1-5 ", graceMinutes=7.5, intervalSeconds=60
    )
    assert c == pipeline.CompactionSettings(
        enabled=False, schedule="7 * * * 1-5", grace_minutes=7.5, interval_seconds=60.0
    )
    # each field on its own; the others keep their defaults
    assert _compaction(graceMinutes=0) == pipeline.CompactionSettings(grace_minutes=0.0)
    assert _compaction() == pipeline.CompactionSettings()
    assert _compaction(schedule="0 * * * *").schedule == "0 * * * *"


def test_k2_up_compacts_as_the_declaration_says(tmp_path: Path) -> None:
    from k2 import tables_cli, up
    from k2.cli import build_parser

    docs = _mutated("MedallionPipeline", ["spec", "compaction"],
                    {"graceMinutes": 2.5, "intervalSeconds": 30})  # fmt: skip
    p = pipeline.parse_documents(docs)
    argv = up.compact_args(p, tmp_path / "pipeline.resolved.yaml")
    assert argv[:4] == ["tables", "compact", "-f", str(tmp_path / "pipeline.resolved.yaml")]
    parser = build_parser("tables")  # the real `k2` command line
    args = parser.parse_args(argv)
    assert args.tables_command == "compact"
    assert (args.every, args.grace) == (30.0, 2.5)
    assert (args.catalog_uri, args.warehouse) == (p.catalog_uri, p.warehouse)
    defaults = parser.parse_args(up.compact_args(pipeline.load(SAMPLE), tmp_path / "p.yaml"))
    assert (defaults.every, defaults.grace) == (300.0, tables_cli.DEFAULT_GRACE_MINUTES)


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
        ("MedallionPipeline", ["spec", "compaction"], "on", r"spec\.compaction: expected dict"),
        ("MedallionPipeline", ["spec", "compaction", "enabled"], "yes",
         r"spec\.compaction\.enabled: expected bool"),
        ("MedallionPipeline", ["spec", "compaction", "schedule"], "every 10 minutes",
         r"spec\.compaction\.schedule: 'every 10 minutes' is not a five-field cron schedule"),
        ("MedallionPipeline", ["spec", "compaction", "schedule"], "*/10 * * *",
         "not a five-field cron schedule"),
        ("MedallionPipeline", ["spec", "compaction", "schedule"], "0 */10 * * * *",
         "not a five-field cron schedule"),
        ("MedallionPipeline", ["spec", "compaction", "graceMinutes"], -1,
         r"spec\.compaction\.graceMinutes: must be >= 0"),
        ("MedallionPipeline", ["spec", "compaction", "graceMinutes"], "15",
         r"spec\.compaction\.graceMinutes: expected a number"),
        ("MedallionPipeline", ["spec", "compaction", "intervalSeconds"], 0,
         r"spec\.compaction\.intervalSeconds: must be > 0"),
        ("MedallionPipeline", ["spec", "compaction", "intervalSeconds"], True,
         "expected a number"),
    ],
)  # fmt: skip
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
