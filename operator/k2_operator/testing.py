"""Helpers for tests that run the operator against a real API server (tests/k8s).

    with running_operator(kubeconfig, namespaces=[ns]) as runner:   # kopf.testing.KopfRunner
        eventually(lambda: get(...), what="the Deployment")

The operator runs in a thread of the test process (kopf's KopfRunner), configured by the
same K2_OPERATOR_* variables `k2 operator` sets; they are restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_ENV = {
    "K2_OPERATOR_RESYNC_SECONDS": "5",
    "K2_OPERATOR_KAFKA_TIMEOUT": "2",
    "K2_OPERATOR_WORKERS": "4",
}


def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.5,
    what: str = "condition",
    describe: Callable[[], object] | None = None,
) -> T:
    """Poll `check` until it returns something truthy (returned); AssertionError on timeout.
    Exceptions from `check` count as 'not yet' (the last one is reported), and so does
    `describe()`, which tells what the state was."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = None
        except Exception as exc:  # noqa: BLE001 - reported below if it never passes
            last = exc
        if time.monotonic() >= deadline:
            detail = f": last error {type(last).__name__}: {last}" if last else ""
            if describe is not None:
                try:
                    detail += f"; state: {describe()}"
                except Exception as exc:  # noqa: BLE001 - best effort
                    detail += f"; state unknown ({exc})"
            raise AssertionError(f"{what} not reached within {timeout:.0f}s{detail}")
        time.sleep(interval)


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


@contextlib.contextmanager
def running_operator(
    kubeconfig: str | Path,
    *,
    namespaces: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    timeout: float = 60.0,
) -> Iterator[Any]:
    """Run the operator (kopf's KopfRunner, in a thread) until the block ends.

    `namespaces` limits what it watches (default: the whole cluster). The runner's output
    (kopf's log) is in `runner.output` once the block has ended.
    """
    from kopf.testing import KopfRunner

    scope = [arg for ns in namespaces for arg in ("--namespace", ns)] or ["--all-namespaces"]
    values = {**DEFAULT_ENV, "KUBECONFIG": str(kubeconfig), **(env or {})}
    with environment(values):
        import k2_operator.handlers  # noqa: F401 - registers the handlers once per process

        args = ["run", "--standalone", *scope, "-m", "k2_operator.handlers"]
        with KopfRunner(args, timeout=timeout) as runner:
            yield runner


def load_docs(path: str | Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None
