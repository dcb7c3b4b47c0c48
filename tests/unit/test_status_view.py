"""The `k2 up` status view: metrics parsing and rendering are pure."""

from __future__ import annotations

from k2.status_view import FeedStatus, LayerStatus, Status, metric, parse_prometheus, render

METRICS = """# HELP k2_ingest_trades_total trades acked
# TYPE k2_ingest_trades_total counter
k2_ingest_trades_total{exchange="BINANCE"} 1234.0
k2_ingest_parse_errors_total{exchange="BINANCE"} 2.0
k2_ingest_trades_total{exchange="KRAKEN"} 6.0
k2_ingest_dead_letters_total{exchange="BINANCE"} 3.0
process_cpu_seconds_total 9.5
garbage line
"""


def test_parse_prometheus_keeps_exchange_label_and_skips_junk() -> None:
    values = parse_prometheus(METRICS)
    assert values[("k2_ingest_trades_total", "BINANCE")] == 1234.0
    assert values[("process_cpu_seconds_total", "")] == 9.5
    assert metric(values, "trades_total") == 1240.0
    assert metric(values, "dead_letters_total") == 3.0
    assert metric(values, "cpu_seconds_total") == 0.0  # not a k2_ingest_ metric
    assert metric(values, "missing_trades_total") == 0.0  # exact names, no suffix matches


def test_render_shows_feeds_layers_gold_by_exchange_and_dead_processes() -> None:
    status = Status(
        elapsed_s=42,
        feeds=[FeedStatus("BINANCE", 100, 50, 0, 1, True), FeedStatus("KRAKEN", 0, 0, 0, 0, False)],
        layers=[LayerStatus("gold_crypto_trades", 90, 3, 1.0), LayerStatus("bronze_crypto_trades")],
        processes={"job-gold": True, "ingest-kraken": False},
        gold_by_exchange={"BINANCE": 60, "KRAKEN": 30},
    )
    text = render(status)
    assert "binance" in text and "DOWN" in text
    assert "gold_crypto_trades" in text and "1s ago" in text
    assert "gold, newest hour by exchange: binance 60   kraken 30" in text
    assert "stopped unexpectedly: ingest-kraken" in text
    assert status.rows("gold_crypto_trades") == 90
    assert status.as_dict()["gold_by_exchange"] == {"BINANCE": 60, "KRAKEN": 30}
