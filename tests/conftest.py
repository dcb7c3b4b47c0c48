"""Test-wide markers, opt-ins and the real local services as fixtures.

Markers: `live` (needs the internet: real exchanges), `kind` (needs Docker + kind), `e2e`,
`integration`, `k8s`. `live` and `kind` tests are skipped unless asked for with
`--run-live` / `--run-kind` or K2_LIVE=1 / K2_KIND=1.

Service fixtures (session-scoped; each starts only what it names, in one stack per session
under a temporary directory, all stopped at the end of the session):

    stack_dir   the stack's directory (set K2_TEST_STACK_DIR to reuse a stack started with
                `k2 stack up --dir DIR`: it is then left running)
    stack       the k2.stack.stack.Stack
    kafka       {"bootstrap_servers": "127.0.0.1:P"}
    registry    {"url": "http://127.0.0.1:P/apis/ccompat/v7", ...} (Confluent-compatible API)
    catalog     {"uri": "http://127.0.0.1:P", "warehouse": "file:///..."} (Iceberg REST)
    spark       a SparkSession (local[2]) with the connector jars and the catalog as `k2`;
                shared by the whole session: don't stop it
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from k2.stack.stack import Stack

MARKERS = {
    "live": "needs the internet (real exchanges); opt in with --run-live or K2_LIVE=1",
    "kind": "needs Docker and kind; opt in with --run-kind or K2_KIND=1",
    "e2e": "end to end: the whole pipeline on this machine",
    "integration": "starts real local services (Kafka, Apicurio, Iceberg REST catalog, Spark)",
    "k8s": "needs the local Kubernetes control plane (k2.stack.kube)",
}

OPT_INS = {
    # marker: (command-line flag, environment variable)
    "live": ("--run-live", "K2_LIVE"),
    "kind": ("--run-kind", "K2_KIND"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("k2")
    for marker, (flag, env) in OPT_INS.items():
        group.addoption(
            flag,
            action="store_true",
            default=False,
            help=f"run tests marked {marker!r} (same as {env}=1)",
        )


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def _opted_in(config: pytest.Config, marker: str) -> bool:
    flag, env = OPT_INS[marker]
    return bool(config.getoption(flag)) or os.environ.get(env, "") not in ("", "0", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker in OPT_INS:
        if _opted_in(config, marker):
            continue
        skip = pytest.mark.skip(reason=f"{MARKERS[marker]} (skipped by default)")
        for item in items:
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


# ---------------------------------------------------------------- the local stack

# fixture -> the services it needs
SERVICE_FIXTURES = {
    "kafka": ("kafka",),
    "registry": ("registry",),
    "catalog": ("catalog",),
    "spark": ("catalog",),
}
_NEEDED = pytest.StashKey[list[str]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note which services the selected tests need, so the first one starts them all at once
    (they start concurrently: the slowest sets the wait, not the sum)."""
    needed: dict[str, None] = {}
    for item in session.items:
        if item.get_closest_marker("skip"):
            continue
        for fixture in getattr(item, "fixturenames", ()):
            for name in SERVICE_FIXTURES.get(fixture, ()):
                needed[name] = None
    session.config.stash[_NEEDED] = list(needed)


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reuse = os.environ.get("K2_TEST_STACK_DIR")
    if reuse:
        return Path(reuse)
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def stack(stack_dir: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    from k2.stack.stack import Stack, StackError

    s = Stack(stack_dir)
    try:
        needed = request.config.stash.get(_NEEDED, [])
        if len(needed) > 1:
            # on failure, each fixture then starts (and reports) its own service
            with contextlib.suppress(StackError):
                s.up(needed)
        yield s
    finally:
        if not os.environ.get("K2_TEST_STACK_DIR"):
            s.down()


def _service(stack: Stack, name: str) -> dict[str, Any]:
    return stack.up([name])[name]


@pytest.fixture(scope="session")
def kafka(stack: Stack) -> dict[str, Any]:
    return _service(stack, "kafka")


@pytest.fixture(scope="session")
def registry(stack: Stack) -> dict[str, Any]:
    return _service(stack, "registry")


@pytest.fixture(scope="session")
def catalog(stack: Stack) -> dict[str, Any]:
    return _service(stack, "catalog")


@pytest.fixture(scope="session")
def spark(
    catalog: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SparkSession]:
    from k2.spark_session import spark_session

    session = spark_session(
        "k2-tests",
        catalog_uri=catalog["uri"],
        warehouse=catalog["warehouse"],
        extra_conf={"spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("spark-warehouse"))},
    )
    try:
        yield session
    finally:
        session.stop()
