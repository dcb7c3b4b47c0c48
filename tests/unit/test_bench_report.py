"""Benchmark reports: figures picked from the JSON, a markdown table and a real PNG."""

from __future__ import annotations

from pathlib import Path

from k2.bench import report

RESULTS = {
    "bronze": {
        "rows_per_s": 25000.0,
        "raw_consume": {"rows_per_s": 90000.0},
        "ratio_to_raw": 0.28,
        "machine": {"cores": 2, "memory_gb": 23.5, "cpu": "x"},
        "benchmark": "bronze",
    },
    "latency": {
        "silver": {"p50_s": 6.1, "p99_s": 11.0},
        "gold": {"p50_s": 15.0, "p99_s": 24.0},
        "ok": True,
    },
}


def test_flatten_keeps_numeric_leaves_only() -> None:
    flat = dict(report.flatten(RESULTS["latency"]))
    assert flat == {
        "silver.p50_s": 6.1,
        "silver.p99_s": 11.0,
        "gold.p50_s": 15.0,
        "gold.p99_s": 24.0,
    }


def test_markdown_lists_throughput_latency_ratio_and_machine() -> None:
    md = report.markdown(RESULTS)
    assert "| bronze | rows_per_s | 25,000.00 |" in md
    assert "| bronze | raw_consume.rows_per_s | 90,000.00 |" in md
    assert "| bronze | ratio_to_raw | 0.28 |" in md
    assert "| latency | gold.p99_s | 24.00 |" in md
    assert "Machine: 2 cores, 23.5 GB" in md


def test_chart_writes_a_png(tmp_path: Path) -> None:
    out = report.chart(RESULTS, tmp_path / "summary.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.chart({"x": {"n": 1}}, tmp_path / "none.png") is None


def test_latency_selection_skips_counts_and_converts_ms() -> None:
    assert report.is_latency("layers.gold.latency_s.p99")
    assert report.is_latency("queries.latest.p99_ms")
    assert not report.is_latency("queries.latest.rows_in_files_p50")
    assert not report.is_latency("queries.latest.cpu_ms_p99")
    assert report.seconds("queries.latest.p99_ms", 250.0) == 0.25
    assert report.seconds("layers.gold.latency_s.p99", 20.0) == 20.0


def test_targets_are_listed_with_their_verdicts_and_a_failed_run_is_not_met() -> None:
    results = {
        "query": {"meets_target": True, "meets_target_with_wide": False, "failed_batches": 0},
        "recovery": {"error": "RuntimeError: no two commits in 300s"},
    }
    assert list(report.targets(results)) == [
        ("query", "meets_target", True),
        ("query", "meets_target_with_wide", False),
        ("recovery", "ran (RuntimeError: no two commits in 300s)", False),
    ]
    md = report.markdown(results)
    assert "| query | meets_target | yes |" in md
    assert "| query | meets_target_with_wide | **no** |" in md
    assert "| query | failed_batches | 0.00 |" in md


def test_sustained_rates_and_recovery_times_are_reported() -> None:
    results = {
        "bronze": {"bronze": {"rows_per_s_sustained": 144509, "ratio_to_raw_consume": 0.34}},
        "recovery": {"layers": {"gold": {"first_commit_s": 19.58, "failed_batches": 0}}, "target_s": 60},
    }
    md = report.markdown(results)
    assert "| bronze | bronze.rows_per_s_sustained | 144,509.00 |" in md
    assert "| recovery | layers.gold.first_commit_s | 19.58 |" in md
    assert "target_s" not in md
