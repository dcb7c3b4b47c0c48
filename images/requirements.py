"""Pinned runtime requirements of one K2 image, taken from pyproject.toml (the one place
versions live), minus what that image does not run.

    python images/requirements.py k2            # operator + ingestor image
    python images/requirements.py spark         # Spark jobs image (pyspark comes from the Spark image)
    python images/requirements.py --pruned k2   # subpackages deleted after installation

The Dockerfiles install these (`pip install -r`), then the k2 wheel with `--no-deps`.
tests/unit/test_dockerfiles.py imports every module an image runs with the left-out
distributions blocked, so a new top-level import of one of them fails a test, not a pod.
Standard library only (runs on a bare Python 3.11 in the build stage).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# Distributions (names as in pyproject.toml) an image leaves out, and why.
EXCLUDE: dict[str, dict[str, str]] = {
    # `k2 operator`, `k2 ingest` and `k2 tables compact` (the operator's gold compaction
    # CronJobs: pyiceberg reads and writes gold's files with pyarrow): no Spark, no local
    # analytics, no benchmarks.
    "k2": {
        "pyspark": "Spark runs in the k2-spark image",
        "duckdb": "only for k2 query",
        "matplotlib": "only for k2 bench plots",
        "psutil": "only for k2 bench",
    },
    # The Spark jobs (k2_jobs) on the apache/spark image.
    "spark": {
        "pyspark": "the apache/spark image's own pyspark (/opt/spark/python), matching its jars",
        "pyarrow": "no pandas/Arrow UDFs in the jobs",
        "pyiceberg": "the jobs reach Iceberg through Spark's Iceberg runtime, not pyiceberg",
        "duckdb": "only for k2 query",
        "matplotlib": "only for k2 bench plots",
        "psutil": "only for k2 bench",
        "kopf": "operator only",
        "kubernetes": "operator only",
        "websockets": "ingestor only",
        "confluent-kafka": "ingestor only (the jobs use Spark's Kafka source)",
        "prometheus-client": "ingestor/operator only",
    },
}
# Extras dropped from a kept requirement (their packages are left out as well).
STRIP_EXTRAS: dict[str, set[str]] = {
    "k2": {"pyiceberg"},  # [pyarrow,sql-sqlite]: a REST catalog; pyarrow is a pin of its own
    "spark": set(),
}
# Subpackages of kept distributions deleted from an image (never imported by K2; the import test
# blocks them): the kubernetes client's asyncio twin is 68 MB of the 320 MB venv.
PRUNE: dict[str, dict[str, str]] = {
    "k2": {"kubernetes.aio": "K2 uses the synchronous client (kopf has its own asyncio one)"},
    "spark": {},
}
IMAGES = tuple(EXCLUDE)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependencies() -> list[str]:
    with PYPROJECT.open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def split(requirement: str) -> tuple[str, str, str]:
    """'pyiceberg[pyarrow]==0.12.0' -> ('pyiceberg', '[pyarrow]', '==0.12.0')."""
    m = _NAME.match(requirement)
    if not m:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    return m.group(1), m.group(2) or "", m.group(3).strip()


def requirements(image: str) -> list[str]:
    if image not in EXCLUDE:
        raise KeyError(f"unknown image {image!r}; known: {', '.join(IMAGES)}")
    excluded = {canonical(n) for n in EXCLUDE[image]}
    strip = {canonical(n) for n in STRIP_EXTRAS[image]}
    out = []
    for req in dependencies():
        name, extras, rest = split(req)
        if canonical(name) in excluded:
            continue
        if not rest.startswith("=="):
            raise ValueError(f"pyproject.toml: {req!r} is not pinned with ==")
        out.append(f"{name}{'' if canonical(name) in strip else extras}{rest}")
    return out


def excluded(image: str) -> list[str]:
    """Distributions the image leaves out (pyproject names)."""
    return list(EXCLUDE[image])


def pruned(image: str) -> list[str]:
    """Modules deleted from the image's venv after installation (dotted names)."""
    return list(PRUNE[image])


def main(argv: list[str]) -> int:
    prune = bool(argv) and argv[0] == "--pruned"
    args = argv[1:] if prune else argv
    if len(args) != 1 or args[0] not in EXCLUDE:
        print(f"usage: requirements.py [--pruned] {{{'|'.join(IMAGES)}}}", file=sys.stderr)
        return 2
    print("\n".join(pruned(args[0]) if prune else requirements(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
