"""Pure status bookkeeping: Kubernetes-style conditions and status patches.

Every K2 resource carries three conditions, as the API conventions ask:

    Ready        the thing works (a table exists and matches, an ingestor is available)
    Progressing  the operator or a controller is still moving towards the spec
    Degraded     something is wrong and needs a person or a retry (reason says what)

plus `observedGeneration`. A condition's `lastTransitionTime` changes only when its
status changes; reasons are CamelCase.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_ORDER = (READY, PROGRESSING, DEGRADED)

REASON_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
MAX_MESSAGE = 4096


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None is "Unknown"
    reason: str
    message: str = ""

    def __post_init__(self) -> None:
        if not REASON_RE.match(self.reason):
            raise ValueError(f"condition reason must be CamelCase, not {self.reason!r}")

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


def now() -> str:
    """RFC 3339 UTC with second precision, as metav1.Time serialises."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready(reason: str, message: str = "") -> list[Condition]:
    return [
        Condition(READY, True, reason, message),
        Condition(PROGRESSING, False, "Reconciled", "the spec is applied"),
        Condition(DEGRADED, False, "AsExpected", ""),
    ]


def progressing(
    reason: str, message: str = "", *, ready_reason: str | None = None
) -> list[Condition]:
    return [
        Condition(READY, False, ready_reason or reason, message),
        Condition(PROGRESSING, True, reason, message),
        Condition(DEGRADED, False, "AsExpected", ""),
    ]


def degraded(reason: str, message: str = "", *, retrying: bool = False) -> list[Condition]:
    """Something failed; `retrying` keeps Progressing True (the operator tries again)."""
    return [
        Condition(READY, False, reason, message),
        Condition(
            PROGRESSING,
            retrying,
            "Retrying" if retrying else reason,
            message if retrying else "",
        ),
        Condition(DEGRADED, True, reason, message),
    ]


def paused(message: str = "") -> list[Condition]:
    """Only Progressing changes: the last known Ready/Degraded stay as they were."""
    return [
        Condition(
            PROGRESSING,
            False,
            "Paused",
            message or "reconciliation paused by annotation",
        )
    ]


def merge_conditions(
    existing: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    generation: int | None,
    timestamp: str | None = None,
) -> list[dict[str, Any]]:
    """Apply `updates` to the `existing` conditions (plain dicts), in a stable order.

    lastTransitionTime is kept unless the condition's status changes; conditions of
    other types are kept as they are.
    """
    when = timestamp or now()
    by_type: dict[str, dict[str, Any]] = {
        str(c["type"]): dict(c) for c in (existing or []) if "type" in c
    }
    for cond in updates:
        old = by_type.get(cond.type)
        changed = old is None or old.get("status") != cond.status_text
        new: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond.message[:MAX_MESSAGE],
            "lastTransitionTime": when
            if changed or not old
            else old.get("lastTransitionTime", when),
        }
        if generation is not None:
            new["observedGeneration"] = int(generation)
        by_type[cond.type] = new
    ordered = [by_type.pop(t) for t in CONDITION_ORDER if t in by_type]
    return ordered + [by_type[t] for t in sorted(by_type)]


def condition(status: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def is_true(status: Mapping[str, Any] | None, type_: str) -> bool:
    c = condition(status, type_)
    return bool(c and c.get("status") == "True")


def status_update(
    current: Mapping[str, Any] | None,
    conditions: Iterable[Condition],
    *,
    generation: int | None,
    fields: Mapping[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any] | None:
    """The status merge patch that brings `current` to the new state, or None if nothing changes.

    `fields` are other top-level status fields (None deletes one). observedGeneration
    follows `generation` (None leaves it alone, e.g. while paused).
    """
    current = dict(current or {})
    new_conditions = merge_conditions(
        current.get("conditions"),
        conditions,
        generation=generation,
        timestamp=timestamp,
    )
    patch: dict[str, Any] = {}
    if new_conditions != list(current.get("conditions") or []):
        patch["conditions"] = new_conditions
    if generation is not None and current.get("observedGeneration") != generation:
        patch["observedGeneration"] = int(generation)
    for key, value in (fields or {}).items():
        if current.get(key) != value:
            patch[key] = value
    return patch or None
