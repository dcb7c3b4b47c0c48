"""Artifact sets and Java runtimes (no Maven run: resolution is faked or already cached)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k2.stack import jvm


def test_parse_java_major() -> None:
    assert jvm._parse_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert jvm._parse_major('openjdk version "25.0.3" 2026-04-21 LTS') == 25
    assert jvm._parse_major('java version "1.8.0_412"') == 8
    assert jvm._parse_major('openjdk version "21" 2023-09-19') == 21
    assert jvm._parse_major("nonsense") is None


def test_find_java_17() -> None:
    java = jvm.find_java(17)
    assert (jvm.java_major(java) or 0) >= 17


def test_find_java_reports_what_it_tried() -> None:
    with pytest.raises(jvm.JvmError, match="no Java >= 99"):
        jvm.find_java(99)


@pytest.fixture
def fake_poms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "poms"
    (root / "kafka").mkdir(parents=True)
    (root / "kafka" / "pom.xml").write_text("<project/>")
    monkeypatch.setattr(jvm, "POM_ROOT", root)
    monkeypatch.setenv("K2_CACHE", str(tmp_path / "cache"))
    return root


def test_hash_follows_the_pom(fake_poms: Path) -> None:
    before = jvm.source_hash("kafka")
    assert jvm.resolved_dir("kafka").name == f"kafka-{before}"
    (fake_poms / "kafka" / "target").mkdir()
    (fake_poms / "kafka" / "target" / "junk").write_text("x")
    assert jvm.source_hash("kafka") == before  # Maven output does not count
    (fake_poms / "kafka" / "pom.xml").write_text("<project><!-- bumped --></project>")
    assert jvm.source_hash("kafka") != before


def test_resolve_is_a_stat_once_stamped(fake_poms: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = jvm.resolved_dir("kafka")
    (target / "lib").mkdir(parents=True)
    (target / "lib" / "a-1.jar").write_text("")
    (target / jvm.STAMP).write_text(json.dumps({"jars": ["a-1.jar"]}))
    monkeypatch.setattr("shutil.which", lambda _: pytest.fail("Maven must not run"))
    assert jvm.resolve("kafka") == target
    assert jvm.jars("kafka") == [target / "lib" / "a-1.jar"]
    assert jvm.classpath("kafka") == str(target / "lib" / "*")


def test_every_artifact_set_has_a_pom() -> None:
    for name in jvm.ARTIFACT_SETS:
        assert (jvm.POM_ROOT / name / "pom.xml").is_file(), name


def _artifact(jar: str) -> str:
    """commons-pool2-2.12.1.jar -> commons-pool2, zstd-jni-1.5.7-6.jar -> zstd-jni,
    spark-sql-kafka-0-10_2.13-4.1.1.jar -> spark-sql-kafka-0-10_2.13 (name without version)."""
    parts = jar.removesuffix(".jar").split("-")
    while len(parts) > 1 and parts[-1][:1].isdigit() and "_" not in parts[-1]:
        parts.pop()
    return "-".join(parts)


def test_artifact_names() -> None:
    assert _artifact("commons-pool2-2.12.1.jar") == "commons-pool2"
    assert _artifact("zstd-jni-1.5.7-6.jar") == "zstd-jni"
    assert _artifact("spark-sql-kafka-0-10_2.13-4.1.1.jar") == "spark-sql-kafka-0-10_2.13"
    assert (
        _artifact("iceberg-spark-runtime-4.1_2.13-1.12.0.jar") == "iceberg-spark-runtime-4.1_2.13"
    )


def test_spark_connectors_do_not_duplicate_pyspark_jars() -> None:
    if not jvm.is_resolved("spark"):
        pytest.skip("Spark connector jars not resolved yet (k2 stack prepare / first Spark run)")
    import pyspark

    ours = {_artifact(p.name) for p in jvm.jars("spark")}
    theirs = {_artifact(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    assert ours & theirs == set()
    assert {
        "iceberg-spark-runtime-4.1_2.13",
        "spark-sql-kafka-0-10_2.13",
        "spark-avro_2.13",
    } <= ours
