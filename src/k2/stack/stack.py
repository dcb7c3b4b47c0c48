"""A set of local services under one directory, started and stopped together.

    stack = Stack(Path(".k2/stack"))
    endpoints = stack.up(["kafka", "registry"])   # {"kafka": {"bootstrap_servers": ...}, ...}
    stack.status()                                # name -> healthy, endpoints, pids
    stack.down()                                  # every process recorded under the dir

Layout: DIR/stack.json (name -> endpoints of the services started and healthy, what other code
reads), DIR/<name>/ (each service's run dir: pid files, logs, data), DIR/.lock.
`up` is idempotent: a service already running and healthy is reused, a dead one is cleaned up
and started again. Services start concurrently (each waits for its own health check).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from k2.paths import data_dir
from k2.stack import services as registry
from k2.stack.base import Service, pid_alive, recorded_pids


class StackError(RuntimeError):
    """Some service(s) failed to start; the message carries their log tails."""


def default_dir() -> Path:
    return data_dir() / "stack"


def _progress(msg: str) -> None:
    print(f"k2: {msg}", file=sys.stderr, flush=True)


class Stack:
    def __init__(
        self, directory: Path | str | None = None, services: Mapping[str, Service] | None = None
    ) -> None:
        self.dir = (Path(directory) if directory is not None else default_dir()).resolve()
        self._services: dict[str, Service] = dict(services or {})
        self._thread_lock = threading.Lock()

    # ---------------------------------------------------------------- state

    @property
    def state_file(self) -> Path:
        return self.dir / "stack.json"

    def run_dir(self, name: str) -> Path:
        return self.dir / name

    def service(self, name: str) -> Service:
        if name not in self._services:
            self._services[name] = registry.get(name)
        return self._services[name]

    def endpoints(self) -> dict[str, dict[str, Any]]:
        """What stack.json says (name -> endpoints); empty if nothing was started."""
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, endpoints: Mapping[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(endpoints, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down` at a time per directory (across processes and threads)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _known(self) -> list[str]:
        """Services with state here: in stack.json or with a run dir holding pid files."""
        names = set(self.endpoints())
        if self.dir.is_dir():
            names |= {p.name for p in self.dir.iterdir() if p.is_dir() and any(p.glob("*.pid"))}
        order = list(registry.SERVICES)
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))

    # ---------------------------------------------------------------- operations

    def prepare(self, names: Sequence[str]) -> None:
        """Fetch/build what the services run from (cached), one after the other."""
        for name in names:
            self.service(name).prepare()

    def up(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Start the services not already running and healthy; return name -> endpoints.

        On failure, the services this call started are stopped again (those that were already
        running are left alone) and StackError carries each failure with its log tail.
        """
        names = list(dict.fromkeys(names or registry.DEFAULT_SERVICES))
        for name in names:
            self.service(name)  # unknown names fail before anything starts
        with self._locked():
            state = self.endpoints()
            result: dict[str, dict[str, Any]] = {}
            missing: list[str] = []
            for name in names:
                svc, run_dir = self.service(name), self.run_dir(name)
                if name in state and svc.healthy(run_dir, state[name]):
                    _progress(f"{name} already running")
                    result[name] = state[name]
                    continue
                state.pop(name, None)
                svc.stop(run_dir)  # leftovers of a dead or half-started run
                missing.append(name)
            for name in missing:
                try:
                    self.service(name).prepare()
                except Exception as exc:
                    raise StackError(f"{name}: could not prepare: {exc}") from exc
            running = {**state, **result}
            try:
                started, failures = self._start_all(missing, running)
            except BaseException:  # e.g. Ctrl-C while waiting: leave nothing half-started
                for name in missing:
                    self.service(name).stop(self.run_dir(name))
                raise
            if failures:
                for name in started:
                    self.service(name).stop(self.run_dir(name))
                for name in failures:
                    self.service(name).stop(self.run_dir(name))
                self._write(state)
                details = "\n\n".join(f"{n} failed to start: {err}" for n, err in failures.items())
                stopped = f"\n(stopped again: {', '.join(started)})" if started else ""
                raise StackError(details + stopped)
            state.update(started)
            result.update(started)
            self._write(state)
            return {name: result[name] for name in names}

    def _start_all(
        self, names: Sequence[str], running: Mapping[str, Any]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        started: dict[str, dict[str, Any]] = {}
        failures: dict[str, str] = {}
        if not names:
            return started, failures

        def start(name: str) -> tuple[str, dict[str, Any] | None, str | None, float]:
            t0 = time.monotonic()
            try:
                endpoints = self.service(name).start(self.run_dir(name), dict(running))
                return name, dict(endpoints), None, time.monotonic() - t0
            except Exception as exc:  # noqa: BLE001 - reported, others are stopped
                return name, None, str(exc) or type(exc).__name__, time.monotonic() - t0

        _progress(f"starting {', '.join(names)}…")
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="k2-stack") as pool:
            for name, endpoints, error, seconds in pool.map(start, names):
                if endpoints is not None:
                    started[name] = endpoints
                    _progress(f"{name} healthy in {seconds:.1f}s")
                else:
                    failures[name] = error or "failed"
        return started, failures

    def status(self) -> dict[str, dict[str, Any]]:
        """name -> {"healthy", "endpoints", "pids" (name -> pid, alive or not)}."""
        state = self.endpoints()
        result: dict[str, dict[str, Any]] = {}
        for name in self._known():
            run_dir = self.run_dir(name)
            pids = recorded_pids(run_dir)
            endpoints = state.get(name)
            try:
                healthy = endpoints is not None and self.service(name).healthy(run_dir, endpoints)
            except KeyError:  # a service whose module went away
                healthy = False
            result[name] = {
                "healthy": healthy,
                "endpoints": endpoints,
                "pids": {p: {"pid": pid, "alive": pid_alive(pid)} for p, pid in pids.items()},
            }
        return result

    def down(self, names: Sequence[str] | None = None, *, purge: bool = False) -> list[str]:
        """Stop services (default: all with state here); with purge, delete their run dirs."""
        with self._locked():
            state = self.endpoints()
            targets = list(names) if names else self._known()
            for name in reversed(targets):
                try:
                    self.service(name).stop(self.run_dir(name))
                except KeyError:  # unknown service module: stop its processes anyway
                    Service.stop(_Anonymous(), self.run_dir(name))
                state.pop(name, None)
                if purge:
                    shutil.rmtree(self.run_dir(name), ignore_errors=True)
            if state or not purge:
                self._write(state)
            else:
                self.state_file.unlink(missing_ok=True)
            return targets


class _Anonymous(Service):
    name = "anonymous"

    def prepare(self) -> None:  # pragma: no cover - never prepared
        pass

    def start(self, run_dir: Path, env: Mapping[str, Any]) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError
